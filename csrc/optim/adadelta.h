// Adadelta (Zeiler 2012, Algorithm 1), scaled by lr as torch.optim.Adadelta, in the operation
// order of its algorithm:
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   g <- g + wd * p
//   v <- rho * v + (1 - rho) * g * g
//   d <- sqrt(u + eps) / sqrt(v + eps) * g
//   u <- rho * u + (1 - rho) * d * d
//   p <- p - lr * d
#pragma once

#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Adadelta {
  static constexpr const char* kName = "adadelta";
  static constexpr const char* kSummary = "Adadelta (Zeiler 2012), as torch.optim.Adadelta";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  enum Flag : unsigned {
    kWeightDecay = 1u << 0,
  };
  static constexpr int kNumFlags = 1;
  static constexpr StateSpec kStates[] = {StateSpec{"square_avg"}.never_negative(),
                                          StateSpec{"acc_delta"}.never_negative()};

  struct Hyper {
    double lr, rho, eps, weight_decay;
    bool maximize;
    index_t step;       // counted (torch keeps it); the update does not use it
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1.0, kNonNegative), real("rho", &Hyper::rho, 0.9, kUnit),
      real("eps", &Hyper::eps, 1e-6, kNonNegative),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, weight_decay, rho, one_minus_rho, eps, neg_lr;
  };

  static unsigned flags(const Hyper& h) { return h.weight_decay != 0.0 ? kWeightDecay : 0u; }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(h.weight_decay),
            T(h.rho),
            T(1.0 - h.rho),
            T(h.eps),
            T(-h.lr)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& v = state[0];
    V& u = state[1];
    g = g * c.grad_factor;  // exact when the factor is +-1
    if constexpr ((F & kWeightDecay) != 0) g = g + p * c.weight_decay;
    v = v * c.rho + g * g * c.one_minus_rho;
    const V delta = lane_sqrt(u + c.eps) / lane_sqrt(v + c.eps) * g;
    u = u * c.rho + delta * delta * c.one_minus_rho;
    p = p + delta * c.neg_lr;
  }
};

}  // namespace gdfast::optim
