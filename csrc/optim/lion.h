// Lion (Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2):
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   p <- p * (1 - lr * wd)                     (decoupled weight decay)
//   p <- p - lr * sign(beta1 * m + (1 - beta1) * g)
//   m <- beta2 * m + (1 - beta2) * g
#pragma once

#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Lion {
  static constexpr const char* kName = "lion";
  static constexpr const char* kSummary = "Lion (Chen et al. 2023), as lion-pytorch's Lion";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kNone;
  static constexpr bool kStorageRecipes = true;  // (the layouts users train bf16 with)

  enum Flag : unsigned {
    kWeightDecay = 1u << 0,
  };
  static constexpr int kNumFlags = 1;
  static constexpr StateSpec kStates[] = {{"exp_avg"}};

  struct Hyper {
    double lr, beta1, beta2, weight_decay;
    bool maximize;
    index_t step;       // unused: Lion keeps no count
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-4, kNonNegative), real("beta1", &Hyper::beta1, 0.9, kUnit),
      real("beta2", &Hyper::beta2, 0.99, kUnit),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, neg_lr, beta1, one_minus_beta1, beta2, one_minus_beta2, decay_factor;
  };

  static unsigned flags(const Hyper& h) { return h.weight_decay != 0.0 ? kWeightDecay : 0u; }

  // Host, or device when lr/step live in device memory (CUDA-graph-capturable steps).
  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(-h.lr),
            T(h.beta1),
            T(1.0 - h.beta1),
            T(h.beta2),
            T(1.0 - h.beta2),
            T(1.0 - h.lr * h.weight_decay)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& m = state[0];
    g = g * c.grad_factor;  // exact when the factor is +-1
    if constexpr ((F & kWeightDecay) != 0) p = p * c.decay_factor;
    p = p + lane_sign(m * c.beta1 + g * c.one_minus_beta1) * c.neg_lr;
    m = m * c.beta2 + g * c.one_minus_beta2;
  }
};

}  // namespace gdfast::optim
