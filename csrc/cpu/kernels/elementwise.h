// The one CPU loop: applies a rule to every element of a range of a tensor list, a SIMD
// lane at a time; the tail goes through the same rule on a partial lane, so the result at
// an index never depends on the array length, alignment or how the work was split.
// Included only by kernels.cpp, inside the per-ISA compilation.
#pragma once

#include <utility>

#include "core/step_args.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

template <class Rule, unsigned kFlags, class T, bool kPartial>
inline void apply_lane(T* const* arrays, index_t i, index_t count,
                       const typename Rule::template Coef<T>& coef) {
  using L = Lane<T>;
  constexpr int kStates = Rule::template num_states<kFlags>();
  const auto load = [&](const T* base) {
    if constexpr (kPartial) {
      return L::load_partial(base + i, count);
    } else {
      return L::load(base + i);
    }
  };
  const auto store = [&](T* base, L value) {
    if constexpr (kPartial) {
      L::store_partial(base + i, count, value);
    } else {
      L::store(base + i, value);
    }
  };
  L param = load(arrays[0]);
  L state[kStates + 1];
  for (int k = 0; k < kStates; ++k) state[k] = load(arrays[2 + k]);
  Rule::template update<kFlags>(param, load(arrays[1]), state, coef);
  store(arrays[0], param);
  for (int k = 0; k < kStates; ++k) store(arrays[2 + k], state[k]);
}

template <class Rule, unsigned kFlags, class T>
void run_segment(T* const* arrays_ref, index_t n,
                 const typename Rule::template Coef<T>& coef_ref) {
  constexpr index_t kLanes = Lane<T>::kLanes;
  constexpr int kArrays = 2 + Rule::template num_states<kFlags>();
  // Local copies: stores to the arrays cannot alias them, so they stay in registers.
  const auto coef = coef_ref;
  T* arrays[kArrays];
  for (int k = 0; k < kArrays; ++k) arrays[k] = arrays_ref[k];
  index_t i = 0;
  for (; i + kLanes <= n; i += kLanes) apply_lane<Rule, kFlags, T, false>(arrays, i, kLanes, coef);
  if (i < n) apply_lane<Rule, kFlags, T, true>(arrays, i, n - i, coef);
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
  constexpr int kArrays = 2 + Rule::template num_states<kFlags>();
  const auto& coef = *static_cast<const typename Rule::template Coef<T>*>(args.coef);
  for (index_t t = find_tensor(args.offsets, args.num_tensors, begin); begin < end; ++t) {
    const index_t tensor_begin = args.offsets[t];
    const index_t segment_end = end < args.offsets[t + 1] ? end : args.offsets[t + 1];
    if (segment_end <= begin) continue;  // an empty tensor
    T* arrays[kArrays];
    for (int k = 0; k < kArrays; ++k) {
      arrays[k] = static_cast<T*>(args.arrays[t * args.num_arrays + k]) + (begin - tensor_begin);
    }
    run_segment<Rule, kFlags, T>(arrays, segment_end - begin, coef);
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
