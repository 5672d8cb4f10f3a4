// NAdam (Dozat 2016, "Incorporating Nesterov Momentum into Adam", Algorithm 2 with the momentum
// schedule mu_t = beta1 (1 - 0.5 * 0.96^(t * momentum_decay))), with decoupled weight decay as
// an option, in the order of torch.optim.NAdam's algorithm:
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   p <- p * (1 - lr * wd) if decoupled, else g <- g + wd * p
//   m <- m + (g - m) * (1 - beta1);  v <- beta2 * v + (1 - beta2) * g * g
//   p <- p - lr (1 - mu_t) / (1 - P_t) * g / D - lr mu_t+1 / (1 - P_t mu_t+1) * m / D,
//        D = sqrt(v / bc2) + eps,  P_t = mu_1 ... mu_t (the state mu_product)
// The last line is evaluated as p + (c1 g + c2 m) / (sqrt(v) + eps sqrt(bc2)) with c1 and c2
// scaled by sqrt(bc2): one division per element instead of two.
#pragma once

#include <cmath>
#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"
#include "optim/moments.h"

namespace gdfast::optim {

struct Nadam {
  static constexpr const char* kName = "nadam";
  static constexpr const char* kSummary = "NAdam (Dozat 2016), as torch.optim.NAdam";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  enum Flag : unsigned {
    kDecoupled = 1u << 0,
    kWeightDecay = 1u << 1,
  };
  static constexpr int kNumFlags = 2;
  static constexpr StateSpec kStates[] = {{"exp_avg"}, StateSpec{"exp_avg_sq"}.never_negative()};

  struct Hyper {
    double lr, beta1, beta2, eps, weight_decay, momentum_decay;
    bool decoupled, maximize;
    double mu_product;  // the product of mu_1 .. mu_step-1 before this step
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 2e-3, kNonNegative), real("beta1", &Hyper::beta1, 0.9, kUnitOpen),
      real("beta2", &Hyper::beta2, 0.999, kUnitOpen), real("eps", &Hyper::eps, 1e-8, kNonNegative),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      real("momentum_decay", &Hyper::momentum_decay, 4e-3, kNonNegative),
      flag("decoupled_weight_decay", &Hyper::decoupled, false),
      flag("maximize", &Hyper::maximize, false),
      scalar_state("mu_product", &Hyper::mu_product, 1.0));

  template <class T>
  struct Coef {
    T grad_factor, weight_decay, decay_factor, one_minus_beta1, beta2, one_minus_beta2, eps_hat,
        grad_coef, exp_avg_coef;
  };

  static unsigned flags(const Hyper& h) {
    unsigned f = 0;
    if (h.decoupled) f |= kDecoupled;
    if (h.weight_decay != 0.0) f |= kWeightDecay;
    return f;
  }

  GDFAST_HD static double mu(const Hyper& h, double step) {
    return h.beta1 * (1.0 - 0.5 * ::pow(0.96, step * h.momentum_decay));
  }

  // mu_product after this step, as torch stores it.
  static void advance(Hyper& h) { h.mu_product *= mu(h, static_cast<double>(h.step)); }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    const double step = static_cast<double>(h.step);
    const double bias_correction2_sqrt = ::sqrt(1.0 - ::pow(h.beta2, step));
    const double mu_now = mu(h, step), mu_next = mu(h, step + 1.0);
    const double product = h.mu_product * mu_now;
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(h.weight_decay),
            T(1.0 - h.lr * h.weight_decay),
            T(1.0 - h.beta1),
            T(h.beta2),
            T(1.0 - h.beta2),
            T(h.eps * bias_correction2_sqrt),
            T(-h.lr * (1.0 - mu_now) / (1.0 - product) * bias_correction2_sqrt),
            T(-h.lr * mu_next / (1.0 - product * mu_next) * bias_correction2_sqrt)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& m = state[0];
    V& v = state[1];
    g = update_moments<(F & kWeightDecay) != 0, (F & kDecoupled) != 0>(p, g, m, v, c);
    p = p + (g * c.grad_coef + m * c.exp_avg_coef) / (lane_sqrt(v) + c.eps_hat);
  }
};

}  // namespace gdfast::optim
