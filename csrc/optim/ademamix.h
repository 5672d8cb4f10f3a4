// AdEMAMix (Pagliardini et al. 2024, "The AdEMAMix Optimizer: Better, Faster, Older",
// Algorithm 1), in the operation order of pytorch_optimizer.AdEMAMix (whose state names and
// flags it keeps): Adam's moments plus a slow EMA of the gradient, added to the fast one with
// weight alpha, both warmed up over t_alpha_beta3 steps (0: no warmup; pytorch_optimizer's None):
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   p <- p * (1 - wd * (fixed_decay ? 1 : lr)) if weight_decouple, else g <- g + wd * p
//   m1 <- m1 + (g - m1) * (1 - beta1);  v <- beta2 * v + (1 - beta2) * g * g
//   m2 <- m2 + (g - m2) * (1 - beta3_t)
//   p <- p - lr * (m1 / bc1 + alpha_t * m2) / (sqrt(v / bc2) + eps)
//   alpha_t = min(t alpha / T, alpha),
//   beta3_t = min(exp(ln b1 ln b3 / ((1 - t/T) ln b3 + (t/T) ln b1)), b3)
// with the step's scalars in double. As in Adam, the last line is scaled by sqrt(bc2):
// p + (c1 m1 + c2 m2) / (sqrt(v) + eps sqrt(bc2)), one division per element.
#pragma once

#include <cmath>
#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"
#include "optim/moments.h"

namespace gdfast::optim {

struct Ademamix {
  static constexpr const char* kName = "ademamix";
  static constexpr const char* kSummary =
      "AdEMAMix (Pagliardini et al. 2024), as pytorch_optimizer.AdEMAMix";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  static constexpr int kNumFlags = 0;  // (weight decay's form is the call's: decay_by_call)
  static constexpr StateSpec kStates[] = {
      {"exp_avg"}, StateSpec{"exp_avg_sq"}.never_negative(), {"exp_avg_slow"}};

  struct Hyper {
    double lr, beta1, beta2, beta3, weight_decay, alpha, t_alpha_beta3, eps;
    bool decoupled, fixed_decay, maximize;
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-3, kNonNegative), real("beta1", &Hyper::beta1, 0.9, kUnitOpen),
      real("beta2", &Hyper::beta2, 0.999, kUnitOpen),
      real("beta3", &Hyper::beta3, 0.9999, kUnit),  // (1: m2 stays 0, no bias correction)
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      real("alpha", &Hyper::alpha, 5.0, kNonNegative),
      real("t_alpha_beta3", &Hyper::t_alpha_beta3, 0.0, kNonNegative),
      real("eps", &Hyper::eps, 1e-8, kNonNegative),
      flag("weight_decouple", &Hyper::decoupled, false),
      flag("fixed_decay", &Hyper::fixed_decay, false), flag("maximize", &Hyper::maximize, false));

  // The warmup's beta3_t is a log-interpolation: it needs 0 < beta1 and 0 < beta3.
  static const char* invalid(const Hyper& h) {
    if (h.t_alpha_beta3 > 0.0 && (h.beta1 <= 0.0 || h.beta3 <= 0.0)) {
      return "t_alpha_beta3: the warmup requires beta1 > 0 and beta3 > 0 (betas[0], betas[2])";
    }
    return nullptr;
  }

  template <class T>
  struct Coef {
    T grad_factor, weight_decay, decay_factor, l2, one_minus_beta1, beta2, one_minus_beta2,
        one_minus_beta3, eps_hat, fast_coef, slow_coef;
  };

  static unsigned flags(const Hyper&) { return 0; }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    const double step = static_cast<double>(h.step);
    const double bias_correction1 = 1.0 - ::pow(h.beta1, step);
    const double bias_correction2_sqrt = ::sqrt(1.0 - ::pow(h.beta2, step));
    double alpha = h.alpha, beta3 = h.beta3;
    if (h.t_alpha_beta3 > 0.0) {
      const double progress = step / h.t_alpha_beta3;
      alpha = ::fmin(progress * h.alpha, h.alpha);
      const double log_beta1 = ::log(h.beta1), log_beta3 = ::log(h.beta3);
      beta3 = ::fmin(
          ::exp(log_beta1 * log_beta3 / ((1.0 - progress) * log_beta3 + progress * log_beta1)),
          h.beta3);
    }
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(h.weight_decay),
            T(decoupled_factor(h.decoupled, h.weight_decay, h.fixed_decay ? 1.0 : h.lr)),
            T(!h.decoupled && h.weight_decay != 0.0 ? 1.0 : 0.0),
            T(1.0 - h.beta1),
            T(h.beta2),
            T(1.0 - h.beta2),
            T(1.0 - beta3),
            T(h.eps * bias_correction2_sqrt),
            T(-h.lr * bias_correction2_sqrt / bias_correction1),
            T(-h.lr * alpha * bias_correction2_sqrt)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& m_fast = state[0];
    V& v = state[1];
    V& m_slow = state[2];
    g = decay_by_call(p, g * c.grad_factor, c);  // (exact when the factor is +-1)
    ema_moments(g, m_fast, v, c);
    m_slow = m_slow + (g - m_slow) * c.one_minus_beta3;
    p = p + (m_fast * c.fast_coef + m_slow * c.slow_coef) / (lane_sqrt(v) + c.eps_hat);
  }
};

}  // namespace gdfast::optim
