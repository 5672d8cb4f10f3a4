// The CUDA loop for calls with 8-bit blockwise states (core/quant8.h): a thread per element of
// a 256-element block (kThreads == quant8::kBlock), so each state's new block absmax is one
// reduction across the thread block, and every block of a chunk is stepped in turn. Codes are
// decoded and encoded with the functions the CPU kernels match bit for bit; the param and the
// other arrays are loaded and stored as stored.cuh does (narrow types, master copies,
// stochastic rounding). Chunks are multiples of 256 elements of one tensor, so no block is
// shared between thread blocks.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

#include "core/quant8.h"
#include "core/rounding.h"
#include "core/step_args.h"
#include "cuda/check.h"
#include "cuda/multi_tensor.cuh"
#include "cuda/stored.cuh"
#include "optim/layout.h"

namespace gdfast::cuda {

static_assert(kThreads == quant8::kBlock, "a thread per element of a block");

template <int kArrays>
struct QuantizedLaunchTable {
  static constexpr int kMaxBytes = 31000;
  static constexpr int kMaxTensors = (kMaxBytes - 64) / (2 * kArrays * 8 + 8 + 8 + 8 + 4);
  void* arrays[kMaxTensors][kArrays];
  float* absmax[kMaxTensors][kArrays];  // the blocks' absmax of the 8-bit arrays (else null)
  float* masters[kMaxTensors];
  std::uint64_t param_keys[kMaxTensors];
  index_t sizes[kMaxTensors];
  int first_block[kMaxTensors + 1];
  int num_tensors;
  index_t chunk;
  Dtype slot[kArrays];
  unsigned char role[kArrays];
  unsigned char quantized[kArrays];  // Quantized of core/step_args.h
  bool stochastic;
};

// Each map's constants (core/quant8.h), computed once per thread block into shared memory:
// [map: 0 signed, 1 unsigned][decode slope, decode offset, encode slope, encode offset][p or z].
// Block-wide (it synchronises).
__device__ __forceinline__ void load_codec(float (&codec)[2][4][16]) {
  if (threadIdx.x < 16) {
    const int i = static_cast<int>(threadIdx.x);
    for (int map = 0; map < 2; ++map) {
      const int bits = quant8::magnitude_bits(map == 0);
      codec[map][0][i] = i < bits ? quant8::decode_slope(i, bits) : 0.0f;
      codec[map][1][i] = i < bits ? quant8::decode_offset(i, bits) : 0.0f;
      codec[map][2][i] = i < bits ? quant8::encode_slope(i, bits) : 0.0f;
      codec[map][3][i] = i < bits ? quant8::encode_offset(i, bits) : 0.0f;
    }
  }
  __syncthreads();
}

// Element i of 8-bit array k (of map `quantized`) decoded with its block's absmax.
__device__ __forceinline__ float decode_element(const void* codes, unsigned char quantized,
                                                float absmax, index_t i,
                                                const float (&codec)[2][4][16]) {
  const int map = quantized == kSignedMap ? 0 : 1;
  return quant8::decode_with(static_cast<const std::uint8_t*>(codes)[i], absmax, map == 0,
                             codec[map][0], codec[map][1]);
}

// Block-wide (a thread per element of a 256-element block; `active` where the element exists):
// the block's largest |value| over the threads' `value`s, as quant8::absmax_of_bits makes it
// (Inf and NaN above all). `largest` is the block's scratch of a word per warp.
__device__ __forceinline__ float block_absmax(float value, bool active,
                                              std::uint32_t (&largest)[kThreads / 32]) {
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;
  std::uint32_t bits = active ? rounding::bits_of(value) & 0x7FFFFFFFu : 0u;
  for (int offset = 16; offset > 0; offset /= 2) {
    const std::uint32_t other = __shfl_xor_sync(0xFFFFFFFFu, bits, offset);
    bits = other > bits ? other : bits;
  }
  if (lane == 0) largest[warp] = bits;
  __syncthreads();
  bits = 0;
  for (int w = 0; w < kThreads / 32; ++w) bits = largest[w] > bits ? largest[w] : bits;
  __syncthreads();  // (largest is filled again by the next call)
  return quant8::absmax_of_bits(bits);
}

// Block-wide: 8-bit array `codes` (of map `quantized`) of a 256-element block stored from the
// threads' values: the block's new absmax (written by thread 0) and each active element's code.
// Returns the element's value as stored (decoded again).
__device__ __forceinline__ float encode_block(void* codes, float* absmax, unsigned char quantized,
                                              index_t block, index_t i, float value, bool active,
                                              const float (&codec)[2][4][16]) {
  __shared__ std::uint32_t largest[kThreads / 32];
  const float block_max = block_absmax(value, active, largest);
  if (threadIdx.x == 0) absmax[block] = block_max;
  if (!active) return 0.0f;
  const int map = quantized == kSignedMap ? 0 : 1;
  const std::uint8_t code = quant8::encode_with(value, quant8::inverse_scale(block_max), map == 0,
                                                codec[map][2], codec[map][3]);
  static_cast<std::uint8_t*>(codes)[i] = code;
  return quant8::decode_with(code, block_max, map == 0, codec[map][0], codec[map][1]);
}

template <class Rule, unsigned kFlags, int kArrays>
__global__ void __launch_bounds__(kThreads)
    quantized_step_kernel(const QuantizedLaunchTable<kArrays> table, typename Rule::Hyper hyper,
                          DeviceScalars scalars) {
  if (!take_device_scalars(hyper, scalars)) return;
  const auto coef = Rule::template coef<float>(hyper);
  const float bound = grad_bound<float>(scalars);
  using R = optim::Registers<Rule, kFlags, float>;
  constexpr int kInputs = optim::Layout<Rule, kFlags>::kNumInputs;
  __shared__ float codec[2][4][16];
  load_codec(codec);
  const BlockChunk chunk = block_chunk(table);
  const int lo = chunk.tensor;
  const index_t begin = chunk.begin, end = chunk.end;
  void* const* arrays = table.arrays[lo];
  float* const* absmax = table.absmax[lo];
  float* const master = table.masters[lo];

  // (every thread takes every turn of this loop: the block synchronises in it)
  for (index_t first = begin; first < end; first += kThreads) {
    const index_t i = first + threadIdx.x;
    const index_t block = first / quant8::kBlock;
    const bool active = i < end;
    float v[kArrays];
    for (int k = 0; k < kArrays; ++k) {
      v[k] = !active ? 0.0f
             : table.quantized[k] != kNotQuantized
                 ? decode_element(arrays[k], table.quantized[k], absmax[k][block], i, codec)
                 : load_element(arrays, master, k, table.slot[k], i);
    }
    if (active) {
      R r = R::load([&](int slot) { return v[slot]; });
      r.update(coef, bound);
      r.store([&](int slot, float value) { v[slot] = value; });
    }
    for (int k = 1 + kInputs; k < kArrays; ++k) {
      if (table.quantized[k] != kNotQuantized) {
        encode_block(arrays[k], absmax[k], table.quantized[k], block, i, v[k], active, codec);
      }
    }
    if (!active) continue;
    for (int k = 0; k < kArrays; ++k) {
      if ((k != 0 && k <= kInputs) || table.quantized[k] != kNotQuantized) continue;
      store_element(table, lo, arrays, master, k, table.slot[k], i, v[k]);
    }
  }
}

template <class Rule, unsigned kFlags>
void launch_quantized(const typename Rule::Hyper& hyper, const StepArgs& args,
                      const DeviceScalars& scalars, cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  using Table = QuantizedLaunchTable<kArrays>;
  static_assert(sizeof(Table) <= 32764, "kernel parameters are limited to 32764 bytes");
  const Storage& s = *args.storage;
  Table table;
  copy_storage(table, s, kArrays);
  for (int k = 0; k < kArrays; ++k) table.quantized[k] = s.quantized[k];
  launch_tables(
      args, chunk_elements<float>(true), table,
      [&](int slot, index_t t) {
        add_stored_tensor(table, s, slot, t);
        for (int k = 0; k < kArrays; ++k) table.absmax[slot][k] = s.absmax[t * args.num_arrays + k];
      },
      [&](int blocks) {
        quantized_step_kernel<Rule, kFlags, kArrays>
            <<<blocks, kThreads, 0, stream>>>(table, hyper, scalars);
      });
}

}  // namespace gdfast::cuda
