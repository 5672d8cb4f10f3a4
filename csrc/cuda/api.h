// The CUDA kernels' host interface. No CUDA headers here: the bindings include this whether
// or not the build has CUDA (GDFAST_HAVE_CUDA says which).
#pragma once

#include <cstdint>
#include <limits>

#include "core/dtype.h"
#include "core/step_args.h"
#include "optim/registry.h"

namespace gdfast::cuda {

// Per-call scalars that may live in device memory (1-element float32 tensors), so that a step
// needs no host synchronisation and can be captured in a CUDA graph. Null: use the host value.
struct DeviceScalars {
  const float* grad_scale = nullptr;  // gradients are divided by *grad_scale
  const float* found_inf = nullptr;   // nonzero: the whole step is skipped
  const float* lr = nullptr;
  const float* step = nullptr;  // 1-based step count after this update
  // The call's bound of clipping by value (StepArgs::grad_bound, a host value; +inf: none),
  // which the kernels multiply by a device grad_scale (see multi_tensor.cuh's grad_bound).
  double grad_bound = std::numeric_limits<double>::infinity();
};

bool is_available();  // a driver and at least one device; false (never an error) otherwise
int device_count();   // 0 without a driver

// A block's chunk of a tensor, in 16-byte vectors per thread, of the float32/float64 loop
// (`stored` false: 2) and of the narrow-storage loop (true: 16). Measured on an H200
// (tools/gpu_kernel_time.py, kernel time of AdamW): the narrow loop's set-up per block is worth
// amortising (1e8 bfloat16: 488 us at 4, 420 at 16, 418 at 32), the float32 loop's is not
// (1e8 float32: 667 us at 2, 679 at 4, 701 at 16; the GPT-2-small list 831, 845, 868).
int chunk_unroll(bool stored);
// 1 to 64 (std::invalid_argument otherwise); returns the value it replaces.
int set_chunk_unroll(bool stored, int unroll);

// out[t] = the sum of squares of tensor t's first array (args.arrays[t * args.num_arrays],
// stored as `type`), in double, bitwise what cpu::sum_squares gives. Runs on `stream` and
// synchronises with it: the sums come back to the host.
void sum_squares(const StepArgs& args, Dtype type, double* out, int device, std::uintptr_t stream);

// One step over the tensor list on `device`, launched on `stream` (a cudaStream_t; the DLPack
// values 1 and 2 are the legacy and per-thread default streams, as in CUDA itself). Launches
// one kernel per ~600 tensors; never synchronises, except for a two-pass rule (LAMB: its
// tensors' sums) and a monitored step (args.monitor, a host array). Throws std::runtime_error
// on CUDA errors.
#define GDFAST_OPTIMIZER(Rule, header)                                                 \
  void step_##Rule(const optim::Rule::Hyper& hyper, Dtype dtype, const StepArgs& args, \
                   const DeviceScalars& scalars, int device, std::uintptr_t stream);
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER

// Routes a rule to its step_<Rule> above.
template <class Rule>
void run_step(const typename Rule::Hyper& hyper, Dtype dtype, const StepArgs& args,
              const DeviceScalars& scalars, int device, std::uintptr_t stream);
#define GDFAST_OPTIMIZER(Rule, header)                                                  \
  template <>                                                                           \
  inline void run_step<optim::Rule>(const optim::Rule::Hyper& hyper, Dtype dtype,       \
                                    const StepArgs& args, const DeviceScalars& scalars, \
                                    int device, std::uintptr_t stream) {                \
    step_##Rule(hyper, dtype, args, scalars, device, stream);                           \
  }
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER

}  // namespace gdfast::cuda
