// Schedule-Free AdamW (Defazio et al. 2024, "The Road Less Scheduled", Algorithm 1), in the
// operation order of pytorch_optimizer.ScheduleFreeAdamW (whose flags and state names it
// keeps). The param holds the training iterate y, the state z the base iterate; x, the average
// that is evaluated, is y's interpolation with z (the front ends' eval() and train() swap):
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   z <- y on the first step
//   v <- beta2 * v + (1 - beta2) * g * g
//   v_hat <- v / bc2  (ams_bound: vmax <- max(vmax, v / bc2), v_hat <- vmax)
//   u <- g / (sqrt(v_hat + 1e-15) + eps) + wd * y
//   y <- y + (z - y) * c;  y <- y + u * lr_t (beta1 (1 - c) - 1);  z <- z - lr_t * u
// with the step's scalars in double: lr_t = lr * min(step / warmup_steps, 1), lr_max the
// largest lr_t so far, weight = step^r * lr_max^weight_lr_power, weight_sum the sum of the
// weights so far, c = weight / weight_sum (with decoupling_c > 0: min(1, c (1 - beta1)
// decoupling_c)). lr_max and weight_sum are scalar states, kept per param.
#pragma once

#include <cmath>
#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct SchedulefreeAdamw {
  static constexpr const char* kName = "schedulefree_adamw";
  static constexpr const char* kSummary =
      "Schedule-Free AdamW (Defazio et al. 2024), as pytorch_optimizer.ScheduleFreeAdamW";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  enum Flag : unsigned {
    kAmsBound = 1u << 0,  // (weight decay is a select on the call's decay_on: no kernel of its own)
  };
  static constexpr int kNumFlags = 1;
  // z starts as a copy of the param: the first step takes the param for it.
  static constexpr StateSpec kStates[] = {
      StateSpec{"z"}.an_iterate(), StateSpec{"exp_avg_sq"}.never_negative(),
      StateSpec{"max_exp_avg_sq", kAmsBound, "ams_bound=True"}.never_negative()};

  struct Hyper {
    double lr, beta1, beta2, weight_decay, r, weight_lr_power, warmup_steps, decoupling_c, eps;
    bool ams_bound, maximize;
    double lr_max, weight_sum;  // before this step
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 2.5e-3, kNonNegative),
      real("beta1", &Hyper::beta1, 0.9, kUnitInterior),
      real("beta2", &Hyper::beta2, 0.999, kUnitOpen),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      real("r", &Hyper::r, 0.0, kFinite),
      real("weight_lr_power", &Hyper::weight_lr_power, 2.0, kFinite),
      real("warmup_steps", &Hyper::warmup_steps, 0.0, kNonNegative),
      real("decoupling_c", &Hyper::decoupling_c, 0.0, kNonNegative),
      real("eps", &Hyper::eps, 1e-8, kNonNegative), flag("ams_bound", &Hyper::ams_bound, false),
      flag("maximize", &Hyper::maximize, false), scalar_state("lr_max", &Hyper::lr_max, -1.0),
      scalar_state("weight_sum", &Hyper::weight_sum, 0.0));

  template <class T>
  struct Coef {
    T grad_factor, beta2, one_minus_beta2, inverse_bc2, floor, eps, weight_decay, decay_on, average,
        param_coef, neg_lr, first_step;
  };

  static unsigned flags(const Hyper& h) { return h.ams_bound ? kAmsBound : 0u; }

  struct Schedule {
    double lr, lr_max, weight, weight_sum;
  };
  GDFAST_HD static Schedule schedule(const Hyper& h) {
    const double step = static_cast<double>(h.step);
    const double lr = h.lr * (step < h.warmup_steps ? step / h.warmup_steps : 1.0);
    const double lr_max = ::fmax(lr, h.lr_max);
    const double weight = ::pow(step, h.r) * ::pow(lr_max, h.weight_lr_power);
    return {lr, lr_max, weight, h.weight_sum + weight};
  }

  // lr_max and weight_sum after this step, as pytorch_optimizer keeps them (in the group).
  static void advance(Hyper& h) {
    const Schedule s = schedule(h);
    h.lr_max = s.lr_max;
    h.weight_sum = s.weight_sum;
  }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    const Schedule s = schedule(h);
    double average = s.weight_sum != 0.0 ? s.weight / s.weight_sum : 0.0;
    if (h.decoupling_c > 0.0) average = ::fmin(1.0, average * (1.0 - h.beta1) * h.decoupling_c);
    const double bias_correction2 = 1.0 - ::pow(h.beta2, static_cast<double>(h.step));
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(h.beta2),
            T(1.0 - h.beta2),
            T(1.0 / bias_correction2),
            T(1e-15),
            T(h.eps),
            T(h.weight_decay),
            T(h.weight_decay != 0.0 ? 1.0 : 0.0),
            T(average),
            T(s.lr * (h.beta1 * (1.0 - average) - 1.0)),
            T(-s.lr),
            T(h.step <= 1 ? 1.0 : 0.0)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& z = state[0];
    V& v = state[1];
    g = g * c.grad_factor;  // exact when the factor is +-1
    // (a select, not a template flag: the first step is one call in many)
    z = lane_where(lane_gt(V(c.first_step), V(T(0))), p, z);
    v = v * c.beta2 + g * g * c.one_minus_beta2;
    V second_moment = v * c.inverse_bc2;
    if constexpr ((F & kAmsBound) != 0) {
      state[2] = lane_max(state[2], second_moment);
      second_moment = state[2];
    }
    V u = g / (lane_sqrt(second_moment + c.floor) + c.eps);
    u = lane_where(lane_gt(V(c.decay_on), V(T(0))), u + p * c.weight_decay, u);
    p = p + (z - p) * c.average;
    p = p + u * c.param_coef;
    z = z + u * c.neg_lr;
  }
};

}  // namespace gdfast::optim
