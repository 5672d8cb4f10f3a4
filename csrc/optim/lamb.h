// LAMB (You et al. 2020, "Large Batch Optimization for Deep Learning", Algorithm 2), with
// pytorch_optimizer.Lamb's options, in its operation order:
//   g <- g * grad_factor       (-1 with maximize; divided by an AMP loss scale and pre_norm's
//                               clip factor, which gdfast's fused clipping folds in)
//   m <- beta1 * m + beta3 * g    (beta3 = 1 - beta1 with grad_averaging, else 1)
//   v <- beta2 * v + (1 - beta2) * g * g
//   p <- p * (1 - wd * (1 if fixed_decay else lr))           with weight_decouple
//   d <- m / (sqrt(v) + eps), + wd * p without weight_decouple
//   per tensor: w = min(||p||, 10), u = ||d||; trust = w / (u + eps), 1 where w or u is 0 and
//   always with adam=True
//   p <- p - s * trust * d,   s = lr / (1 - beta1^t)
// rectify (RAdam's rho_t, as pytorch_optimizer has it): d is m / (sqrt(v) + eps) where
// rho_t >= n_sma_threshold, else m (degenerated_to_sgd) or no update at all; s carries RAdam's
// r_t; u is the norm of p - s * d; no wd * p term.
//
// Two passes, since the trust ratio needs all of a tensor's elements before any of its params
// is written: pass 1 (moments) updates m and v and sums the squares of p and of u's argument
// per tensor (the kernels' chunked, deterministic sums), computed from m and v as stored
// (narrow states: rounded, then widened); the host makes each tensor's factor s * trust
// (tensor_factor); pass 2 (apply) computes d again from the stored m and v (the same operations
// on the same values: the same bits) and writes p.
#pragma once

#include <cmath>
#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Lamb {
  static constexpr const char* kName = "lamb";
  static constexpr const char* kSummary =
      "LAMB (You et al. 2020), as pytorch_optimizer.Lamb: Adam's step scaled per tensor by the "
      "trust ratio ||p|| / ||update||";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;
  static constexpr int kNumFlags = 0;  // (every option is a coefficient: one kernel set)
  static constexpr StateSpec kStates[] = {{"exp_avg"}, StateSpec{"exp_avg_sq"}.never_negative()};
  // Per tensor, the sums of squares pass 1 makes: of p (decayed), and of u's argument.
  static constexpr int kTensorSums = 2;
  static constexpr double kMaxWeightNorm = 10.0;  // pytorch_optimizer's Lamb.clamp

  struct Hyper {
    double lr, beta1, beta2, eps, weight_decay;
    bool weight_decouple, fixed_decay, rectify, degenerated_to_sgd;
    double n_sma_threshold;
    bool grad_averaging, adam, maximize;
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-3, kNonNegative), real("beta1", &Hyper::beta1, 0.9, kUnitOpen),
      real("beta2", &Hyper::beta2, 0.999, kUnitOpen), real("eps", &Hyper::eps, 1e-6, kNonNegative),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      flag("weight_decouple", &Hyper::weight_decouple, true),
      flag("fixed_decay", &Hyper::fixed_decay, false), flag("rectify", &Hyper::rectify, false),
      flag("degenerated_to_sgd", &Hyper::degenerated_to_sgd, false),
      real("n_sma_threshold", &Hyper::n_sma_threshold, 5.0, kNonNegative),
      flag("grad_averaging", &Hyper::grad_averaging, true), flag("adam", &Hyper::adam, false),
      flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, beta1, beta3, beta2, one_minus_beta2, eps, decay_factor, weight_decay,
        l2,         // 1: d gets + wd * p (L2 weight decay)
        adaptive,   // 1: d = m / (sqrt(v) + eps); 0: d = m
        rectified,  // 1: u is the norm of p - s * d
        neg_step,   // -s
        updates;    // 0: no update (rectify below the threshold without degenerated_to_sgd)
  };

  static unsigned flags(const Hyper&) { return 0; }

  // s, the step size before the trust ratio (pytorch_optimizer's get_rectify_step_size, then
  // its division by the first moment's bias correction).
  GDFAST_HD static double step_size(const Hyper& h, bool* adaptive) {
    const double step = static_cast<double>(h.step);
    double rt = 1.0;
    *adaptive = true;
    if (h.rectify) {
      const double n_sma_max = 2.0 / (1.0 - h.beta2) - 1.0;
      const double beta2_t = ::pow(h.beta2, step);
      const double n_sma = n_sma_max - 2.0 * step * beta2_t / (1.0 - beta2_t);
      if (n_sma >= h.n_sma_threshold) {
        rt = ::sqrt((1.0 - beta2_t) * (n_sma - 4.0) / (n_sma_max - 4.0) * (n_sma - 2.0) / n_sma *
                    n_sma_max / (n_sma_max - 2.0));
      } else {
        *adaptive = false;
        rt = h.degenerated_to_sgd ? 1.0 : -1.0;
      }
    }
    return h.lr * rt / (1.0 - ::pow(h.beta1, step));
  }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    bool adaptive = true;
    const double s = step_size(h, &adaptive);
    const bool decays = h.weight_decay != 0.0;
    return {
        T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
        T(h.beta1),
        T(h.grad_averaging ? 1.0 - h.beta1 : 1.0),
        T(h.beta2),
        T(1.0 - h.beta2),
        T(h.eps),
        T(decays && h.weight_decouple ? 1.0 - h.weight_decay * (h.fixed_decay ? 1.0 : h.lr) : 1.0),
        T(h.weight_decay),
        T(decays && !h.weight_decouple && !h.rectify ? 1.0 : 0.0),
        T(adaptive ? 1.0 : 0.0),
        T(h.rectify ? 1.0 : 0.0),
        T(-s),
        T(h.rectify && !(s > 0.0) ? 0.0 : 1.0)};
  }

  // Host, between the passes: the factor of tensor t's d, s * trust, from its sums.
  static double tensor_factor(const double (&sums)[kTensorSums], const Hyper& h) {
    bool adaptive = true;
    const double s = step_size(h, &adaptive);
    const double w = std::fmin(std::sqrt(sums[0]), kMaxWeightNorm);
    const double u = std::sqrt(sums[1]);
    // (as pytorch_optimizer: 1 where either norm is 0; a NaN norm makes a NaN ratio)
    const double trust = h.adam || w == 0.0 || u == 0.0 ? 1.0 : w / (u + h.eps);
    return s * trust;
  }

  template <class V, class T>
  GDFAST_HD static V direction(V p, V m, V v, const Coef<T>& c) {
    const V d = lane_where(lane_gt(V(c.adaptive), V(T(0))), m / (lane_sqrt(v) + c.eps), m);
    return lane_where(lane_gt(V(c.l2), V(T(0))), d + p * c.weight_decay, d);
  }

  // Pass 1, in two parts: the moments, then (from the moments as stored, which pass 2 reads
  // back) the two values whose squares are summed per tensor.
  template <unsigned F, class V, class T>
  GDFAST_HD static void update_moments(V g, V* state, const Coef<T>& c) {
    V& m = state[0];
    V& v = state[1];
    g = g * c.grad_factor;  // exact when the factor is +-1
    m = m * c.beta1 + g * c.beta3;
    v = v * c.beta2 + g * g * c.one_minus_beta2;
  }
  template <unsigned F, class V, class T>
  GDFAST_HD static void summed(V p, const V* state, const Coef<T>& c, V (&out)[kTensorSums]) {
    p = p * c.decay_factor;
    const V d = direction(p, state[0], state[1], c);
    out[0] = p;
    out[1] = lane_where(lane_gt(V(c.rectified), V(T(0))), p + d * c.neg_step, d);
  }
  template <unsigned F, class V, class T>
  GDFAST_HD static void moments(V p, V g, V* state, const Coef<T>& c, V (&out)[kTensorSums]) {
    update_moments<F>(g, state, c);
    summed<F>(p, state, c, out);
  }

  // Pass 2: the param, from the moments pass 1 stored and its tensor's factor.
  template <unsigned F, class V, class T>
  GDFAST_HD static void apply(V& p, const V* state, const Coef<T>& c, V factor) {
    p = p * c.decay_factor;
    const V stepped = p - direction(p, state[0], state[1], c) * factor;
    p = lane_where(lane_gt(V(c.updates), V(T(0))), stepped, p);
  }
};

}  // namespace gdfast::optim
