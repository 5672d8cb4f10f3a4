// Deterministic sums of squares on the device, bitwise the CPU's (cpu/kernels/reduce.h): a
// block per chunk of kReduceChunk elements, a thread per accumulator of the CPU's order (four
// streams of 16), each adding its elements in the CPU's order; the 64 then combined as there.
// The chunks' sums come back to the host, which adds each tensor's in index order as
// cpu/reduce.cpp does (chunk_sums.cuh's sum_chunks).
#include <algorithm>
#include <stdexcept>
#include <vector>

#include "core/rounding.h"
#include "cuda/chunk_sums.cuh"
#include "cuda/multi_tensor.cuh"

namespace gdfast::cuda {
namespace {

constexpr int kStreams = 4;
constexpr int kAccumulators = 16;

// A launch's tensors, as block_chunk() reads them (a block per chunk).
struct ReduceTable {
  static constexpr int kMaxTensors = 1300;
  void* arrays[kMaxTensors][1];
  index_t sizes[kMaxTensors];
  int first_block[kMaxTensors + 1];
  int num_tensors;
  index_t chunk;
};
static_assert(sizeof(ReduceTable) <= 32764, "kernel parameters are limited to 32764 bytes");

template <Dtype kType>
__device__ __forceinline__ double load_wide(const void* data, index_t i) {
  if constexpr (kType == Dtype::kFloat32) {
    return static_cast<const float*>(data)[i];
  } else if constexpr (kType == Dtype::kFloat64) {
    return static_cast<const double*>(data)[i];
  } else if constexpr (kType == Dtype::kBfloat16) {
    return rounding::widen_bf16(static_cast<const std::uint16_t*>(data)[i]);
  } else {
    return rounding::widen_f16(static_cast<const std::uint16_t*>(data)[i]);
  }
}

template <Dtype kType>
__global__ void __launch_bounds__(kStreams* kAccumulators)
    chunk_sum_squares(const ReduceTable table, double* chunk_sums) {
  const BlockChunk chunk = block_chunk(table);
  const void* data = table.arrays[chunk.tensor][0];
  const index_t begin = chunk.begin, n = chunk.end - chunk.begin;
  const int stream = static_cast<int>(threadIdx.x) / kAccumulators;
  const int j = static_cast<int>(threadIdx.x) % kAccumulators;
  // Stream s holds elements [s * quarter, (s + 1) * quarter); accumulator j of it every 16th.
  const index_t quarter = n / (kStreams * kAccumulators) * kAccumulators;
  double acc = 0.0;
  const index_t first = begin + stream * quarter + j;
  // A batch of loads issued before any is added: several in flight per thread.
  constexpr int kBatch = 8;
  index_t i = 0;
  for (; i + kBatch * kAccumulators <= quarter; i += kBatch * kAccumulators) {
    double x[kBatch];
    for (int b = 0; b < kBatch; ++b) x[b] = load_wide<kType>(data, first + i + b * kAccumulators);
    for (int b = 0; b < kBatch; ++b) acc += x[b] * x[b];
  }
  for (; i < quarter; i += kAccumulators) {
    const double x = load_wide<kType>(data, first + i);
    acc += x * x;
  }
  if (stream == 0) {  // the elements after the four streams, into stream 0's accumulators
    for (index_t i = kStreams * quarter + j; i < n; i += kAccumulators) {
      const double x = load_wide<kType>(data, begin + i);
      acc += x * x;
    }
  }
  __shared__ double sums[kStreams][kAccumulators];
  sums[stream][j] = acc;
  __syncthreads();
  if (threadIdx.x != 0) return;
  double total[kAccumulators];
  for (int a = 0; a < kAccumulators; ++a) total[a] = sums[0][a];
  for (int s = 1; s < kStreams; ++s) {
    for (int a = 0; a < kAccumulators; ++a) total[a] += sums[s][a];
  }
  for (int width = kAccumulators / 2; width >= 1; width /= 2) {
    for (int a = 0; a < width; ++a) total[a] += total[a + width];
  }
  chunk_sums[blockIdx.x] = total[0];
}

// Each tensor's sum of squares (the call waits for the stream).
template <Dtype kType>
std::vector<double> tensor_sums(const StepArgs& args, cudaStream_t stream) {
  ReduceTable table;
  return sum_chunks(
      args, 1, stream, table, [](int, index_t) {},
      [&](int blocks, double* out) {
        chunk_sum_squares<kType><<<blocks, kStreams * kAccumulators, 0, stream>>>(table, out);
      });
}

}  // namespace

void sum_squares(const StepArgs& args, Dtype type, double* out, int device,
                 std::uintptr_t stream_handle) {
  const DeviceGuard guard(device);
  const auto stream = reinterpret_cast<cudaStream_t>(stream_handle);
  std::vector<double> sums;
  switch (type) {
    case Dtype::kFloat32:
      sums = tensor_sums<Dtype::kFloat32>(args, stream);
      break;
    case Dtype::kFloat64:
      sums = tensor_sums<Dtype::kFloat64>(args, stream);
      break;
    case Dtype::kBfloat16:
      sums = tensor_sums<Dtype::kBfloat16>(args, stream);
      break;
    case Dtype::kFloat16:
      sums = tensor_sums<Dtype::kFloat16>(args, stream);
      break;
    case Dtype::kUint8:
      throw std::invalid_argument("sum_squares: not of uint8 codes");
  }
  std::copy(sums.begin(), sums.end(), out);
}

}  // namespace gdfast::cuda
