// Sums of squares a CUDA loop makes as it steps, bitwise the CPU's (cpu/kernels/elementwise.h's
// ChunkSquares): a block per chunk of kReduceChunk elements of one tensor; element i of the
// chunk goes to accumulator i % 16 of each sum, in order, and the 16 are added pairwise. The
// block's threads step a piece of the chunk at a time and leave the values to sum in shared
// memory; 16 threads per sum then add them in order (a chain of dependent additions per
// accumulator, short beside the chunk's memory traffic). The chunks' sums come back to the
// host (ChunkSums), which adds each tensor's in index order as cpu/dispatch.cpp does.
#pragma once

#include <cuda_runtime.h>

#include <vector>

#include "core/step_args.h"
#include "core/tensor_totals.h"
#include "cuda/check.h"
#include "cuda/multi_tensor.cuh"

namespace gdfast::cuda {

constexpr int kSumAccumulators = 16;
constexpr int kSumPiece = 1024;  // elements a block steps between two rounds of adding

// Block-wide, at a chunk's end: each of the first kSums * 16 threads holds `acc`, accumulator
// threadIdx.x % 16 of sum threadIdx.x / 16; out[0 .. kSums) gets each sum's 16 added pairwise
// (thread 0 .. kSums - 1 write them), as the CPU's ChunkSquares adds them.
template <int kSums>
__device__ __forceinline__ void finish_chunk_sums(double acc, double* out) {
  __shared__ double totals[kSums][kSumAccumulators];
  const int sum = static_cast<int>(threadIdx.x) / kSumAccumulators;
  if (sum < kSums) totals[sum][threadIdx.x % kSumAccumulators] = acc;
  __syncthreads();
  if (threadIdx.x >= kSums) return;
  double a[kSumAccumulators];
  for (int j = 0; j < kSumAccumulators; ++j) a[j] = totals[threadIdx.x][j];
  for (int width = kSumAccumulators / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) a[j] += a[j + width];
  }
  out[threadIdx.x] = a[0];
}

// Block-wide, in a block of kThreads over a chunk of n elements: load(i) reads element i of
// the chunk's arrays, finish(loaded, i, values) steps it, stores it and sets the kSums values
// whose squares are summed; out[0 .. kSums) gets the chunk's sums (thread 0 writes them). Each
// thread loads all its elements of a piece before it stores any, so that their loads are in
// flight together (stores to one array could alias loads of another, for all the compiler
// knows: it would not reorder them itself).
template <int kSums, class T, class Load, class Finish>
__device__ __forceinline__ void step_and_sum_chunk(index_t n, Load&& load, Finish&& finish,
                                                   double* out) {
  static_assert(kSums * kSumAccumulators <= kThreads, "a thread per accumulator");
  constexpr int kPerThread = kSumPiece / kThreads;
  __shared__ T values[kSums][kSumPiece];
  const int sum = static_cast<int>(threadIdx.x) / kSumAccumulators;
  const int lane = static_cast<int>(threadIdx.x) % kSumAccumulators;
  double acc = 0.0;
  for (index_t base = 0; base < n; base += kSumPiece) {
    const int count = static_cast<int>(n - base < kSumPiece ? n - base : kSumPiece);
    decltype(load(base)) loaded[kPerThread];
    for (int u = 0; u < kPerThread; ++u) {
      const int k = static_cast<int>(threadIdx.x) + u * kThreads;
      if (k < count) loaded[u] = load(base + k);
    }
    for (int u = 0; u < kPerThread; ++u) {
      const int k = static_cast<int>(threadIdx.x) + u * kThreads;
      if (k >= count) break;
      T v[kSums];
      finish(loaded[u], base + k, v);
      for (int s = 0; s < kSums; ++s) values[s][k] = v[s];
    }
    __syncthreads();
    if (sum < kSums) {
      for (int k = lane; k < count; k += kSumAccumulators) {  // (pieces are whole rows of 16)
        const double x = values[sum][k];
        acc += x * x;
      }
    }
    __syncthreads();
  }
  finish_chunk_sums<kSums>(acc, out);
}

// Device memory for chunk sums, kept per host thread and device between calls: a call waits
// for its stream before it returns, so the next call of the same thread may reuse it, and no
// other thread touches it. (Stream-ordered allocation per call cost about 300 us a call on an
// H200: the default pool gives its memory back at every synchronisation.)
inline double* chunk_scratch(index_t count) {
  struct Buffer {
    int device;
    double* data;
    index_t capacity;
  };
  struct Cache {
    std::vector<Buffer> buffers;
    ~Cache() {
      for (const Buffer& b : buffers) cudaFree(b.data);  // (errors at exit do not matter)
    }
  };
  thread_local Cache cache;
  int device = 0;
  GDFAST_CUDA_CHECK(cudaGetDevice(&device));
  Buffer* buffer = nullptr;
  for (Buffer& b : cache.buffers) {
    if (b.device == device) buffer = &b;
  }
  if (buffer == nullptr) buffer = &cache.buffers.emplace_back(Buffer{device, nullptr, 0});
  if (buffer->capacity < count) {
    const index_t capacity = count > 2 * buffer->capacity ? count : 2 * buffer->capacity;
    GDFAST_CUDA_CHECK(cudaFree(buffer->data));
    buffer->data = nullptr;
    buffer->capacity = 0;
    GDFAST_CUDA_CHECK(cudaMalloc(&buffer->data, capacity * sizeof(double)));
    buffer->capacity = capacity;
  }
  return buffer->data;
}

// The host's side, on the current device: room for `sums` sums of every chunk of the call's
// tensors, in chunk order (a tensor's chunks from its first element; empty tensors have
// none), and each tensor's sums once the launches are done.
class ChunkSums {
 public:
  ChunkSums(const StepArgs& args, int sums, cudaStream_t stream)
      : sums_(sums), stream_(stream), first_(static_cast<std::size_t>(args.num_tensors) + 1, 0) {
    for (index_t t = 0; t < args.num_tensors; ++t) {
      const index_t size = args.offsets[t + 1] - args.offsets[t];
      first_[t + 1] = first_[t] + (size + kReduceChunk - 1) / kReduceChunk;
    }
    if (chunks() > 0) device_ = chunk_scratch(chunks() * sums_);
  }

  index_t chunks() const { return first_.back(); }
  double* device() const { return device_; }  // the chunks' sums, `sums` a chunk

  // Waits for the stream; out[t * sums + s] = sum s of tensor t, its chunks added in order.
  std::vector<double> tensor_sums() const {
    std::vector<double> chunk(static_cast<std::size_t>(chunks() * sums_));
    if (!chunk.empty()) {
      GDFAST_CUDA_CHECK(cudaMemcpyAsync(chunk.data(), device_, chunk.size() * sizeof(double),
                                        cudaMemcpyDeviceToHost, stream_));
      GDFAST_CUDA_CHECK(cudaStreamSynchronize(stream_));
    }
    const index_t tensors = static_cast<index_t>(first_.size()) - 1;
    std::vector<double> out(static_cast<std::size_t>(tensors * sums_), 0.0);
    for (index_t t = 0; t < tensors; ++t) {
      for (index_t c = first_[t]; c < first_[t + 1]; ++c) {
        for (int s = 0; s < sums_; ++s) out[t * sums_ + s] += chunk[c * sums_ + s];
      }
    }
    return out;
  }

 private:
  int sums_;
  cudaStream_t stream_;
  std::vector<index_t> first_;
  double* device_ = nullptr;
};

// Launches launch(blocks, out) once per table of the call's tensors (launch_tables fills it,
// add_tensor as it takes it), a block per chunk of kReduceChunk elements, `out` where the sums
// of the table's first chunk go (`sums` a chunk); then each tensor's sums, as
// ChunkSums::tensor_sums gives them (the call waits for the stream).
template <class Table, class AddTensor, class Launch>
std::vector<double> sum_chunks(const StepArgs& args, int sums, cudaStream_t stream, Table& table,
                               AddTensor&& add_tensor, Launch&& launch) {
  const ChunkSums chunk_sums(args, sums, stream);
  index_t done = 0;  // chunks summed by the launches before
  launch_tables(args, kReduceChunk, table, add_tensor, [&](int blocks) {
    launch(blocks, chunk_sums.device() + done * sums);
    done += blocks;
  });
  return chunk_sums.tensor_sums();
}

}  // namespace gdfast::cuda
