// The CUDA loop of a monitored step (StepArgs::monitor) over float32/float64 arrays: the
// rule's update as multi_tensor.cuh applies it, a block per chunk of kReduceChunk elements,
// summing the squares of the gradients, the updates (new param - old) and the new params in
// the CPU's order (chunk_sums.cuh), so the norms are bitwise the CPU's. A step that the
// device's found_inf skips writes nothing and sums what it read: the gradients (clamped by the
// call's bound of clipping by value), updates of 0 and the params. The sums come back to the
// host: the step waits for the stream.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "core/step_args.h"
#include "cuda/chunk_sums.cuh"
#include "cuda/multi_tensor.cuh"
#include "optim/layout.h"

namespace gdfast::cuda {

template <class Rule, unsigned kFlags, class T, int kArrays>
__global__ void __launch_bounds__(kThreads)
    monitored_step_kernel(const LaunchTable<kArrays> table, typename Rule::Hyper hyper,
                          DeviceScalars scalars, double* chunk_sums) {
  const bool stepping = take_device_scalars(hyper, scalars);
  const auto coef = Rule::template coef<T>(hyper);
  const T bound = grad_bound<T>(scalars);
  const BlockChunk chunk = block_chunk(table);
  T* ptr[kArrays];
  chunk_arrays(table, chunk, ptr);
  using R = optim::Registers<Rule, kFlags, T>;
  step_and_sum_chunk<kMonitorSums, T>(
      chunk.end - chunk.begin,
      [&](index_t i) { return R::load([&](int slot) { return ptr[slot][i]; }); },
      [&](R& r, index_t i, T(&summed)[kMonitorSums]) {
        const T before = r.param;
        r.clamp_grad(bound);  // (summed as clamped, as on the CPU)
        if (stepping) {
          r.update(coef);
          r.store([&](int slot, T value) { ptr[slot][i] = value; });
        }
        summed[0] = r.in[0];
        summed[1] = r.param - before;
        summed[2] = r.param;
      },
      chunk_sums + kMonitorSums * blockIdx.x);
}

template <class Rule, unsigned kFlags, class T>
void launch_monitored(const typename Rule::Hyper& hyper, const StepArgs& args,
                      const DeviceScalars& scalars, cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  LaunchTable<kArrays> table;
  const std::vector<double> tensor_sums = sum_chunks(
      args, kMonitorSums, stream, table, [](int, index_t) {},
      [&](int blocks, double* out) {
        monitored_step_kernel<Rule, kFlags, T, kArrays>
            <<<blocks, kThreads, 0, stream>>>(table, hyper, scalars, out);
      });
  for (int s = 0; s < kMonitorSums; ++s) {
    args.monitor[s] += tensors_total(tensor_sums, kMonitorSums, s);
  }
}

}  // namespace gdfast::cuda
