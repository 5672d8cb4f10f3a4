// RMSprop (Hinton, Lecture 6e of "Neural Networks for Machine Learning", 2012), centered form of
// Graves 2013 (eq. 38-40), in the operation order of torch.optim.RMSprop's algorithm:
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   g <- g + wd * p
//   v <- alpha * v + (1 - alpha) * g * g
//   g_avg <- g_avg + (g - g_avg) * (1 - alpha)            if centered (torch: lerp)
//   d <- sqrt(v - g_avg * g_avg) + eps if centered, else sqrt(v) + eps
//   b <- momentum * b + g / d;  p <- p - lr * b           if momentum > 0
//   p <- p - lr * (g / d)                                 otherwise
#pragma once

#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Rmsprop {
  static constexpr const char* kName = "rmsprop";
  static constexpr const char* kSummary = "RMSprop (centered, momentum), as torch.optim.RMSprop";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  enum Flag : unsigned {
    kMomentum = 1u << 0,
    kCentered = 1u << 1,
    kWeightDecay = 1u << 2,
  };
  static constexpr int kNumFlags = 3;
  static constexpr StateSpec kStates[] = {
      StateSpec{"square_avg"}.never_negative(),
      {"momentum_buffer", kMomentum, "momentum > 0"},
      {"grad_avg", kCentered, "centered=True"},
  };

  struct Hyper {
    double lr, alpha, eps, weight_decay, momentum;
    bool centered, maximize;
    index_t step;       // counted (torch keeps it); the update does not use it
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-2, kNonNegative), real("alpha", &Hyper::alpha, 0.99, kNonNegative),
      real("eps", &Hyper::eps, 1e-8, kNonNegative),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      real("momentum", &Hyper::momentum, 0.0, kNonNegative),
      flag("centered", &Hyper::centered, false), flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, alpha, one_minus_alpha, eps, weight_decay, momentum, neg_lr;
  };

  static unsigned flags(const Hyper& h) {
    unsigned f = 0;
    if (h.momentum > 0.0) f |= kMomentum;
    if (h.centered) f |= kCentered;
    if (h.weight_decay != 0.0) f |= kWeightDecay;
    return f;
  }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(h.alpha),
            T(1.0 - h.alpha),
            T(h.eps),
            T(h.weight_decay),
            T(h.momentum),
            T(-h.lr)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& v = state[0];
    g = g * c.grad_factor;  // exact when the factor is +-1
    if constexpr ((F & kWeightDecay) != 0) g = g + p * c.weight_decay;
    v = v * c.alpha + g * g * c.one_minus_alpha;
    V denom;
    if constexpr ((F & kCentered) != 0) {
      V& g_avg = state[2];
      g_avg = g_avg + (g - g_avg) * c.one_minus_alpha;
      denom = lane_sqrt(v - g_avg * g_avg) + c.eps;
    } else {
      denom = lane_sqrt(v) + c.eps;
    }
    if constexpr ((F & kMomentum) != 0) {
      V& buf = state[1];
      buf = buf * c.momentum + g / denom;
      p = p + buf * c.neg_lr;
    } else {
      p = p + (g / denom) * c.neg_lr;
    }
  }
};

}  // namespace gdfast::optim
