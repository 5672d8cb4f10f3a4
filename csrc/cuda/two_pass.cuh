// The CUDA loops of a rule whose update needs sums over each whole tensor first (kTensorSums,
// LAMB's trust ratio), as cpu/kernels/two_pass.h runs them and bitwise the same: pass 1 updates
// the states and sums, per chunk, the squares of the values the rule names (chunk_sums.cuh);
// the host adds each tensor's chunks in order and makes its factor with the rule's own
// tensor_factor (the CPU's code, on the host: the same bits); pass 2 writes the params, each
// tensor's factor travelling in the launch's table. The coefficients are computed on the host
// too, as the CPU's are. float32/float64 arrays (the bindings refuse narrow ones and device
// scalars here); the step waits for pass 1's sums (one synchronisation).
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

template <class Rule, unsigned kFlags, class T, int kArrays>
__global__ void __launch_bounds__(kThreads)
    moments_kernel(const LaunchTable<kArrays> table, const typename Rule::template Coef<T> coef,
                   double* chunk_sums) {
  constexpr int kStates = kArrays - 2;
  const BlockChunk chunk = block_chunk(table);
  T* ptr[kArrays];
  for (int k = 0; k < kArrays; ++k) {
    ptr[k] = static_cast<T*>(table.arrays[chunk.tensor][k]) + chunk.begin;
  }
  step_and_sum_chunk<Rule::kTensorSums, T>(
      chunk.end - chunk.begin,
      [&](index_t i, T (&summed)[Rule::kTensorSums]) {
        T state[kStates];
        for (int k = 0; k < kStates; ++k) state[k] = ptr[2 + k][i];
        Rule::template moments<kFlags>(ptr[0][i], ptr[1][i], state, coef, summed);
        for (int k = 0; k < kStates; ++k) ptr[2 + k][i] = state[k];
      },
      chunk_sums + Rule::kTensorSums * blockIdx.x);
}

template <class Rule, unsigned kFlags, class T, int kArrays>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(const FactorTable<kArrays> table, const typename Rule::template Coef<T> coef) {
  constexpr int kStates = kArrays - 2;
  const BlockChunk chunk = block_chunk(table);
  const T factor = static_cast<T>(table.factor[chunk.tensor]);
  T* ptr[kArrays];
  for (int k = 0; k < kArrays; ++k) {
    ptr[k] = static_cast<T*>(table.arrays[chunk.tensor][k]) + chunk.begin;
  }
  for (index_t i = threadIdx.x; i < chunk.end - chunk.begin; i += kThreads) {
    T state[kStates];
    for (int k = 0; k < kStates; ++k) state[k] = ptr[2 + k][i];
    T p = ptr[0][i];
    Rule::template apply<kFlags>(p, state, coef, factor);
    ptr[0][i] = p;
  }
}

template <class Rule, unsigned kFlags, class T>
void launch_two_pass(const typename Rule::Hyper& hyper, const StepArgs& args, cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  constexpr int kSums = Rule::kTensorSums;
  const auto coef = Rule::template coef<T>(hyper);
  std::vector<double> factors(static_cast<std::size_t>(args.num_tensors));
  {
    const ChunkSums sums(args, kSums, stream);
    LaunchTable<kArrays> table;
    index_t done = 0;
    launch_tables(
        args, kReduceChunk, table, [](int, index_t) {},
        [&](int blocks) {
          moments_kernel<Rule, kFlags, T, kArrays>
              <<<blocks, kThreads, 0, stream>>>(table, coef, sums.device() + done * kSums);
          done += blocks;
        });
    const std::vector<double> tensor_sums = sums.tensor_sums();
    for (index_t t = 0; t < args.num_tensors; ++t) {
      double tensor[kSums];
      for (int s = 0; s < kSums; ++s) tensor[s] = tensor_sums[t * kSums + s];
      factors[t] = Rule::tensor_factor(tensor, hyper);
    }
  }
  FactorTable<kArrays> table;
  launch_tables(
      args, chunk_elements<T>(false), table,
      [&](int slot, index_t t) { table.factor[slot] = factors[t]; },
      [&](int blocks) {
        apply_kernel<Rule, kFlags, T, kArrays><<<blocks, kThreads, 0, stream>>>(table, coef);
      });
}

}  // namespace gdfast::cuda
