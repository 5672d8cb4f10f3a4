// Every update rule (csrc/optim/optimizers.def), and an index for each to find its kernels in a
// KernelTable. The rule headers are included through optim_headers.h, which CMake writes from
// the header names in optimizers.def (cmake/GdfastRules.cmake): a rule is added by one line.
#pragma once

#include "optim_headers.h"

namespace gdfast::optim {

enum class OptimizerId : int {
#define GDFAST_OPTIMIZER(Rule, header) Rule,
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER
  kCount
};
inline constexpr int kNumOptimizers = static_cast<int>(OptimizerId::kCount);

template <class Rule>
struct RuleId;
#define GDFAST_OPTIMIZER(Rule, header)                      \
  template <>                                               \
  struct RuleId<Rule> {                                     \
    static constexpr OptimizerId value = OptimizerId::Rule; \
  };
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER

}  // namespace gdfast::optim
