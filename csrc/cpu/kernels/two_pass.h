// The loops of a rule whose update needs sums over each whole tensor first (kTensorSums, LAMB's
// trust ratio): pass 1 updates the states and sums, per chunk, the squares of the values the
// rule names (ChunkSquares: bitwise the same for any lane width and thread split); pass 2 writes
// the param from the states and its tensor's factor (StepArgs::tensor_factor), which the host
// makes from the sums in between (cpu/dispatch.h). float32 and float64 arrays, every state used.
// Included only by kernels.cpp.
#pragma once

#include <algorithm>

#include "core/step_args.h"
#include "cpu/kernel_table.h"
#include "cpu/kernels/elementwise.h"
#include "cpu/kernels/tensor_list.h"
#include "optim/layout.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

// Each lane of elements [0, n) of one tensor's range, whole lanes then a partial one, given to
// lane(i, count).
template <class L, class Fn>
GDFAST_INLINE void for_each_lane(index_t n, Fn&& lane) {
  index_t i = 0;
  for (; i + L::kLanes <= n; i += L::kLanes) lane(i, index_t{L::kLanes});
  if (i < n) lane(i, n - i);
}

template <class L, class T>
GDFAST_INLINE L load_lane(const T* p, index_t count) {
  return count == L::kLanes ? L::load(p) : L::load_partial(p, count);
}

template <class L, class T>
GDFAST_INLINE void store_lane(T* p, index_t count, L x) {
  if (count == L::kLanes) {
    L::store(p, x);
  } else {
    L::store_partial(p, count, x);
  }
}

template <class Rule, unsigned kFlags, class T>
struct TwoPass {
  using L = Lane<T>;
  using Layout = optim::Layout<Rule, kFlags>;
  static constexpr int kStates = Layout::kNumStates;
  static constexpr int kSums = Rule::kTensorSums;
  static_assert(Layout::kNumInputs == 1 && Layout::kNumUsed == kStates,
                "a two-pass rule reads one input (the gradient) and uses every state");
  using Coef = typename Rule::template Coef<T>;

  static T* array(const StepArgs& args, index_t t, int k, index_t first) {
    return static_cast<T*>(args.arrays[t * args.num_arrays + k]) + first;
  }

  // Pass 1 over elements [first, stop) of tensor t, within one chunk.
  static void moments(const StepArgs& args, index_t t, index_t first, index_t stop,
                      ChunkSquares<kSums>& sums) {
    const Coef coef = *static_cast<const Coef*>(args.coef);
    const L bound(static_cast<T>(args.grad_bound));
    const T* p = array(args, t, 0, first);
    const T* g = array(args, t, 1, first);
    T* states[kStates];
    for (int k = 0; k < kStates; ++k) states[k] = array(args, t, 2 + k, first);
    for_each_lane<L>(stop - first, [&](index_t i, index_t count) {
      L state[kStates];
      for (int k = 0; k < kStates; ++k) state[k] = load_lane<L>(states[k] + i, count);
      // (clipping by value: the gradient clamped as it is loaded, as every rule's is)
      const L grad = lane_min(bound, lane_max(-bound, load_lane<L>(g + i, count)));
      L summed[kSums];
      Rule::template moments<kFlags>(load_lane<L>(p + i, count), grad, state, coef, summed);
      for (int k = 0; k < kStates; ++k) store_lane(states[k] + i, count, state[k]);
      sums.add(summed, count);
    });
  }

  // Pass 1 over [begin, end) of the virtual concatenation, which starts at a chunk's start:
  // each chunk's sums into args.chunk_sums.
  static void run_moments(const StepArgs& args, index_t begin, index_t end) {
    for (index_t t = find_tensor(args.offsets, args.num_tensors, begin); begin < end; ++t) {
      const index_t stop = std::min(end, args.offsets[t + 1]) - args.offsets[t];
      for (index_t at = begin - args.offsets[t]; at < stop; at += kReduceChunk) {
        ChunkSquares<kSums> sums;
        moments(args, t, at, std::min(at + kReduceChunk, stop), sums);
        double* out = args.chunk_sums + (args.first_chunk[t] + at / kReduceChunk) * kSums;
        for (int s = 0; s < kSums; ++s) out[s] = sums.total(s);
      }
      begin = std::max(begin, args.offsets[t + 1]);
    }
  }

  // Pass 2 over [begin, end) of the virtual concatenation.
  static void run_apply(const StepArgs& args, index_t begin, index_t end) {
    const Coef coef = *static_cast<const Coef*>(args.coef);
    for (index_t t = find_tensor(args.offsets, args.num_tensors, begin); begin < end; ++t) {
      const index_t first = begin - args.offsets[t];
      const index_t stop = std::min(end, args.offsets[t + 1]) - args.offsets[t];
      T* p = array(args, t, 0, first);
      const T* states[kStates];
      for (int k = 0; k < kStates; ++k) states[k] = array(args, t, 2 + k, first);
      const L factor(static_cast<T>(args.tensor_factor[t]));
      for_each_lane<L>(stop - first, [&](index_t i, index_t count) {
        L state[kStates];
        for (int k = 0; k < kStates; ++k) state[k] = load_lane<L>(states[k] + i, count);
        L param = load_lane<L>(p + i, count);
        Rule::template apply<kFlags>(param, state, coef, factor);
        store_lane(p + i, count, param);
      });
      begin = std::max(begin, args.offsets[t + 1]);
    }
  }
};

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
