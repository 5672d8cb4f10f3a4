// Adamax (Kingma & Ba 2015, Algorithm 2, Section 7.1), in the operation order of
// torch.optim.Adamax's algorithm:
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   g <- g + wd * p
//   m <- m + (g - m) * (1 - beta1)              (torch: exp_avg.lerp_(grad, 1 - beta1))
//   u <- maximum(beta2 * u, |g| + eps)          (NaN from either side propagates, as torch's)
//   p <- p - (lr / (1 - beta1^step)) * m / u
#pragma once

#include <cmath>
#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Adamax {
  static constexpr const char* kName = "adamax";
  static constexpr const char* kSummary = "Adamax (Kingma & Ba 2015), as torch.optim.Adamax";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  enum Flag : unsigned {
    kWeightDecay = 1u << 0,
  };
  static constexpr int kNumFlags = 1;
  static constexpr StateSpec kStates[] = {{"exp_avg"}, StateSpec{"exp_inf"}.never_negative()};

  struct Hyper {
    double lr, beta1, beta2, eps, weight_decay;
    bool maximize;
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 2e-3, kNonNegative), real("beta1", &Hyper::beta1, 0.9, kUnitOpen),
      real("beta2", &Hyper::beta2, 0.999, kUnitOpen), real("eps", &Hyper::eps, 1e-8, kNonNegative),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, weight_decay, one_minus_beta1, beta2, eps, neg_step_size;
  };

  static unsigned flags(const Hyper& h) { return h.weight_decay != 0.0 ? kWeightDecay : 0u; }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    const double bias_correction1 = 1.0 - ::pow(h.beta1, static_cast<double>(h.step));
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(h.weight_decay),
            T(1.0 - h.beta1),
            T(h.beta2),
            T(h.eps),
            T(-h.lr / bias_correction1)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& m = state[0];
    V& u = state[1];
    g = g * c.grad_factor;  // exact when the factor is +-1
    if constexpr ((F & kWeightDecay) != 0) g = g + p * c.weight_decay;
    m = m + (g - m) * c.one_minus_beta1;
    const V decayed = u * c.beta2;
    const V fresh = lane_abs(g) + c.eps;
    u = lane_where(lane_is_nan(decayed), decayed, lane_max(decayed, fresh));
    p = p + (m / u) * c.neg_step_size;
  }
};

}  // namespace gdfast::optim
