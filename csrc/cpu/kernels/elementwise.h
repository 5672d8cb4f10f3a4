// The one CPU loop: applies a rule to every element of a range of a tensor list, a SIMD
// lane at a time; the tail goes through the same rule on a partial lane, so the result at
// an index never depends on the array length, alignment or how the work was split.
// Included only by kernels.cpp, inside the per-ISA compilation.
#pragma once

#include <utility>

#include "core/step_args.h"
#include "optim/layout.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

// One SIMD lane of every array of a tensor (optim::Registers), loaded and stored whole or
// partially (the tail).
template <class Rule, unsigned kFlags, class T>
struct Lanes : optim::Registers<Rule, kFlags, Lane<T>> {
  using Base = optim::Registers<Rule, kFlags, Lane<T>>;
  using L = Lane<T>;

  template <bool kPartial = false>
  static Lanes load(T* const* arrays, index_t i, index_t count = L::kLanes) {
    return {Base::load([&](int slot) {
      if constexpr (kPartial) {
        return L::load_partial(arrays[slot] + i, count);
      } else {
        return L::load(arrays[slot] + i);
      }
    })};
  }
  template <bool kPartial = false>
  void update_and_store(T* const* arrays, index_t i, const typename Rule::template Coef<T>& coef,
                        index_t count = L::kLanes) {
    this->update(coef);
    this->store([&](int slot, L value) {
      if constexpr (kPartial) {
        L::store_partial(arrays[slot] + i, count, value);
      } else {
        L::store(arrays[slot] + i, value);
      }
    });
  }
};

// A hint that `p` will be read (and, if `written`, written) soon; a no-op where unsupported.
template <bool kWritten, class T>
inline void prefetch(const T* p) {
#if defined(__GNUC__) || defined(__clang__)
  __builtin_prefetch(p, kWritten ? 1 : 0, 3);
#else
  (void)p;
#endif
}

template <class Rule, unsigned kFlags, class T>
void run_segment(T* const* arrays_ref, index_t n, const typename Rule::template Coef<T>& coef_ref,
                 index_t ahead) {
  using X = Lanes<Rule, kFlags, T>;
  using L = optim::Layout<Rule, kFlags>;
  constexpr index_t kLanes = Lane<T>::kLanes;
  constexpr int kArrays = L::kNumArrays;
  // Local copies: stores to the arrays cannot alias them, so they stay in registers.
  const auto coef = coef_ref;
  T* arrays[kArrays];
  for (int k = 0; k < kArrays; ++k) arrays[k] = arrays_ref[k];
  index_t i = 0;
  if (n >= kLanes) {
    // Software-pipelined: the next lane is loaded before this one is stored. The arrays never
    // overlap, so this is only a reordering; it keeps a load from queueing behind an older
    // store to an address with the same low 12 bits (the arrays of one step usually sit at
    // the same offset within a page), which cost up to 20% here.
    X current = X::load(arrays, 0);
    for (; i + 2 * kLanes <= n; i += kLanes) {
      // `ahead` elements on, one lane per iteration; inputs (slots 1..) are only read.
      if (ahead != 0 && i + ahead < n) {
        prefetch<true>(arrays[0] + i + ahead);
        for (int k = 1; k < kArrays; ++k) {
          if (k <= L::kNumInputs) {
            prefetch<false>(arrays[k] + i + ahead);
          } else {
            prefetch<true>(arrays[k] + i + ahead);
          }
        }
      }
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

// Index of the tensor holding virtual element `at`: the last t with offsets[t] <= at.
inline index_t find_tensor(const index_t* offsets, index_t num_tensors, index_t at) {
  index_t lo = 0, hi = num_tensors;  // invariant: offsets[lo] <= at < offsets[hi]
  while (hi - lo > 1) {
    const index_t mid = lo + (hi - lo) / 2;
    if (offsets[mid] <= at) {
      lo = mid;
    } else {
      hi = mid;
    }
  }
  return lo;
}

template <class Rule, unsigned kFlags, class T>
void run_range(const StepArgs& args, index_t begin, index_t end) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  const auto& coef = *static_cast<const typename Rule::template Coef<T>*>(args.coef);
  for (index_t t = find_tensor(args.offsets, args.num_tensors, begin); begin < end; ++t) {
    const index_t tensor_begin = args.offsets[t];
    const index_t segment_end = end < args.offsets[t + 1] ? end : args.offsets[t + 1];
    if (segment_end <= begin) continue;  // an empty tensor
    T* arrays[kArrays];
    for (int k = 0; k < kArrays; ++k) {
      arrays[k] = static_cast<T*>(args.arrays[t * args.num_arrays + k]) + (begin - tensor_begin);
    }
    run_segment<Rule, kFlags, T>(arrays, segment_end - begin, coef,
                                 args.prefetch_bytes / static_cast<index_t>(sizeof(T)));
    begin = segment_end;
  }
}

template <class Rule, class T, class FlagSequence>
struct FlagTable;

template <class Rule, class T, unsigned... kFlags>
struct FlagTable<Rule, T, std::integer_sequence<unsigned, kFlags...>> {
  static constexpr StepFn fns[] = {&run_range<Rule, kFlags, T>...};
};

template <class Rule, class T>
constexpr const StepFn* flag_table() {
  return FlagTable<Rule, T, std::make_integer_sequence<unsigned, 1u << Rule::kNumFlags>>::fns;
}

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
