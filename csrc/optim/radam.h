// RAdam (Liu et al. 2020, "On the Variance of the Adaptive Learning Rate and Beyond",
// Algorithm 2), with decoupled weight decay as an option, in the order of torch.optim.RAdam's
// algorithm:
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   p <- p * (1 - lr * wd) if decoupled, else g <- g + wd * p
//   m <- m + (g - m) * (1 - beta1);  v <- beta2 * v + (1 - beta2) * g * g
//   rho_t = rho_inf - 2 t beta2^t / (1 - beta2^t),  rho_inf = 2 / (1 - beta2) - 1
//   p <- p - lr r_t sqrt(bc2) / bc1 * m / (sqrt(v) + eps)   if rho_t > 5 (rectified)
//   p <- p - lr / bc1 * m                                    otherwise
// The switch and r_t are per call (host, double); the kernel picks per element with a select
// of a coefficient, so it needs no step on the host (capturable on CUDA).
#pragma once

#include <cmath>
#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"
#include "optim/moments.h"

namespace gdfast::optim {

struct Radam {
  static constexpr const char* kName = "radam";
  static constexpr const char* kSummary = "RAdam (Liu et al. 2020), as torch.optim.RAdam";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  enum Flag : unsigned {
    kDecoupled = 1u << 0,
    kWeightDecay = 1u << 1,
  };
  static constexpr int kNumFlags = 2;
  static constexpr StateSpec kStates[] = {{"exp_avg"}, StateSpec{"exp_avg_sq"}.never_negative()};

  struct Hyper {
    double lr, beta1, beta2, eps, weight_decay;
    bool decoupled, maximize;
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-3, kNonNegative), real("beta1", &Hyper::beta1, 0.9, kUnitOpen),
      real("beta2", &Hyper::beta2, 0.999, kUnitOpen), real("eps", &Hyper::eps, 1e-8, kNonNegative),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      flag("decoupled_weight_decay", &Hyper::decoupled, false),
      flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, weight_decay, decay_factor, one_minus_beta1, beta2, one_minus_beta2, eps,
        rectified, rectified_step, plain_step;
  };

  static unsigned flags(const Hyper& h) {
    unsigned f = 0;
    if (h.decoupled) f |= kDecoupled;
    if (h.weight_decay != 0.0) f |= kWeightDecay;
    return f;
  }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    const double step = static_cast<double>(h.step);
    const double beta2_t = ::pow(h.beta2, step);
    const double bias_correction1 = 1.0 - ::pow(h.beta1, step);
    const double bias_correction2 = 1.0 - beta2_t;
    const double rho_inf = 2.0 / (1.0 - h.beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * step * beta2_t / bias_correction2;
    const bool rectified = rho_t > 5.0;
    const double rect = rectified ? ::sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf /
                                           ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
                                  : 0.0;
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(h.weight_decay),
            T(1.0 - h.lr * h.weight_decay),
            T(1.0 - h.beta1),
            T(h.beta2),
            T(1.0 - h.beta2),
            T(h.eps),
            T(rectified ? 1.0 : 0.0),
            T(-h.lr * rect * ::sqrt(bias_correction2) / bias_correction1),
            T(-h.lr / bias_correction1)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& m = state[0];
    V& v = state[1];
    update_moments<(F & kWeightDecay) != 0, (F & kDecoupled) != 0>(p, g, m, v, c);
    const V adaptive = V(c.rectified_step) / (lane_sqrt(v) + c.eps);
    p = p + m * lane_where(lane_gt(V(c.rectified), V(T(0))), adaptive, V(c.plain_step));
  }
};

}  // namespace gdfast::optim
