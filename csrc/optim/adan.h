// Adan (Xie et al. 2022, "Adan: Adaptive Nesterov Momentum Algorithm", Algorithm 1), in the
// operation order of pytorch_optimizer.Adan (whose state names and flags it keeps):
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   d <- g - g_prev         (0 on the first step; the state previous_grad holds -g_prev)
//   m <- m + (g - m) * (1 - beta1)
//   n <- n + (d - n) * (1 - beta2)                        (exp_avg_diff)
//   v <- beta3 * v + (1 - beta3) * (g + beta2 * d)^2      (exp_avg_sq)
//   p <- p * (1 - lr * wd) if weight_decouple
//   p <- p - (lr / bc1) * m / D - (lr * beta2 / bc2) * n / D,   D = sqrt(v / bc3) + eps
//   p <- p / (1 + lr * wd) unless weight_decouple (the paper's proximal step)
// with bc_i = 1 - beta_i^step in double. As in Adam, D is scaled by sqrt(bc3) so that the two
// terms share one division: p + (c_m m + c_n n) / (sqrt(v) + eps sqrt(bc3)).
#pragma once

#include <cmath>
#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Adan {
  static constexpr const char* kName = "adan";
  static constexpr const char* kSummary = "Adan (Xie et al. 2022), as pytorch_optimizer.Adan";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  // (weight decay's form is the call's: p's factors before and after are 1 when it is off)
  static constexpr int kNumFlags = 0;
  static constexpr StateSpec kStates[] = {
      {"exp_avg"}, StateSpec{"exp_avg_sq"}.never_negative(), {"exp_avg_diff"}, {"previous_grad"}};

  struct Hyper {
    double lr, beta1, beta2, beta3, weight_decay, eps;
    bool decoupled, maximize;
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-3, kNonNegative), real("beta1", &Hyper::beta1, 0.98, kUnitOpen),
      real("beta2", &Hyper::beta2, 0.92, kUnitOpen), real("beta3", &Hyper::beta3, 0.99, kUnitOpen),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      real("eps", &Hyper::eps, 1e-8, kNonNegative),
      flag("weight_decouple", &Hyper::decoupled, false), flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, one_minus_beta1, beta2, one_minus_beta2, beta3, one_minus_beta3, eps_hat,
        exp_avg_coef, diff_coef, decay_before, decay_after, first_step;
  };

  static unsigned flags(const Hyper&) { return 0; }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    const double step = static_cast<double>(h.step);
    const double bias_correction1 = 1.0 - ::pow(h.beta1, step);
    const double bias_correction2 = 1.0 - ::pow(h.beta2, step);
    const double bias_correction3_sqrt = ::sqrt(1.0 - ::pow(h.beta3, step));
    const double decay = h.lr * h.weight_decay;
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(1.0 - h.beta1),
            T(h.beta2),
            T(1.0 - h.beta2),
            T(h.beta3),
            T(1.0 - h.beta3),
            T(h.eps * bias_correction3_sqrt),
            T(-h.lr * bias_correction3_sqrt / bias_correction1),
            T(-h.lr * h.beta2 * bias_correction3_sqrt / bias_correction2),
            T(h.decoupled ? 1.0 - decay : 1.0),
            T(h.decoupled ? 1.0 : 1.0 / (1.0 + decay)),
            T(h.step <= 1 ? 1.0 : 0.0)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& m = state[0];
    V& v = state[1];
    V& n = state[2];
    V& negative_previous = state[3];
    g = g * c.grad_factor;  // exact when the factor is +-1
    // (a select, not a template flag: the first step is one call in many)
    const V d = lane_where(lane_gt(V(c.first_step), V(T(0))), V(T(0)), g + negative_previous);
    m = m + (g - m) * c.one_minus_beta1;
    n = n + (d - n) * c.one_minus_beta2;
    const V corrected = d * c.beta2 + g;
    v = v * c.beta3 + corrected * corrected * c.one_minus_beta3;
    p = p * c.decay_before;
    p = p + (m * c.exp_avg_coef + n * c.diff_coef) / (lane_sqrt(v) + c.eps_hat);
    p = p * c.decay_after;
    negative_previous = g * T(-1);
  }
};

}  // namespace gdfast::optim
