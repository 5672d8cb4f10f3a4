// Every update rule, and an index for each to find its kernels in a KernelTable.
#pragma once

#include "optim/adam.h"
#include "optim/lion.h"
#include "optim/sgd.h"
#include "optim/stream.h"

namespace gdfast::optim {

enum class OptimizerId : int {
#define GDFAST_OPTIMIZER(name, Rule) name,
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER
  kCount
};
inline constexpr int kNumOptimizers = static_cast<int>(OptimizerId::kCount);

template <class Rule>
struct RuleId;
#define GDFAST_OPTIMIZER(name, Rule)                        \
  template <>                                               \
  struct RuleId<Rule> {                                     \
    static constexpr OptimizerId value = OptimizerId::name; \
  };
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER

}  // namespace gdfast::optim
