// The monitored steps (cuda/monitored.cuh), compiled in their own translation unit beside
// kernels.cu (the two build in parallel), one entry per rule; kernels.cu routes to them.
#pragma once

#include <cuda_runtime.h>

#include "core/dtype.h"
#include "core/step_args.h"
#include "cuda/api.h"
#include "optim/registry.h"

namespace gdfast::cuda {

#define GDFAST_OPTIMIZER(Rule, header)                                                           \
  void monitored_step_##Rule(const optim::Rule::Hyper& hyper, Dtype dtype, const StepArgs& args, \
                             const DeviceScalars& scalars, cudaStream_t stream);
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER

template <class Rule>
void monitored_step(const typename Rule::Hyper& hyper, Dtype dtype, const StepArgs& args,
                    const DeviceScalars& scalars, cudaStream_t stream);
#define GDFAST_OPTIMIZER(Rule, header)                                                        \
  template <>                                                                                 \
  inline void monitored_step<optim::Rule>(const optim::Rule::Hyper& hyper, Dtype dtype,       \
                                          const StepArgs& args, const DeviceScalars& scalars, \
                                          cudaStream_t stream) {                              \
    monitored_step_##Rule(hyper, dtype, args, scalars, stream);                               \
  }
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER

}  // namespace gdfast::cuda
