// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2):
//   g <- -g if maximize
//   p <- p * (1 - lr * wd)                     (decoupled weight decay)
//   p <- p - lr * sign(beta1 * m + (1 - beta1) * g)
//   m <- beta2 * m + (1 - beta2) * g
#pragma once

#include "core/config.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Lion {
  enum Flag : unsigned {
    kMaximize = 1u << 0,
    kWeightDecay = 1u << 1,
  };
  static constexpr int kNumFlags = 2;
  static constexpr int kMaxStates = 1;  // exp_avg

  struct Hyper {
    double lr, beta1, beta2, weight_decay;
    bool maximize;
  };

  template <class T>
  struct Coef {
    T neg_lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay_factor;
  };

  static unsigned flags(const Hyper& h) {
    return (h.maximize ? kMaximize : 0u) | (h.weight_decay != 0.0 ? kWeightDecay : 0u);
  }

  template <class T>
  static Coef<T> coef(const Hyper& h) {
    return {T(-h.lr),        T(h.beta1), T(1.0 - h.beta1), T(h.beta2), T(1.0 - h.beta2),
            T(1.0 - h.lr * h.weight_decay)};
  }

  template <unsigned F>
  static constexpr int num_states() {
    return 1;
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& m = state[0];
    if constexpr ((F & kMaximize) != 0) g = -g;
    if constexpr ((F & kWeightDecay) != 0) p = p * c.decay_factor;
    p = p + lane_sign(m * c.beta1 + g * c.one_minus_beta1) * c.neg_lr;
    m = m * c.beta2 + g * c.one_minus_beta2;
  }
};

}  // namespace gdfast::optim
