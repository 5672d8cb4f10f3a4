// Instantiates the monitored CUDA loop (cuda/monitored.cuh) for every elementwise rule, element
// type and option set: the entries cuda/monitored_steps.h declares.
#include <stdexcept>
#include <string>
#include <utility>

#include "cuda/monitored.cuh"
#include "cuda/monitored_steps.h"
#include "optim/rule_traits.h"

namespace gdfast::cuda {
namespace {

template <class Rule, class T, unsigned... kFlags>
auto pick(unsigned flags, std::integer_sequence<unsigned, kFlags...>) {
  using Fn =
      void (*)(const typename Rule::Hyper&, const StepArgs&, const DeviceScalars&, cudaStream_t);
  constexpr Fn fns[] = {&launch_monitored<Rule, kFlags, T>...};
  return fns[flags];
}

template <class Rule>
void step(const typename Rule::Hyper& hyper, Dtype dtype, const StepArgs& args,
          const DeviceScalars& scalars, cudaStream_t stream) {
  if constexpr (optim::kTwoPass<Rule>) {  // (two_pass.cuh monitors its own passes)
    (void)hyper, (void)dtype, (void)args, (void)scalars, (void)stream;
    throw std::invalid_argument(std::string(Rule::kName) + ": monitored in its two passes");
  } else {
    const auto all_flags = std::make_integer_sequence<unsigned, 1u << Rule::kNumFlags>{};
    if (dtype == Dtype::kFloat32) {
      pick<Rule, float>(Rule::flags(hyper), all_flags)(hyper, args, scalars, stream);
    } else {
      pick<Rule, double>(Rule::flags(hyper), all_flags)(hyper, args, scalars, stream);
    }
  }
}

}  // namespace

#define GDFAST_OPTIMIZER(Rule, header)                                                           \
  void monitored_step_##Rule(const optim::Rule::Hyper& hyper, Dtype dtype, const StepArgs& args, \
                             const DeviceScalars& scalars, cudaStream_t stream) {                \
    step<optim::Rule>(hyper, dtype, args, scalars, stream);                                      \
  }
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER

}  // namespace gdfast::cuda
