// Where each array of a rule sits in a kernel call, for one option set (flags): the param, then
// the rule's inputs, then the states those flags use, in declaration order. And the registers a
// loop holds for one lane of them. Shared by the CPU loop (V = a SIMD lane) and CUDA (V = T).
#pragma once

#include <type_traits>
#include <utility>

#include "core/config.h"
#include "optim/lane_math.h"

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
// store(slot, value), the slot a Slot<k> (it converts to int; Slot<k>::value is k); states
// the flags do not use are neither loaded nor stored.
template <class Rule, unsigned kFlags, class V>
struct Registers {
  using L = Layout<Rule, kFlags>;
  // (std::integral_constant's conversion is host-only for nvcc)
  template <int k>
  struct Slot {
    static constexpr int value = k;
    GDFAST_HD constexpr operator int() const { return k; }  // NOLINT: used as the slot's index
  };
  V param;
  V in[L::kNumInputs];
  V state[L::kNumStates];

  template <class Load>
  GDFAST_HD static Registers load(Load&& load_slot) {
    Registers r{};  // (states the flags do not use stay zero, never read)
    r.param = load_slot(Slot<0>{});
    for_each_index(
        [&](auto i) { r.in[decltype(i)::value] = load_slot(Slot<1 + decltype(i)::value>{}); },
        std::make_integer_sequence<int, L::kNumInputs>{});
    for_each_index(
        [&](auto k) {
          constexpr int kState = decltype(k)::value;
          if constexpr (L::used(kState)) r.state[kState] = load_slot(Slot<L::slot(kState)>{});
        },
        std::make_integer_sequence<int, L::kNumStates>{});
    return r;
  }

  template <class Store>
  GDFAST_HD void store(Store&& store_slot) const {
    store_slot(Slot<0>{}, param);
    for_each_index(
        [&](auto k) {
          constexpr int kState = decltype(k)::value;
          if constexpr (L::used(kState)) store_slot(Slot<L::slot(kState)>{}, state[kState]);
        },
        std::make_integer_sequence<int, L::kNumStates>{});
  }

  template <class Coef>
  GDFAST_HD void update(const Coef& coef) {
    apply(coef, std::make_integer_sequence<int, L::kNumInputs>{});
  }
  // The gradient (the first input) clamped to [-bound, bound], as torch.clamp does: a NaN stays
  // NaN (lane_max keeps its second operand's NaN), and +inf changes nothing.
  template <class T>
  GDFAST_HD void clamp_grad(T bound) {
    in[0] = lane_min(V(bound), lane_max(V(-bound), in[0]));
  }
  // The update of the gradient clamped first.
  template <class Coef, class T>
  GDFAST_HD void update(const Coef& coef, T bound) {
    clamp_grad(bound);
    update(coef);
  }

 private:
  template <class Coef, int... I>
  GDFAST_HD void apply(const Coef& coef, std::integer_sequence<int, I...>) {
    Rule::template update<kFlags>(param, in[I]..., state, coef);
  }
};

}  // namespace gdfast::optim
