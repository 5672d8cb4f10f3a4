// Not an optimizer: the memory access pattern of one, for measuring the machine's in-place
// bandwidth with the very loop, threads and split the optimizers use. Reads param, grad and
// kNumStates states, writes param and the states back (SGD: 0 states, 12 B/element in fp32;
// momentum and Lion: 1, 20 B; Adam: 2, 28 B; Adam with AMSGrad: 3, 36 B). The arithmetic is
// one multiply-add per written array, far below what the memory system can feed.
#pragma once

#include "core/config.h"

namespace gdfast::optim {

struct Stream {
  static constexpr int kNumFlags = 2;  // the flags value is the number of states, 0..3
  static constexpr int kMaxStates = 3;

  struct Hyper {
    double scale;
    int num_states;
  };

  template <class T>
  struct Coef {
    T scale;
  };

  static unsigned flags(const Hyper& h) { return static_cast<unsigned>(h.num_states); }

  // Host, or device when lr/step live in device memory (CUDA-graph-capturable steps).
  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return {T(h.scale)};
  }

  template <unsigned F>
  static constexpr int num_states() {
    return static_cast<int>(F);
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    const V delta = g * c.scale;
    for (int k = 0; k < static_cast<int>(F); ++k) state[k] = state[k] + delta;
    p = p + delta;
  }
};

}  // namespace gdfast::optim
