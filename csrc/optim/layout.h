// Where each array of a rule sits in a kernel call, for one option set (flags): the param, then
// the rule's inputs, then the states those flags use, in declaration order. And the registers a
// loop holds for one lane of them. Shared by the CPU loop (V = a SIMD lane) and CUDA (V = T).
#pragma once

#include <type_traits>
#include <utility>

#include "core/config.h"

namespace gdfast::optim {

template <class Rule, unsigned kFlags>
struct Layout {
  static constexpr int kNumInputs = static_cast<int>(std::extent_v<decltype(Rule::kInputs)>);
  static constexpr int kNumStates = static_cast<int>(std::extent_v<decltype(Rule::kStates)>);

  GDFAST_HD static constexpr bool used(int k) {
    return (Rule::kStates[k].needs & kFlags) == Rule::kStates[k].needs;
  }
  GDFAST_HD static constexpr int count_used(int below) {
    int n = 0;
    for (int k = 0; k < below; ++k) n += used(k) ? 1 : 0;
    return n;
  }
  static constexpr int kNumUsed = count_used(kNumStates);
  static constexpr int kNumArrays = 1 + kNumInputs + kNumUsed;
  // The array index of state k (when used).
  GDFAST_HD static constexpr int slot(int k) { return 1 + kNumInputs + count_used(k); }
};

// fn(std::integral_constant<int, k>) for k = 0 .. n-1, unrolled at compile time.
template <class Fn, int... K>
GDFAST_HD void for_each_index(Fn&& fn, std::integer_sequence<int, K...>) {
  (fn(std::integral_constant<int, K>{}), ...);
}

// One lane of every array of a call, loaded through load(slot) and stored through
// store(slot, value); states the flags do not use are neither loaded nor stored.
template <class Rule, unsigned kFlags, class V>
struct Registers {
  using L = Layout<Rule, kFlags>;
  V param;
  V in[L::kNumInputs];
  V state[L::kNumStates];

  template <class Load>
  GDFAST_HD static Registers load(Load&& load_slot) {
    Registers r;
    r.param = load_slot(0);
    for (int i = 0; i < L::kNumInputs; ++i) r.in[i] = load_slot(1 + i);
    for_each_index(
        [&](auto k) {
          constexpr int kState = decltype(k)::value;
          if constexpr (L::used(kState)) r.state[kState] = load_slot(L::slot(kState));
        },
        std::make_integer_sequence<int, L::kNumStates>{});
    return r;
  }

  template <class Store>
  GDFAST_HD void store(Store&& store_slot) const {
    store_slot(0, param);
    for_each_index(
        [&](auto k) {
          constexpr int kState = decltype(k)::value;
          if constexpr (L::used(kState)) store_slot(L::slot(kState), state[kState]);
        },
        std::make_integer_sequence<int, L::kNumStates>{});
  }

  template <class Coef>
  GDFAST_HD void update(const Coef& coef) {
    apply(coef, std::make_integer_sequence<int, L::kNumInputs>{});
  }

 private:
  template <class Coef, int... I>
  GDFAST_HD void apply(const Coef& coef, std::integer_sequence<int, I...>) {
    Rule::template update<kFlags>(param, in[I]..., state, coef);
  }
};

}  // namespace gdfast::optim
