// Not an optimizer (and not in optimizers.def): the memory access pattern of one, for the
// benchmark's in-place bandwidth bound, run by the very loop, threads and split the optimizers
// use. Reads param, grad and 0-4 states, writes param and the states back (SGD: 0 states,
// 12 B/element in fp32; momentum and Lion: 1, 20 B; Adam: 2, 28 B; AMSGrad, AdEMAMix: 3, 36 B;
// Adan: 4, 44 B). One multiply-add per written array: far below what the memory system can
// feed.
#pragma once

#include "core/config.h"
#include "optim/describe.h"

namespace gdfast::optim {

struct Stream {
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr int kNumFlags = 4;  // flags = 2^states - 1: state k is used if bit k is set
  static constexpr StateSpec kStates[] = {
      {"state0", 1u}, {"state1", 3u}, {"state2", 7u}, {"state3", 15u}};

  struct Hyper {
    double scale;
    int num_states;
  };

  template <class T>
  struct Coef {
    T scale;
  };

  static unsigned flags(const Hyper& h) { return (1u << h.num_states) - 1u; }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return {T(h.scale)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    const V delta = g * c.scale;
    if constexpr ((F & 1u) != 0) state[0] = state[0] + delta;
    if constexpr ((F & 2u) != 0) state[1] = state[1] + delta;
    if constexpr ((F & 4u) != 0) state[2] = state[2] + delta;
    if constexpr ((F & 8u) != 0) state[3] = state[3] + delta;
    p = p + delta;
  }
};

}  // namespace gdfast::optim
