// The CUDA loop: one launch steps a whole list of tensors of any sizes. The tensor table
// travels as a kernel parameter (up to 32 KiB since CUDA 12.1 on sm_70+), so nothing is
// copied to the device beforehand and a captured CUDA graph replays the launch as it is.
// Each block takes one chunk of one tensor; each thread applies the rule from csrc/optim/
// (instantiated with V = T, the same headers as the CPU) to kVec consecutive elements, loaded
// and stored 16 bytes at a time where the arrays are aligned for it.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/step_args.h"
#include "cuda/api.h"
#include "cuda/check.h"
#include "optim/layout.h"

namespace gdfast::cuda {

constexpr int kThreads = 256;

template <class T>
__host__ __device__ constexpr int vec_width() {
  return 16 / static_cast<int>(sizeof(T));
}
// A block's chunk: chunk_unroll() 16-byte vectors per thread (whole vectors, so that chunks
// of an aligned tensor stay aligned).
template <class T>
index_t chunk_elements(bool stored) {
  return index_t{kThreads} * chunk_unroll(stored) * vec_width<T>();
}

template <int kArrays>
struct LaunchTable {
  static constexpr int kMaxBytes = 32000;
  static constexpr int kMaxTensors = (kMaxBytes - 16) / (kArrays * 8 + 8 + 4);
  void* arrays[kMaxTensors][kArrays];
  index_t sizes[kMaxTensors];
  int first_block[kMaxTensors + 1];  // blocks of tensor t: [first_block[t], first_block[t+1])
  int num_tensors;
  index_t chunk;  // elements a block steps
};

// Overrides from device scalars, for whichever of these members a rule's Hyper has.
template <class H>
__device__ auto set_lr(H& h, const float* v, int) -> decltype(h.lr = 0.0, void()) {
  if (v != nullptr) h.lr = *v;
}
template <class H>
__device__ void set_lr(H&, const float*, long) {}
template <class H>
__device__ auto set_step(H& h, const float* v, int) -> decltype(h.step = 0, void()) {
  if (v != nullptr) h.step = static_cast<index_t>(*v);
}
template <class H>
__device__ void set_step(H&, const float*, long) {}
template <class H>
__device__ auto set_grad_scale(H& h, const float* v, int) -> decltype(h.grad_scale = 0.0, void()) {
  if (v != nullptr) h.grad_scale = *v;
}
template <class H>
__device__ void set_grad_scale(H&, const float*, long) {}

// The device scalars' part of a kernel's start: false if found_inf says to skip the step, else
// the hyperparameters with the device's lr, step and grad_scale where given.
template <class H>
__device__ __forceinline__ bool take_device_scalars(H& hyper, const DeviceScalars& scalars) {
  if (scalars.found_inf != nullptr && *scalars.found_inf != 0.0f) return false;
  set_lr(hyper, scalars.lr, 0);
  set_step(hyper, scalars.step, 0);
  set_grad_scale(hyper, scalars.grad_scale, 0);
  return true;
}

// The gradients' bound of clipping by value in T: the call's, times a device grad_scale where one
// is given, as the bindings multiply it by a host one (to_grad_bound: it bounds the gradients
// as stored, before they are divided by grad_scale).
template <class T>
__device__ __forceinline__ T grad_bound(const DeviceScalars& scalars) {
  double bound = scalars.grad_bound;
  if (scalars.grad_scale != nullptr) bound *= static_cast<double>(*scalars.grad_scale);
  return static_cast<T>(bound);
}

// The tensor this block steps (the last t with first_block[t] <= blockIdx.x) and its chunk of
// it, [begin, end).
struct BlockChunk {
  int tensor;
  index_t begin, end;
};
template <class Table>
__device__ __forceinline__ BlockChunk block_chunk(const Table& table) {
  int lo = 0, hi = table.num_tensors;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (table.first_block[mid] <= static_cast<int>(blockIdx.x)) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  const index_t begin = index_t{static_cast<int>(blockIdx.x) - table.first_block[lo]} * table.chunk;
  const index_t remaining = table.sizes[lo] - begin;
  return {lo, begin, begin + (remaining < table.chunk ? remaining : table.chunk)};
}

// The arrays of a block's chunk (for the loops that take them one element at a time).
template <class T, int kArrays, class Table>
__device__ __forceinline__ void chunk_arrays(const Table& table, const BlockChunk& chunk,
                                             T* (&ptr)[kArrays]) {
  for (int k = 0; k < kArrays; ++k) {
    ptr[k] = static_cast<T*>(table.arrays[chunk.tensor][k]) + chunk.begin;
  }
}

template <class T>
struct alignas(16) Pack {
  T v[vec_width<T>()];
};

template <class Rule, unsigned kFlags, class T, int kArrays>
__device__ __forceinline__ void apply_element(T* const* ptr, index_t i,
                                              const typename Rule::template Coef<T>& c, T bound) {
  using R = optim::Registers<Rule, kFlags, T>;
  R r = R::load([&](int slot) { return ptr[slot][i]; });
  r.update(c, bound);
  r.store([&](int slot, T value) { ptr[slot][i] = value; });
}

template <class Rule, unsigned kFlags, class T, int kArrays>
__device__ __forceinline__ void apply_pack(T* const* ptr, index_t i,
                                           const typename Rule::template Coef<T>& c, T bound) {
  using R = optim::Registers<Rule, kFlags, T>;
  constexpr int kVec = vec_width<T>();
  Pack<T> pack[kArrays];
  for (int k = 0; k < kArrays; ++k) pack[k] = *reinterpret_cast<const Pack<T>*>(ptr[k] + i);
  for (int e = 0; e < kVec; ++e) {
    R r = R::load([&](int slot) { return pack[slot].v[e]; });
    r.update(c, bound);
    r.store([&](int slot, T value) { pack[slot].v[e] = value; });
  }
  // Only the written arrays (param and states) go back; inputs are read-only.
  *reinterpret_cast<Pack<T>*>(ptr[0] + i) = pack[0];
  for (int k = 1 + optim::Layout<Rule, kFlags>::kNumInputs; k < kArrays; ++k) {
    *reinterpret_cast<Pack<T>*>(ptr[k] + i) = pack[k];
  }
}

template <class Rule, unsigned kFlags, class T, int kArrays>
__global__ void __launch_bounds__(kThreads)
    step_kernel(const LaunchTable<kArrays> table, typename Rule::Hyper hyper,
                DeviceScalars scalars) {
  if (!take_device_scalars(hyper, scalars)) return;
  const auto coef = Rule::template coef<T>(hyper);
  const T bound = grad_bound<T>(scalars);
  const BlockChunk chunk = block_chunk(table);
  const int lo = chunk.tensor;
  const index_t begin = chunk.begin, n = chunk.end - chunk.begin;
  T* ptr[kArrays];
  bool aligned = true;
  for (int k = 0; k < kArrays; ++k) {
    ptr[k] = static_cast<T*>(table.arrays[lo][k]) + begin;
    aligned = aligned && reinterpret_cast<std::uintptr_t>(ptr[k]) % 16 == 0;
  }
  constexpr int kVec = vec_width<T>();
  if (aligned) {
    const index_t full = n / kVec * kVec;
    for (index_t i = index_t{threadIdx.x} * kVec; i < full; i += index_t{kThreads} * kVec) {
      apply_pack<Rule, kFlags, T, kArrays>(ptr, i, coef, bound);
    }
    for (index_t i = full + threadIdx.x; i < n; i += kThreads) {
      apply_element<Rule, kFlags, T, kArrays>(ptr, i, coef, bound);
    }
  } else {
    for (index_t i = threadIdx.x; i < n; i += kThreads) {
      apply_element<Rule, kFlags, T, kArrays>(ptr, i, coef, bound);
    }
  }
}

// Fills `table` (a LaunchTable or StoredLaunchTable) from the tensor list and calls
// launch_table() whenever it is full and at the end; empty tensors are skipped.
// add_tensor(slot, t) fills what else the table keeps of tensor t.
template <class Table, class AddTensor, class LaunchTable>
void launch_tables(const StepArgs& args, index_t chunk, Table& table, AddTensor&& add_tensor,
                   LaunchTable&& launch_table) {
  constexpr int kArrays = static_cast<int>(sizeof(table.arrays[0]) / sizeof(void*));
  table.chunk = chunk;
  table.num_tensors = 0;
  table.first_block[0] = 0;
  const auto flush = [&] {
    if (table.num_tensors == 0) return;
    launch_table(table.first_block[table.num_tensors]);
    GDFAST_CUDA_CHECK(cudaGetLastError());
    table.num_tensors = 0;
  };
  for (index_t t = 0; t < args.num_tensors; ++t) {
    const index_t size = args.offsets[t + 1] - args.offsets[t];
    if (size == 0) continue;
    const index_t blocks = (size + chunk - 1) / chunk;
    if (table.num_tensors == Table::kMaxTensors ||
        table.first_block[table.num_tensors] + blocks > index_t{0x7fffffff}) {
      flush();
    }
    const int slot = table.num_tensors++;
    for (int k = 0; k < kArrays; ++k) table.arrays[slot][k] = args.arrays[t * args.num_arrays + k];
    table.sizes[slot] = size;
    table.first_block[slot + 1] = table.first_block[slot] + static_cast<int>(blocks);
    add_tensor(slot, t);
  }
  flush();
}

template <class Rule, unsigned kFlags, class T>
void launch(const typename Rule::Hyper& hyper, const StepArgs& args, const DeviceScalars& scalars,
            cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  using Table = LaunchTable<kArrays>;
  static_assert(sizeof(Table) <= 32764, "kernel parameters are limited to 32764 bytes");
  Table table;
  launch_tables(
      args, chunk_elements<T>(false), table, [](int, index_t) {},
      [&](int blocks) {
        step_kernel<Rule, kFlags, T, kArrays>
            <<<blocks, kThreads, 0, stream>>>(table, hyper, scalars);
      });
}

}  // namespace gdfast::cuda
