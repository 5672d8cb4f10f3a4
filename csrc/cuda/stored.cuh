// The CUDA loop for calls with narrow arrays (bfloat16/float16 params, grads or states) or a
// float32 master copy of the param: the rule in float32, each element widened as it is loaded
// and narrowed as it is stored with the functions of core/rounding.h, the very code the CPU
// kernels match bit for bit (to nearest even, or stochastically with the same generator).
// One element per thread and step of the loop; tensors as in multi_tensor.cuh.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/rounding.h"
#include "core/step_args.h"
#include "cuda/check.h"
#include "cuda/multi_tensor.cuh"
#include "optim/layout.h"

namespace gdfast::cuda {

template <int kArrays>
struct StoredLaunchTable {
  static constexpr int kMaxBytes = 31000;
  static constexpr int kMaxTensors = (kMaxBytes - 64) / (kArrays * 8 + 8 + 8 + 8 + 4);
  void* arrays[kMaxTensors][kArrays];
  float* masters[kMaxTensors];            // null: the param is stored as it is computed
  std::uint64_t param_keys[kMaxTensors];  // rounding::param_key of each tensor
  index_t sizes[kMaxTensors];
  int first_block[kMaxTensors + 1];
  int num_tensors;
  Dtype slot[kArrays];          // each array's storage type
  unsigned char role[kArrays];  // each array's stochastic-rounding role
  bool stochastic;
};

__device__ __forceinline__ float load_stored(const void* p, Dtype type, index_t i) {
  switch (type) {
    case Dtype::kBfloat16:
      return rounding::widen_bf16(static_cast<const std::uint16_t*>(p)[i]);
    case Dtype::kFloat16:
      return rounding::widen_f16(static_cast<const std::uint16_t*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

template <class Rule, unsigned kFlags, int kArrays>
__global__ void __launch_bounds__(kThreads)
    stored_step_kernel(const StoredLaunchTable<kArrays> table, typename Rule::Hyper hyper,
                       DeviceScalars scalars) {
  if (scalars.found_inf != nullptr && *scalars.found_inf != 0.0f) return;
  set_lr(hyper, scalars.lr, 0);
  set_step(hyper, scalars.step, 0);
  set_grad_scale(hyper, scalars.grad_scale, 0);
  const auto coef = Rule::template coef<float>(hyper);
  using R = optim::Registers<Rule, kFlags, float>;

  int lo = 0, hi = table.num_tensors;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (table.first_block[mid] <= static_cast<int>(blockIdx.x)) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const index_t begin =
      index_t{static_cast<int>(blockIdx.x) - table.first_block[lo]} * chunk_elements<float>();
  const index_t remaining = table.sizes[lo] - begin;
  const index_t end =
      begin + (remaining < chunk_elements<float>() ? remaining : chunk_elements<float>());
  void* const* arrays = table.arrays[lo];
  float* const master = table.masters[lo];
  for (index_t i = begin + threadIdx.x; i < end; i += kThreads) {
    R r = R::load([&](int slot) {
      return slot == 0 && master != nullptr ? master[i]
                                            : load_stored(arrays[slot], table.slot[slot], i);
    });
    r.update(coef);
    r.store([&](int slot, float value) {
      const Dtype type = table.slot[slot];
      const bool from_master = slot == 0 && master != nullptr;
      if (from_master) master[i] = value;
      if (type == Dtype::kFloat32) {
        static_cast<float*>(arrays[slot])[i] = value;
        return;
      }
      std::uint32_t random16 = 0;
      const bool stochastic = table.stochastic && !from_master;
      if (stochastic) {
        const unsigned role = table.role[slot];
        const std::uint32_t key =
            rounding::stream_key(table.param_keys[lo], role / 2, static_cast<std::uint64_t>(i));
        random16 =
            rounding::random16(rounding::random_bits(key, static_cast<std::uint64_t>(i)), role);
      }
      static_cast<std::uint16_t*>(arrays[slot])[i] =
          rounding::narrow(type == Dtype::kBfloat16, value, stochastic, random16);
    });
  }
}

template <class Rule, unsigned kFlags>
void launch_stored(const typename Rule::Hyper& hyper, const StepArgs& args,
                   const DeviceScalars& scalars, cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  using Table = StoredLaunchTable<kArrays>;
  static_assert(sizeof(Table) <= 32764, "kernel parameters are limited to 32764 bytes");
  const Storage& s = *args.storage;
  Table table;
  for (int k = 0; k < kArrays; ++k) {
    table.slot[k] = s.slot[k];
    table.role[k] = s.role[k];
  }
  table.stochastic = s.stochastic;
  launch_tables(
      args, chunk_elements<float>(), table,
      [&](int slot, index_t t) {
        table.masters[slot] = s.masters != nullptr ? static_cast<float*>(s.masters[t]) : nullptr;
        table.param_keys[slot] = s.stochastic ? rounding::param_key(s.seed, s.step, s.keys[t]) : 0;
      },
      [&](int blocks) {
        stored_step_kernel<Rule, kFlags, kArrays>
            <<<blocks, kThreads, 0, stream>>>(table, hyper, scalars);
      });
}

}  // namespace gdfast::cuda
