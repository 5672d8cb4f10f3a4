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

// The arrays of a block's chunk: param, grad, then the states.
template <class T, int kArrays, class Table>
__device__ __forceinline__ void chunk_arrays(const Table& table, const BlockChunk& chunk,
                                             T* (&ptr)[kArrays]) {
  for (int k = 0; k < kArrays; ++k) {
    ptr[k] = static_cast<T*>(table.arrays[chunk.tensor][k]) + chunk.begin;
  }
}

// Pass 1 over a chunk: the states stored; summed the rule's values, then (kMonitor) the
// gradient.
template <class Rule, unsigned kFlags, class T, int kArrays, bool kMonitor>
__global__ void __launch_bounds__(kThreads)
    moments_kernel(const LaunchTable<kArrays> table, const typename Rule::template Coef<T> coef,
                   double* chunk_sums) {
  constexpr int kStates = kArrays - 2;
  constexpr int kSums = Rule::kTensorSums + kMonitor;
  const BlockChunk chunk = block_chunk(table);
  T* ptr[kArrays];
  chunk_arrays(table, chunk, ptr);
  step_and_sum_chunk<kSums, T>(
      chunk.end - chunk.begin,
      [&](index_t i, T(&summed)[kSums]) {
        T state[kStates];
        for (int k = 0; k < kStates; ++k) state[k] = ptr[2 + k][i];
        const T grad = ptr[1][i];
        T rule_sums[Rule::kTensorSums];
        Rule::template moments<kFlags>(ptr[0][i], grad, state, coef, rule_sums);
        for (int s = 0; s < Rule::kTensorSums; ++s) summed[s] = rule_sums[s];
        if constexpr (kMonitor) summed[Rule::kTensorSums] = grad;
        for (int k = 0; k < kStates; ++k) ptr[2 + k][i] = state[k];
      },
      chunk_sums + kSums * blockIdx.x);
}

// Pass 2 on element i: the new param, stored and returned.
template <class Rule, unsigned kFlags, class T, int kArrays>
__device__ __forceinline__ T apply_element(T* const (&ptr)[kArrays], index_t i,
                                           const typename Rule::template Coef<T>& coef, T factor) {
  T state[kArrays - 2];
  for (int k = 0; k < kArrays - 2; ++k) state[k] = ptr[2 + k][i];
  T p = ptr[0][i];
  Rule::template apply<kFlags>(p, state, coef, factor);
  ptr[0][i] = p;
  return p;
}

template <class Rule, unsigned kFlags, class T, int kArrays>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(const FactorTable<kArrays> table, const typename Rule::template Coef<T> coef) {
  const BlockChunk chunk = block_chunk(table);
  const T factor = static_cast<T>(table.factor[chunk.tensor]);
  T* ptr[kArrays];
  chunk_arrays(table, chunk, ptr);
  for (index_t i = threadIdx.x; i < chunk.end - chunk.begin; i += kThreads) {
    apply_element<Rule, kFlags>(ptr, i, coef, factor);
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
      chunk.end - chunk.begin,
      [&](index_t i, T(&summed)[2]) {
        const T before = ptr[0][i];
        summed[1] = apply_element<Rule, kFlags>(ptr, i, coef, factor);
        summed[0] = summed[1] - before;
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
  std::vector<double> sums;
  {
    const ChunkSums chunk_sums(args, stride, stream);
    LaunchTable<kArrays> table;
    index_t done = 0;
    launch_tables(
        args, kReduceChunk, table, [](int, index_t) {},
        [&](int blocks) {
          double* out = chunk_sums.device() + done * stride;
          if (monitored) {
            moments_kernel<Rule, kFlags, T, kArrays, true>
                <<<blocks, kThreads, 0, stream>>>(table, coef, out);
          } else {
            moments_kernel<Rule, kFlags, T, kArrays, false>
                <<<blocks, kThreads, 0, stream>>>(table, coef, out);
          }
          done += blocks;
        });
    sums = chunk_sums.tensor_sums();
  }
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
  const ChunkSums applied(args, 2, stream);
  index_t done = 0;
  launch_tables(args, kReduceChunk, table, add_factor, [&](int blocks) {
    monitored_apply_kernel<Rule, kFlags, T, kArrays>
        <<<blocks, kThreads, 0, stream>>>(table, coef, applied.device() + done * 2);
    done += blocks;
  });
  const std::vector<double> applied_sums = applied.tensor_sums();
  args.monitor[0] += tensors_total(sums, stride, kSums);  // the gradients
  args.monitor[1] += tensors_total(applied_sums, 2, 0);   // the updates
  args.monitor[2] += tensors_total(applied_sums, 2, 1);   // the new params
}

}  // namespace gdfast::cuda
