// The lanes of a call with narrow arrays (bfloat16/float16 params, grads or states) or a
// float32 master copy of the param: each array is widened to float32 as it is loaded and
// narrowed as it is stored (Narrow16 of the lane header: to nearest even, or stochastically),
// inside the rule's one loop (run_lanes), so the conversions overlap the rule's arithmetic.
// The common storage combinations (core/storage_recipe.h) are compiled in on the vector
// levels; any other reads each array's storage type from the call (a branch per array and
// lane, the same for the whole call), so each rule is not compiled once per combination of
// storage types.
// Included only by kernels.cpp.
#pragma once

#include <algorithm>
#include <cstdint>
#include <tuple>
#include <utility>

#include "core/rounding.h"
#include "core/step_args.h"
#include "core/storage_recipe.h"
#include "cpu/kernels/elementwise.h"
#include "optim/layout.h"
#include "optim/rule_traits.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

// The arrays of one tensor's range for StoredLanes: element 0 of the range first. kStreams:
// the most stochastic-rounding streams a rule can use (a stream serves two roles).
template <int kArrays, int kStreams>
struct StoredPointers {
  void* at[kArrays];
  Dtype type[kArrays];
  float* master;     // the param's float32 master copy (then at[0] is only written)
  index_t first;     // the range's first element's index in its tensor
  float grad_bound;  // the call's clipping bound of the gradients (StepArgs::grad_bound)
  // Stochastic rounding: each array's role (read only for the narrow written ones), and the
  // keys of the streams those use.
  bool stochastic;
  int num_streams;
  unsigned role[kArrays];
  std::uint32_t key[kStreams];
};

template <class Rule, unsigned kFlags, class R>
struct StoredLanes : optim::Registers<Rule, kFlags, Lane<float>> {
  using Base = optim::Registers<Rule, kFlags, Lane<float>>;
  using L = Lane<float>;
  using Layout = optim::Layout<Rule, kFlags>;
  static constexpr int kStreams = (1 + Layout::kNumStates + 1) / 2;  // roles 0 .. kNumStates
  using Arrays = StoredPointers<Layout::kNumArrays, kStreams>;
  static constexpr index_t kLanes = L::kLanes;

  static constexpr Kind kind(int slot) { return R::kind(slot, Layout::kNumInputs); }

  // Where an array of the lane is loaded from and stored to: float32 memory (`wide`, where the
  // param's master copy counts as the param's), else 16-bit memory of type `narrow`.
  struct Place {
    float* wide;
    std::uint16_t* narrow;
    Dtype type;
  };
  template <int kSlot>
  GDFAST_INLINE static Place place(const Arrays& a, index_t i) {
    constexpr Kind k = kind(kSlot);
    auto* const narrow = static_cast<std::uint16_t*>(a.at[kSlot]) + i;
    if constexpr (k == Kind::kFloat32) {
      return {static_cast<float*>(a.at[kSlot]) + i, nullptr, Dtype::kFloat32};
    } else if constexpr (k == Kind::kBfloat16 || k == Kind::kFloat16) {
      return {nullptr, narrow, narrow_type(k)};
    } else if constexpr (is_master(k)) {
      return {a.master + i, narrow, narrow_type(k)};
    } else if (kSlot == 0 && a.master != nullptr) {  // as the call says
      return {a.master + i, narrow, a.type[kSlot]};
    } else if (a.type[kSlot] == Dtype::kFloat32) {
      return {static_cast<float*>(a.at[kSlot]) + i, nullptr, Dtype::kFloat32};
    } else {
      return {nullptr, narrow, a.type[kSlot]};
    }
  }

  template <bool kPartial = false>
  GDFAST_INLINE static StoredLanes load(const Arrays& a, index_t i, index_t count = L::kLanes) {
    return {Base::load([&](auto slot) {
      const Place at = place<decltype(slot)::value>(a, i);
      if (at.wide != nullptr) return kPartial ? L::load_partial(at.wide, count) : L::load(at.wide);
      return Narrow16::load(at.type, at.narrow, kPartial ? count : kLanes);
    })};
  }

  template <bool kPartial = false>
  GDFAST_INLINE void update_and_store(const Arrays& a, index_t i,
                                      const typename Rule::template Coef<float>& coef,
                                      index_t count = L::kLanes) {
    this->update(coef, a.grad_bound);
    typename Narrow16::Random bits[kStreams] = {};
    if (a.stochastic) {
      for (int k = 0; k < a.num_streams; ++k) bits[k] = Narrow16::random(a.key[k], a.first + i);
    }
    this->store([&](auto slot, L value) {
      constexpr int kSlot = decltype(slot)::value;
      const Place at = place<kSlot>(a, i);
      const index_t n = kPartial ? count : kLanes;
      if (at.wide != nullptr) {
        if (kPartial) {
          L::store_partial(at.wide, n, value);
        } else {
          L::store(at.wide, value);
        }
      }
      if (at.narrow == nullptr) return;
      // A param written from its master copy rounds to nearest: it is that copy, rounded.
      if (a.stochastic && at.wide == nullptr) {
        const unsigned role = a.role[kSlot];
        const auto random16 = Narrow16::random16(bits[role / 2], role);
        Narrow16::store(at.type, at.narrow, value, &random16, n);
      } else {
        Narrow16::store(at.type, at.narrow, value, nullptr, n);
      }
    });
  }

  // A hint that element i of every array will be needed soon (inputs are only read).
  static void prefetch(const Arrays& a, index_t i) {
    for_each_slot([&](auto slot) {
      constexpr int kSlot = decltype(slot)::value;
      const Place at = place<kSlot>(a, i);
      const bool written = kSlot == 0 || kSlot > Layout::kNumInputs;
      if (at.wide != nullptr) prefetch_hint(at.wide, written);
      if (at.narrow != nullptr) prefetch_hint(at.narrow, written);
    });
  }

 private:
  template <class Fn>
  static void for_each_slot(Fn&& fn) {
    optim::for_each_index(fn, std::make_integer_sequence<int, Layout::kNumArrays>{});
  }
};

// Recipes are for speed alone (the general loop computes the same bits): an unoptimized
// build (the sanitizers' Debug one) leaves them out, which saves two thirds of its compile time.
#if defined(NDEBUG)
inline constexpr bool kRecipes = true;
#else
inline constexpr bool kRecipes = false;
#endif

template <class Rule, unsigned kFlags, class... Rs>
bool run_recipe(const typename StoredLanes<Rule, kFlags, AnyRecipe>::Arrays& a, index_t n,
                const typename Rule::template Coef<float>& coef, const Storage& s, index_t ahead,
                MonitorSquares* sums, std::tuple<Rs...>*) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  constexpr int kInputs = optim::Layout<Rule, kFlags>::kNumInputs;
  const bool master = a.master != nullptr;
  return ((matches<Rs>(s, master, kArrays, kInputs) &&
           (run_lanes<StoredLanes<Rule, kFlags, Rs>>(a, n, coef, ahead, sums), true)) ||
          ...);
}

// The arrays of elements [first, ...) of tensor t, whose arrays (kernel order, at element 0)
// are `arrays`, stored as `s` says; the gradients clamped to [-grad_bound, grad_bound].
template <class Rule, unsigned kFlags>
typename StoredLanes<Rule, kFlags, AnyRecipe>::Arrays stored_arrays(const Storage& s, index_t t,
                                                                    void* const* arrays,
                                                                    index_t first,
                                                                    double grad_bound) {
  using X = StoredLanes<Rule, kFlags, AnyRecipe>;
  typename X::Arrays a{};
  a.master = s.masters != nullptr ? static_cast<float*>(s.masters[t]) + first : nullptr;
  a.first = first;
  a.grad_bound = static_cast<float>(grad_bound);
  for (int k = 0; k < X::Layout::kNumArrays; ++k) {
    a.type[k] = s.slot[k];
    // (an 8-bit state's codes: the caller points the slot at its decoded buffer)
    a.at[k] = s.quantized[k] != kNotQuantized
                  ? nullptr
                  : static_cast<char*>(arrays[k]) + first * dtype_size(s.slot[k]);
    a.role[k] = s.role[k];
    const bool written = k == 0 || k > X::Layout::kNumInputs;
    if (written && s.slot[k] != Dtype::kFloat32 && !(k == 0 && a.master != nullptr)) {
      a.num_streams = std::max(a.num_streams, static_cast<int>(s.role[k]) / 2 + 1);
    }
  }
  a.stochastic = s.stochastic && a.num_streams > 0;
  if (a.stochastic) {
    const std::uint64_t param_key = rounding::param_key(s.seed, s.step, s.keys[t]);
    for (int k = 0; k < a.num_streams; ++k) {
      a.key[k] = rounding::stream_key(param_key, static_cast<unsigned>(k),
                                      static_cast<std::uint64_t>(first));
    }
  }
  return a;
}

// n elements of `a` (stored_arrays), whose storage `s` describes; never across a multiple of
// 2^32 of its tensor (a stochastic-rounding stream's end). With `sums`: monitoring sums of them.
template <class Rule, unsigned kFlags>
void run_stored_arrays(const typename StoredLanes<Rule, kFlags, AnyRecipe>::Arrays& a, index_t n,
                       const typename Rule::template Coef<float>& coef, const Storage& s,
                       index_t prefetch_bytes, MonitorSquares* sums) {
  const index_t ahead = prefetch_bytes / static_cast<index_t>(sizeof(float));  // elements
  if constexpr (kVectorLanes && kRecipes && optim::HasStorageRecipes<Rule>::value) {
    if (run_recipe<Rule, kFlags>(a, n, coef, s, ahead, sums, static_cast<ModeRecipes*>(nullptr))) {
      return;
    }
  }
  run_lanes<StoredLanes<Rule, kFlags, AnyRecipe>>(a, n, coef, ahead, sums);
}

// Elements [first, first + n) of tensor t, whose arrays (kernel order, at element 0) are
// `arrays`; never across a multiple of 2^32 (a stochastic-rounding stream's end).
template <class Rule, unsigned kFlags>
void run_stored(const StepArgs& args, index_t t, void* const* arrays, index_t first, index_t n,
                const typename Rule::template Coef<float>& coef, MonitorSquares* sums) {
  const Storage& s = *args.storage;
  run_stored_arrays<Rule, kFlags>(stored_arrays<Rule, kFlags>(s, t, arrays, first, args.grad_bound),
                                  n, coef, s, args.prefetch_bytes, sums);
}

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
