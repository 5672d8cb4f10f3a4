// Instantiates the CUDA loop for every rule, element type and option set, and the host entry
// points declared in cuda/api.h.
#include <atomic>
#include <stdexcept>
#include <string>
#include <utility>

#include "cuda/monitored_steps.h"
#include "cuda/multi_tensor.cuh"
#include "cuda/quantized.cuh"
#include "cuda/stored.cuh"
#include "cuda/two_pass.cuh"
#include "optim/rule_traits.h"

namespace gdfast::cuda {
namespace {

std::atomic<int> plain_unroll{2};
std::atomic<int> stored_unroll{16};

template <class Rule, class T>
using LaunchFn = void (*)(const typename Rule::Hyper&, const StepArgs&, const DeviceScalars&,
                          cudaStream_t);

template <class Rule, class T, unsigned... kFlags>
LaunchFn<Rule, T> pick(unsigned flags, std::integer_sequence<unsigned, kFlags...>) {
  constexpr LaunchFn<Rule, T> fns[] = {&launch<Rule, kFlags, T>...};
  return fns[flags];
}

template <class Rule, unsigned... kFlags>
LaunchFn<Rule, float> pick_stored(unsigned flags, std::integer_sequence<unsigned, kFlags...>) {
  constexpr LaunchFn<Rule, float> fns[] = {&launch_stored<Rule, kFlags>...};
  return fns[flags];
}

template <class Rule, unsigned... kFlags>
LaunchFn<Rule, float> pick_quantized(unsigned flags, std::integer_sequence<unsigned, kFlags...>) {
  constexpr LaunchFn<Rule, float> fns[] = {&launch_quantized<Rule, kFlags>...};
  return fns[flags];
}

template <class Rule, class T, unsigned... kFlags>
auto pick_two_pass(unsigned flags, std::integer_sequence<unsigned, kFlags...>) {
  using Fn = void (*)(const typename Rule::Hyper&, const StepArgs&, cudaStream_t);
  constexpr Fn fns[] = {&launch_two_pass<Rule, kFlags, T>...};
  return fns[flags];
}

template <class Rule, unsigned... kFlags>
auto pick_two_pass_narrow(unsigned flags, std::integer_sequence<unsigned, kFlags...>) {
  using Fn = void (*)(const typename Rule::Hyper&, const StepArgs&, cudaStream_t);
  constexpr Fn fns[] = {&launch_two_pass_narrow<Rule, kFlags>...};
  return fns[flags];
}

template <class Rule>
void step(const typename Rule::Hyper& hyper, Dtype dtype, const StepArgs& args,
          const DeviceScalars& device_scalars, int device, std::uintptr_t stream) {
  if (args.offsets[args.num_tensors] == 0) return;
  DeviceScalars scalars = device_scalars;
  scalars.grad_bound = args.grad_bound;
  const DeviceGuard guard(device);
  const auto all_flags = std::make_integer_sequence<unsigned, 1u << Rule::kNumFlags>{};
  const unsigned flags = Rule::flags(hyper);
  const auto s = reinterpret_cast<cudaStream_t>(stream);
  if constexpr (optim::kTwoPass<Rule>) {
    if (scalars.grad_scale != nullptr || scalars.found_inf != nullptr || scalars.lr != nullptr ||
        scalars.step != nullptr) {
      // (the bindings refuse these calls first, naming the argument)
      throw std::invalid_argument(std::string(Rule::kName) + " on CUDA: host scalars only");
    }
    if (args.storage != nullptr) {  // narrow arrays, a master copy, 8-bit states: float32 math
      pick_two_pass_narrow<Rule>(flags, all_flags)(hyper, args, s);
    } else if (dtype == Dtype::kFloat32) {
      pick_two_pass<Rule, float>(flags, all_flags)(hyper, args, s);
    } else {
      pick_two_pass<Rule, double>(flags, all_flags)(hyper, args, s);
    }
  } else if (args.monitor != nullptr) {
    if (args.storage != nullptr) {  // (the bindings refuse these calls first)
      throw std::invalid_argument("monitor on CUDA: float32/float64 arrays only");
    }
    monitored_step<Rule>(hyper, dtype, args, scalars, s);
  } else if (args.storage != nullptr && args.storage->any_quantized) {  // 8-bit states
    pick_quantized<Rule>(flags, all_flags)(hyper, args, scalars, s);
  } else if (args.storage != nullptr) {  // narrow arrays or a master copy: float32 math
    pick_stored<Rule>(flags, all_flags)(hyper, args, scalars, s);
  } else if (dtype == Dtype::kFloat32) {
    pick<Rule, float>(flags, all_flags)(hyper, args, scalars, s);
  } else {
    pick<Rule, double>(flags, all_flags)(hyper, args, scalars, s);
  }
}

}  // namespace

bool is_available() { return device_count() > 0; }

int device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();  // clear the sticky "no driver"/"no device" error
    return 0;
  }
  return n;
}

int chunk_unroll(bool stored) {
  return (stored ? stored_unroll : plain_unroll).load(std::memory_order_relaxed);
}

int set_chunk_unroll(bool stored, int value) {
  if (value < 1 || value > 64) {
    throw std::invalid_argument("unroll: expected 1 to 64, got " + std::to_string(value));
  }
  return (stored ? stored_unroll : plain_unroll).exchange(value, std::memory_order_relaxed);
}

#define GDFAST_OPTIMIZER(Rule, header)                                                 \
  void step_##Rule(const optim::Rule::Hyper& hyper, Dtype dtype, const StepArgs& args, \
                   const DeviceScalars& scalars, int device, std::uintptr_t stream) {  \
    step<optim::Rule>(hyper, dtype, args, scalars, device, stream);                    \
  }
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER

}  // namespace gdfast::cuda
