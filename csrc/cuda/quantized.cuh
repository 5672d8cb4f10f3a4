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

template <class Rule, unsigned kFlags, int kArrays>
__global__ void __launch_bounds__(kThreads)
    quantized_step_kernel(const QuantizedLaunchTable<kArrays> table, typename Rule::Hyper hyper,
                          DeviceScalars scalars) {
  if (!take_device_scalars(hyper, scalars)) return;
  const auto coef = Rule::template coef<float>(hyper);
  const float bound = grad_bound<float>(scalars);
  using R = optim::Registers<Rule, kFlags, float>;
  constexpr int kInputs = optim::Layout<Rule, kFlags>::kNumInputs;
  constexpr int kWarps = kThreads / 32;
  __shared__ std::uint32_t largest[kArrays][kWarps];
  // Each map's constants (core/quant8.h), computed once per thread block: [map: 0 signed,
  // 1 unsigned][decode slope, decode offset, encode slope, encode offset][p or z].
  __shared__ float codec[2][4][16];
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

  const BlockChunk chunk = block_chunk(table);
  const int lo = chunk.tensor;
  const index_t begin = chunk.begin, end = chunk.end;
  void* const* arrays = table.arrays[lo];
  float* const* absmax = table.absmax[lo];
  float* const master = table.masters[lo];
  const int lane = static_cast<int>(threadIdx.x) % 32, warp = static_cast<int>(threadIdx.x) / 32;

  // (every thread takes every turn of this loop: the block synchronises in it)
  for (index_t first = begin; first < end; first += kThreads) {
    const index_t i = first + threadIdx.x;
    const index_t block = first / quant8::kBlock;
    const bool active = i < end;
    float v[kArrays];
    for (int k = 0; k < kArrays; ++k) {
      v[k] = 0.0f;
      if (!active) continue;
      if (table.quantized[k] != kNotQuantized) {
        const int map = table.quantized[k] == kSignedMap ? 0 : 1;
        v[k] = quant8::decode_with(static_cast<const std::uint8_t*>(arrays[k])[i], absmax[k][block],
                                   map == 0, codec[map][0], codec[map][1]);
      } else {
        v[k] = load_element(arrays, master, k, table.slot[k], i);
      }
    }
    if (active) {
      R r = R::load([&](int slot) { return v[slot]; });
      r.update(coef, bound);
      r.store([&](int slot, float value) { v[slot] = value; });
    }
    // Each 8-bit state's largest |value| over the block, as bits (Inf and NaN above all).
    for (int k = 1 + kInputs; k < kArrays; ++k) {
      if (table.quantized[k] == kNotQuantized) continue;
      std::uint32_t bits = active ? rounding::bits_of(v[k]) & 0x7FFFFFFFu : 0u;
      for (int offset = 16; offset > 0; offset /= 2) {
        const std::uint32_t other = __shfl_xor_sync(0xFFFFFFFFu, bits, offset);
        bits = other > bits ? other : bits;
      }
      if (lane == 0) largest[k][warp] = bits;
    }
    __syncthreads();
    for (int k = 1 + kInputs; k < kArrays; ++k) {
      if (table.quantized[k] == kNotQuantized) continue;
      std::uint32_t bits = 0;
      for (int w = 0; w < kWarps; ++w) bits = largest[k][w] > bits ? largest[k][w] : bits;
      const float block_max = quant8::absmax_of_bits(bits);
      if (threadIdx.x == 0) absmax[k][block] = block_max;
      if (active) {
        const int map = table.quantized[k] == kSignedMap ? 0 : 1;
        static_cast<std::uint8_t*>(arrays[k])[i] = quant8::encode_with(
            v[k], quant8::inverse_scale(block_max), map == 0, codec[map][2], codec[map][3]);
      }
    }
    __syncthreads();  // (largest is filled again on the next turn)
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
