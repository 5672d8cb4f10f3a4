// The CUDA loops of a rule whose update needs sums over each whole tensor first (kTensorSums,
// LAMB's trust ratio), as cpu/kernels/two_pass.h runs them and bitwise the same: pass 1 updates
// the states and sums, per chunk, the squares of the values the rule names (chunk_sums.cuh);
// the host adds each tensor's chunks in order and makes its factor with the rule's own
// tensor_factor (the CPU's code, on the host: the same bits); pass 2 writes the params, each
// tensor's factor travelling in the launch's table. The coefficients are computed on the host
// too, as the CPU's are. float32/float64 arrays (the bindings refuse narrow ones and device
// scalars here); the step waits for pass 1's sums (one synchronisation). Monitoring
// (StepArgs::monitor): pass 1 sums the gradients too, pass 2 the updates and the new params.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "core/step_args.h"
#include "cuda/chunk_sums.cuh"
#include "cuda/multi_tensor.cuh"
#include "optim/layout.h"

namespace gdfast::cuda {

// A launch's tensors for pass 2, as block_chunk() reads them, with each tensor's factor.
template <int kArrays>
struct FactorTable {
  static constexpr int kMaxBytes = 32000;
  static constexpr int kMaxTensors = (kMaxBytes - 16) / (kArrays * 8 + 8 + 8 + 4);
  void* arrays[kMaxTensors][kArrays];
  index_t sizes[kMaxTensors];
  double factor[kMaxTensors];
  int first_block[kMaxTensors + 1];
  int num_tensors;
  index_t chunk;
};

// What the passes read of an element: its param, gradient (pass 1) and states.
template <class T, int kStates>
struct Loaded {
  T param, grad, state[kStates];
};

template <class T, int kArrays>
__device__ __forceinline__ Loaded<T, kArrays - 2> load_element(T* const (&ptr)[kArrays], index_t i,
                                                               bool grad) {
  Loaded<T, kArrays - 2> x;
  x.param = ptr[0][i];
  x.grad = grad ? ptr[1][i] : T(0);
  for (int k = 0; k < kArrays - 2; ++k) x.state[k] = ptr[2 + k][i];
  return x;
}

// Pass 1 over a chunk: the states stored; summed the rule's values, then (kMonitor) the
// gradient.
template <class Rule, unsigned kFlags, class T, int kArrays, bool kMonitor>
__global__ void __launch_bounds__(kThreads)
    moments_kernel(const LaunchTable<kArrays> table, const typename Rule::template Coef<T> coef,
                   T bound, double* chunk_sums) {
  constexpr int kSums = Rule::kTensorSums + kMonitor;
  const BlockChunk chunk = block_chunk(table);
  T* ptr[kArrays];
  chunk_arrays(table, chunk, ptr);
  step_and_sum_chunk<kSums, T>(
      chunk.end - chunk.begin, [&](index_t i) { return load_element(ptr, i, true); },
      [&](Loaded<T, kArrays - 2>& x, index_t i, T(&summed)[kSums]) {
        x.grad = optim::lane_min(bound, optim::lane_max(-bound, x.grad));  // (clipping by value)
        T rule_sums[Rule::kTensorSums];
        Rule::template moments<kFlags>(x.param, x.grad, x.state, coef, rule_sums);
        for (int s = 0; s < Rule::kTensorSums; ++s) summed[s] = rule_sums[s];
        if constexpr (kMonitor) summed[Rule::kTensorSums] = x.grad;
        for (int k = 0; k < kArrays - 2; ++k) ptr[2 + k][i] = x.state[k];
      },
      chunk_sums + kSums * blockIdx.x);
}

template <class Rule, unsigned kFlags, class T, int kArrays>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(const FactorTable<kArrays> table, const typename Rule::template Coef<T> coef) {
  const BlockChunk chunk = block_chunk(table);
  const T factor = static_cast<T>(table.factor[chunk.tensor]);
  T* ptr[kArrays];
  chunk_arrays(table, chunk, ptr);
  // A batch of elements a thread, all loaded before any is stored (as chunk_sums.cuh's loop):
  // their loads are in flight together.
  constexpr int kBatch = 4;
  const index_t n = chunk.end - chunk.begin;
  for (index_t base = 0; base < n; base += index_t{kThreads} * kBatch) {
    Loaded<T, kArrays - 2> x[kBatch];
    for (int u = 0; u < kBatch; ++u) {
      const index_t i = base + threadIdx.x + u * kThreads;
      if (i < n) x[u] = load_element(ptr, i, false);
    }
    for (int u = 0; u < kBatch; ++u) {
      const index_t i = base + threadIdx.x + u * kThreads;
      if (i >= n) break;
      Rule::template apply<kFlags>(x[u].param, x[u].state, coef, factor);
      ptr[0][i] = x[u].param;
    }
  }
}

// Pass 2 over a chunk, monitored: summed the update (new param - old) and the new param.
template <class Rule, unsigned kFlags, class T, int kArrays>
__global__ void __launch_bounds__(kThreads)
    monitored_apply_kernel(const FactorTable<kArrays> table,
                           const typename Rule::template Coef<T> coef, double* chunk_sums) {
  const BlockChunk chunk = block_chunk(table);
  const T factor = static_cast<T>(table.factor[chunk.tensor]);
  T* ptr[kArrays];
  chunk_arrays(table, chunk, ptr);
  step_and_sum_chunk<2, T>(
      chunk.end - chunk.begin, [&](index_t i) { return load_element(ptr, i, false); },
      [&](Loaded<T, kArrays - 2>& x, index_t i, T(&summed)[2]) {
        const T before = x.param;
        Rule::template apply<kFlags>(x.param, x.state, coef, factor);
        ptr[0][i] = x.param;
        summed[0] = x.param - before;
        summed[1] = x.param;
      },
      chunk_sums + 2 * blockIdx.x);
}

template <class Rule, unsigned kFlags, class T>
void launch_two_pass(const typename Rule::Hyper& hyper, const StepArgs& args, cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  constexpr int kSums = Rule::kTensorSums;
  const bool monitored = args.monitor != nullptr;
  const int stride = kSums + (monitored ? 1 : 0);
  const auto coef = Rule::template coef<T>(hyper);
  const auto bound = static_cast<T>(args.grad_bound);  // (host scalars only: see kernels.cu)
  LaunchTable<kArrays> moments_table;
  const std::vector<double> sums = sum_chunks(
      args, stride, stream, moments_table, [](int, index_t) {},
      [&](int blocks, double* out) {
        if (monitored) {
          moments_kernel<Rule, kFlags, T, kArrays, true>
              <<<blocks, kThreads, 0, stream>>>(moments_table, coef, bound, out);
        } else {
          moments_kernel<Rule, kFlags, T, kArrays, false>
              <<<blocks, kThreads, 0, stream>>>(moments_table, coef, bound, out);
        }
      });
  std::vector<double> factors(static_cast<std::size_t>(args.num_tensors));
  for (index_t t = 0; t < args.num_tensors; ++t) {
    double tensor[kSums];
    for (int s = 0; s < kSums; ++s) tensor[s] = sums[t * stride + s];
    factors[t] = Rule::tensor_factor(tensor, hyper);
  }
  FactorTable<kArrays> table;
  static_assert(sizeof(table) <= 32764, "kernel parameters are limited to 32764 bytes");
  const auto add_factor = [&](int slot, index_t t) { table.factor[slot] = factors[t]; };
  if (!monitored) {
    launch_tables(args, chunk_elements<T>(false), table, add_factor, [&](int blocks) {
      apply_kernel<Rule, kFlags, T, kArrays><<<blocks, kThreads, 0, stream>>>(table, coef);
    });
    return;
  }
  const std::vector<double> applied_sums =
      sum_chunks(args, 2, stream, table, add_factor, [&](int blocks, double* out) {
        monitored_apply_kernel<Rule, kFlags, T, kArrays>
            <<<blocks, kThreads, 0, stream>>>(table, coef, out);
      });
  args.monitor[0] += tensors_total(sums, stride, kSums);  // the gradients
  args.monitor[1] += tensors_total(applied_sums, 2, 0);   // the updates
  args.monitor[2] += tensors_total(applied_sums, 2, 1);   // the new params
}

}  // namespace gdfast::cuda
