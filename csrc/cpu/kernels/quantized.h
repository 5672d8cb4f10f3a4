// The loops' side of blockwise 8-bit states (core/quant8.h): a few blocks at a time, each
// quantized state is decoded into a float32 buffer that stays in L1, the rule's loop runs over
// the group as if those states were float32 arrays, then each block's new absmax is found and
// the block encoded again. A block belongs to the thread whose element range holds its first
// element, so blocks are never split and the result does not depend on the thread count.
// QuantizedStates is the buffers and their decoding and encoding (two_pass.h uses it too);
// run_quantized the elementwise rules' loop. Included only by kernels.cpp.
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

// The 8-bit states of one tensor t of a call (kArrays arrays, kernel order), each with a float32
// buffer of up to kQuantGroup elements.
template <int kArrays>
struct QuantizedStates {
  const Storage& s;
  Storage inner;         // the call's, each quantized state a float32 array (its buffer)
  bool plain;            // every array of `inner` float32 and no master: the plain float32 loop
  void* const* arrays;   // tensor t's, at element 0
  float* const* absmax;  // tensor t's blocks' maxima, per array (of the quantized ones)
  alignas(64) float buffer[kArrays][kQuantGroup];

  QuantizedStates(const StepArgs& args, index_t t)
      : s(*args.storage),
        inner(s),
        plain(s.masters == nullptr),
        arrays(args.arrays + t * args.num_arrays),
        absmax(s.absmax + t * args.num_arrays) {
    for (int k = 0; k < kArrays; ++k) {
      if (quantized(k)) inner.slot[k] = Dtype::kFloat32;
      plain = plain && inner.slot[k] == Dtype::kFloat32;
    }
  }

  bool quantized(int k) const { return s.quantized[k] != kNotQuantized; }

  // Elements [at, end) (at most kQuantGroup, within one group) of every quantized state, into
  // its buffer from its start; `at` need not start a block.
  void decode(index_t at, index_t end) {
    constexpr index_t kBlock = quant8::kBlock;
    for (int k = 0; k < kArrays; ++k) {
      if (!quantized(k)) continue;
      const auto* codes = static_cast<const std::uint8_t*>(arrays[k]);
      for (index_t b = at; b < end;) {
        const index_t stop = std::min(end, (b / kBlock + 1) * kBlock);
        float* out = buffer[k] + (b - at);
        if (s.quantized[k] == kSignedMap) {
          Quant8::decode<true>(codes + b, absmax[k][b / kBlock], out, stop - b);
        } else {
          Quant8::decode<false>(codes + b, absmax[k][b / kBlock], out, stop - b);
        }
        b = stop;
      }
    }
  }

  // The blocks [at, end) (from a block's start to one's end or the tensor's) of every quantized
  // state the rule writes (the slots after its `inputs`), encoded from its buffer with each
  // block's new maximum.
  void encode(index_t at, index_t end, int inputs) {
    constexpr index_t kBlock = quant8::kBlock;
    for (int k = 1 + inputs; k < kArrays; ++k) {
      if (!quantized(k)) continue;
      auto* codes = static_cast<std::uint8_t*>(arrays[k]);
      for (index_t b = at; b < end; b += kBlock) {
        const index_t count = std::min(kBlock, end - b);
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
  }

  // storage.h's arrays of tensor t from element `at` on, each quantized state at its buffer.
  template <class Rule, unsigned kFlags>
  typename StoredLanes<Rule, kFlags, AnyRecipe>::Arrays stored(index_t t, index_t at,
                                                               double grad_bound) {
    auto a = stored_arrays<Rule, kFlags>(inner, t, arrays, at, grad_bound);
    for (int k = 0; k < kArrays; ++k) {
      if (quantized(k)) a.at[k] = buffer[k];
    }
    return a;
  }
};

// The blocks of tensor t (of `size` elements) whose first element lies in [first, stop); with
// `sums`, monitoring sums of them.
template <class Rule, unsigned kFlags>
void run_quantized(const StepArgs& args, index_t t, index_t first, index_t stop, index_t size,
                   const typename Rule::template Coef<float>& coef, MonitorSquares* sums) {
  using Layout = optim::Layout<Rule, kFlags>;
  constexpr int kArrays = Layout::kNumArrays;
  constexpr index_t kBlock = quant8::kBlock;
  const index_t begin = (first + kBlock - 1) / kBlock * kBlock;
  const index_t end = std::min((stop + kBlock - 1) / kBlock * kBlock, size);
  if (begin >= end) return;
  QuantizedStates<kArrays> q(args, t);
  for (index_t at = begin; at < end;) {
    // (groups end at multiples of kQuantGroup: never across a rounding stream's end, 2^32)
    const index_t group_end = std::min(end, (at / kQuantGroup + 1) * kQuantGroup);
    const index_t n = group_end - at;
    q.decode(at, group_end);
    if (q.plain) {
      typename Lanes<Rule, kFlags, float>::Arrays p;
      p.grad_bound = static_cast<float>(args.grad_bound);
      for (int k = 0; k < kArrays; ++k) {
        p.at[k] = q.quantized(k) ? q.buffer[k] : static_cast<float*>(q.arrays[k]) + at;
      }
      run_lanes<Lanes<Rule, kFlags, float>>(p, n, coef, 0, sums);
    } else {
      run_stored_arrays<Rule, kFlags>(q.template stored<Rule, kFlags>(t, at, args.grad_bound), n,
                                      coef, q.inner, 0, sums);
    }
    q.encode(at, group_end, Layout::kNumInputs);
    at = group_end;
  }
}

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
