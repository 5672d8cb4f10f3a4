// The loop for blockwise 8-bit states (core/quant8.h): a few blocks at a time, each quantized
// state is decoded into a float32 buffer that stays in L1, the rule's one loop (elementwise.h or
// storage.h) runs over the group as if those states were float32 arrays, then each block's new
// absmax is found and the block encoded again. A block belongs to the thread whose element
// range holds its first element, so blocks are never split and the result does not depend on
// the thread count. Included only by kernels.cpp.
#pragma once

#include <algorithm>
#include <cstdint>

#include "core/quant8.h"
#include "core/step_args.h"
#include "cpu/kernels/elementwise.h"
#include "cpu/kernels/storage.h"
#include "optim/layout.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

// Blocks decoded together: 8 (2048 elements, 8 KiB per state) keep the rule's loop long and
// every buffer of Adam with amsgrad (24 KiB) in L1.
inline constexpr index_t kQuantGroup = 8 * quant8::kBlock;

// The blocks of tensor t (of `size` elements; arrays in kernel order at element 0) whose
// first element lies in [first, stop); with `sums`, monitoring sums of them.
template <class Rule, unsigned kFlags>
void run_quantized(const StepArgs& args, index_t t, void* const* arrays, index_t first,
                   index_t stop, index_t size, const typename Rule::template Coef<float>& coef,
                   MonitorSquares* sums) {
  using Layout = optim::Layout<Rule, kFlags>;
  constexpr int kArrays = Layout::kNumArrays;
  constexpr index_t kBlock = quant8::kBlock;
  const Storage& s = *args.storage;
  const index_t begin = (first + kBlock - 1) / kBlock * kBlock;
  const index_t end = std::min((stop + kBlock - 1) / kBlock * kBlock, size);
  if (begin >= end) return;

  // The rest of the call sees each quantized state as a float32 array (its buffer).
  Storage inner = s;
  bool plain = s.masters == nullptr;  // every array float32: the plain float32 loop
  for (int k = 0; k < kArrays; ++k) {
    if (s.quantized[k] != kNotQuantized) inner.slot[k] = Dtype::kFloat32;
    plain = plain && inner.slot[k] == Dtype::kFloat32;
  }
  alignas(64) float buffer[kArrays][kQuantGroup];
  float* const* absmax = s.absmax + t * args.num_arrays;

  for (index_t at = begin; at < end;) {
    // (groups end at multiples of kQuantGroup: never across a rounding stream's end, 2^32)
    const index_t group_end = std::min(end, (at / kQuantGroup + 1) * kQuantGroup);
    const index_t n = group_end - at;
    for (int k = 0; k < kArrays; ++k) {
      if (s.quantized[k] == kNotQuantized) continue;
      const auto* codes = static_cast<const std::uint8_t*>(arrays[k]);
      for (index_t b = at; b < group_end; b += kBlock) {
        const index_t count = std::min(kBlock, group_end - b);
        if (s.quantized[k] == kSignedMap) {
          Quant8::decode<true>(codes + b, absmax[k][b / kBlock], buffer[k] + (b - at), count);
        } else {
          Quant8::decode<false>(codes + b, absmax[k][b / kBlock], buffer[k] + (b - at), count);
        }
      }
    }
    if (plain) {
      typename Lanes<Rule, kFlags, float>::Arrays p;
      p.grad_bound = static_cast<float>(args.grad_bound);
      for (int k = 0; k < kArrays; ++k) {
        p.at[k] = s.quantized[k] != kNotQuantized ? buffer[k] : static_cast<float*>(arrays[k]) + at;
      }
      run_lanes<Lanes<Rule, kFlags, float>>(p, n, coef, 0, sums);
    } else {
      auto a = stored_arrays<Rule, kFlags>(inner, t, arrays, at, args.grad_bound);
      for (int k = 0; k < kArrays; ++k) {
        if (s.quantized[k] != kNotQuantized) a.at[k] = buffer[k];
      }
      run_stored_arrays<Rule, kFlags>(a, n, coef, inner, 0, sums);
    }
    for (int k = 0; k < kArrays; ++k) {
      if (s.quantized[k] == kNotQuantized || k <= Layout::kNumInputs) continue;
      auto* codes = static_cast<std::uint8_t*>(arrays[k]);
      for (index_t b = at; b < group_end; b += kBlock) {
        const index_t count = std::min(kBlock, group_end - b);
        const float* values = buffer[k] + (b - at);
        const float block_max = Quant8::absmax(values, count);
        absmax[k][b / kBlock] = block_max;
        if (s.quantized[k] == kSignedMap) {
          Quant8::encode<true>(values, block_max, codes + b, count);
        } else {
          Quant8::encode<false>(values, block_max, codes + b, count);
        }
      }
    }
    at = group_end;
  }
}

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
