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
inline void prefetch_hint(const void* p, bool written) {
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

// The loop: X (Lanes, or StoredLanes of storage.h) one lane at a time over elements [0, n) of
// its arrays, prefetching `ahead` elements on (0: not).
template <class X, class Coef>
void run_lanes(const typename X::Arrays& arrays_ref, index_t n, const Coef& coef_ref,
               index_t ahead) {
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
      current.update_and_store(arrays, i, coef);
      current = next;
    }
    current.update_and_store(arrays, i, coef);
    i += kLanes;
  }
  if (i < n) {
    X tail = X::template load<true>(arrays, i, n - i);
    tail.template update_and_store<true>(arrays, i, coef, n - i);
  }
}

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
