// The one CPU loop: applies a rule to every element of a range of a tensor list, a SIMD
// lane at a time; the tail goes through the same rule on a partial lane, so the result at
// an index never depends on the array length, alignment or how the work was split.
// Included only by kernels.cpp, inside the per-ISA compilation.
#pragma once

#include <utility>

#include "core/step_args.h"
#include "optim/layout.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

// A hint that `p` will be read (and, if `written`, written) soon; a no-op where unsupported.
// Forced inline: GCC finds a function of __builtin_prefetch alone free of side effects and drops
// calls to it that it has not inlined yet (it did so in every loop of two_pass.h).
GDFAST_INLINE void prefetch_hint(const void* p, bool written) {
#if defined(__GNUC__) || defined(__clang__)
  if (written) {
    __builtin_prefetch(p, 1, 3);
  } else {
    __builtin_prefetch(p, 0, 3);
  }
#else
  (void)p;
  (void)written;
#endif
}

// Sums of squares of kSums values of each element of a chunk (kReduceChunk elements of one
// tensor), as a loop computes them: monitoring's gradients, updates and new params
// (StepArgs::chunk_sums), a two-pass rule's per-tensor sums (kernels/two_pass.h). Element i of
// the chunk goes to accumulator i % 16 of each sum, in order, and the 16 are added pairwise at
// the end, so a sum depends on the elements alone: never on the lane width or how the chunk's
// elements were handed to the loop (in order, from the chunk's start).
template <int kSums>
struct ChunkSquares {
  static constexpr int kAccumulators = 16;
  double acc[kSums][kAccumulators] = {};
  index_t next = 0;  // the chunk position of the next element

  // The squares of a lane's elements in double (exact for a float32 x), a lane of doubles at a
  // time, in element order.
  template <class L>
  static constexpr int kWidePerLane = L::kLanes / Lane<double>::kLanes;
  template <class L>
  GDFAST_INLINE static void widened_squares(L x, Lane<double> (&out)[kWidePerLane<L>]) {
    using Wide = Lane<double>;
    alignas(64) typename L::T values[L::kLanes];
    alignas(64) double wide[L::kLanes];
    L::store(values, x);
    for (int j = 0; j < L::kLanes; ++j) wide[j] = static_cast<double>(values[j]);
    for (int q = 0; q < kWidePerLane<L>; ++q) {
      const Wide w = Wide::load(wide + q * Wide::kLanes);
      out[q] = w * w;
    }
  }

  // The first `count` elements of each lane (the elements at next, next + 1, ...).
  template <class L>
  GDFAST_INLINE void add_inline(const L (&lanes)[kSums], index_t count) {
    using Wide = Lane<double>;
    for (int s = 0; s < kSums; ++s) {
      if (count == L::kLanes && next % kAccumulators + L::kLanes <= kAccumulators) {
        // Whole lanes from a multiple of their width: a lane of doubles at a time.
        Wide squares[kWidePerLane<L>];
        widened_squares(lanes[s], squares);
        double* a = acc[s] + next % kAccumulators;
        for (int q = 0; q < kWidePerLane<L>; ++q) {
          Wide::store(a + q * Wide::kLanes, Wide::load(a + q * Wide::kLanes) + squares[q]);
        }
      } else {
        alignas(64) typename L::T values[L::kLanes];
        L::store(values, lanes[s]);
        for (index_t j = 0; j < count; ++j) {
          const double x = values[j];
          acc[s][(next + j) % kAccumulators] += x * x;
        }
      }
    }
    next += count;
  }
  // The same, called: for loops that sum only in some calls (monitoring).
  template <class L>
  GDFAST_NOINLINE void add(const L (&lanes)[kSums], index_t count) {
    add_inline(lanes, count);
  }
  double total(int s) const {
    double a[kAccumulators];
    for (int j = 0; j < kAccumulators; ++j) a[j] = acc[s][j];
    for (int width = kAccumulators / 2; width >= 1; width /= 2) {
      for (int j = 0; j < width; ++j) a[j] += a[j + width];
    }
    return a[0];
  }
};

using MonitorSquares = ChunkSquares<kMonitorSums>;

// The arrays of one tensor's range, element 0 of the range first, every one holding T, and
// the call's clipping bound of the gradients (StepArgs::grad_bound).
template <class T, int kArrays>
struct Pointers {
  T* at[kArrays];
  T grad_bound;
};

// One SIMD lane of every array of a tensor (optim::Registers), loaded and stored whole or
// partially (the tail).
template <class Rule, unsigned kFlags, class T>
struct Lanes : optim::Registers<Rule, kFlags, Lane<T>> {
  using Base = optim::Registers<Rule, kFlags, Lane<T>>;
  using L = Lane<T>;
  using Layout = optim::Layout<Rule, kFlags>;
  using Arrays = Pointers<T, Layout::kNumArrays>;
  static constexpr index_t kLanes = L::kLanes;

  template <bool kPartial = false>
  GDFAST_INLINE static Lanes load(const Arrays& arrays, index_t i, index_t count = L::kLanes) {
    return {Base::load([&](int slot) {
      if constexpr (kPartial) {
        return L::load_partial(arrays.at[slot] + i, count);
      } else {
        return L::load(arrays.at[slot] + i);
      }
    })};
  }
  template <bool kPartial = false>
  GDFAST_INLINE void update_and_store(const Arrays& arrays, index_t i,
                                      const typename Rule::template Coef<T>& coef,
                                      index_t count = L::kLanes) {
    this->update(coef, arrays.grad_bound);
    this->store([&](int slot, L value) {
      if constexpr (kPartial) {
        L::store_partial(arrays.at[slot] + i, count, value);
      } else {
        L::store(arrays.at[slot] + i, value);
      }
    });
  }
  // A hint that element i of every array will be needed soon: inputs (slots 1..) are only read.
  static void prefetch(const Arrays& arrays, index_t i) {
    for (int k = 0; k < Layout::kNumArrays; ++k) {
      prefetch_hint(arrays.at[k] + i, k == 0 || k > Layout::kNumInputs);
    }
  }
};

// One lane's update, stored, and (when `sums` is set) its monitoring sums added.
template <bool kPartial, class X, class Coef>
GDFAST_INLINE void step_lane(X& lane, const typename X::Arrays& arrays, index_t i, const Coef& coef,
                             MonitorSquares* sums, index_t count = X::kLanes) {
  const auto before = lane.param;
  lane.template update_and_store<kPartial>(arrays, i, coef, count);
  if constexpr (X::Layout::kNumInputs > 0) {  // (the benchmark's Stream has no gradient)
    if (sums == nullptr) return;              // (the same branch every lane: predicted)
    using L = decltype(before);
    const L grad_update_param[kMonitorSums] = {lane.in[0], lane.param - before, lane.param};
    sums->add(grad_update_param, count);
  }
}

// The loop: X (Lanes, or StoredLanes of storage.h) one lane at a time over elements [0, n) of
// its arrays, prefetching `ahead` elements on (0: not); with `sums`, monitoring sums of them.
template <class X, class Coef>
void run_lanes(const typename X::Arrays& arrays_ref, index_t n, const Coef& coef_ref, index_t ahead,
               MonitorSquares* sums = nullptr) {
  constexpr index_t kLanes = X::kLanes;
  // Local copies: stores to the arrays cannot alias them, so they stay in registers.
  const auto coef = coef_ref;
  const auto arrays = arrays_ref;
  index_t i = 0;
  if (n >= kLanes) {
    // Software-pipelined: the next lane is loaded before this one is stored. The arrays never
    // overlap, so this is only a reordering; it keeps a load from queueing behind an older
    // store to an address with the same low 12 bits (the arrays of one step usually sit at
    // the same offset within a page), which cost up to 20% here.
    X current = X::load(arrays, 0);
    for (; i + 2 * kLanes <= n; i += kLanes) {
      if (ahead != 0 && i + ahead < n) X::prefetch(arrays, i + ahead);
      const X next = X::load(arrays, i + kLanes);
      step_lane<false>(current, arrays, i, coef, sums);
      current = next;
    }
    step_lane<false>(current, arrays, i, coef, sums);
    i += kLanes;
  }
  if (i < n) {
    X tail = X::template load<true>(arrays, i, n - i);
    step_lane<true>(tail, arrays, i, coef, sums, n - i);
  }
}

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
