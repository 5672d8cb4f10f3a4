// Not an optimizer (and not in optimizers.def): the memory access pattern of one, for the
// benchmark's in-place bandwidth bound, run by the very loop, threads and split the optimizers
// use. Reads param, grad and 0-4 states, writes param and the states back (SGD: 0 states,
// 12 B/element in fp32; momentum and Lion: 1, 20 B; Adam: 2, 28 B; AMSGrad, AdEMAMix: 3, 36 B;
// Adan: 4, 44 B). One multiply-add per written array: far below what the memory system can
// feed. StreamWithInput reads one more array and writes none of it: the passes of a two-pass
// rule, which read arrays they do not write (see its comment).
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

// The stream with a second input, read and never written, and 0 or 1 state: a two-pass rule's
// passes, as LAMB's move their bytes (pass 1 reads p, g, m, v and writes m, v: param m, inputs
// g and p, state v; pass 2 reads p, m, v and writes p: param p, inputs m and v). What a pass
// costs depends on the arrays it reads, not just its bytes: on the Xeon, reading three arrays
// and writing one took as long as reading three and writing two.
struct StreamWithInput {
  static constexpr const char* kInputs[] = {"grad", "input"};
  static constexpr int kNumFlags = 1;  // flags = 1: the state is used
  static constexpr StateSpec kStates[] = {{"state0", 1u}};
  using Hyper = Stream::Hyper;
  template <class T>
  using Coef = Stream::Coef<T>;

  static unsigned flags(const Hyper& h) { return Stream::flags(h); }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return Stream::coef<T>(h);
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V input, V* state, const Coef<T>& c) {
    const V delta = g * c.scale;
    if constexpr ((F & 1u) != 0) state[0] = state[0] + delta;
    p = p + delta + input * c.scale;
  }
};

}  // namespace gdfast::optim
