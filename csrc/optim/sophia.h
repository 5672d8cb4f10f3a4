// Sophia (Liu et al. 2023, "Sophia: A Scalable Stochastic Second-order Optimizer for Language
// Model Pre-training", Algorithm 1), in the operation order of pytorch_optimizer.SophiaH
// (whose flags and state names it keeps). The rule reads a second input, the estimate of the
// Hessian's diagonal (Hutchinson's in SophiaH, the Gauss-Newton-Bartlett one in the paper's
// SophiaG, any the caller has), on the steps that refresh the estimate (update_hessian):
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   p <- p * (1 - wd * (fixed_decay ? 1 : lr)) if weight_decouple, else g <- g + wd * p
//   m <- m + (g - m) * (1 - beta1)
//   h <- h + (hessian - h) * (1 - beta2)        (update_hessian only)
//   p <- p - lr * clamp(m / max(h, eps), -rho, rho)       (rho: pytorch_optimizer's `p`)
// NaN propagates through max and clamp (torch.clamp's semantics).
#pragma once

#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"
#include "optim/moments.h"

namespace gdfast::optim {

struct Sophia {
  static constexpr const char* kName = "sophia";
  static constexpr const char* kSummary =
      "Sophia (Liu et al. 2023), as pytorch_optimizer.SophiaH's step";
  static constexpr const char* kInputs[] = {"grad", "hessian"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  static constexpr int kNumFlags = 0;  // (weight decay's form is the call's: decay_by_call)
  static constexpr StateSpec kStates[] = {{"momentum"}, StateSpec{"hessian_moment"}};

  struct Hyper {
    double lr, beta1, beta2, weight_decay, rho, eps;
    bool decoupled, fixed_decay, update_hessian, maximize;
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 6e-2, kNonNegative), real("beta1", &Hyper::beta1, 0.96, kUnitOpen),
      real("beta2", &Hyper::beta2, 0.99, kUnitOpen),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      real("p", &Hyper::rho, 1e-2, kNonNegative), real("eps", &Hyper::eps, 1e-12, kNonNegative),
      flag("weight_decouple", &Hyper::decoupled, true),
      flag("fixed_decay", &Hyper::fixed_decay, false),
      flag("update_hessian", &Hyper::update_hessian, true),
      flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, weight_decay, decay_factor, l2, one_minus_beta1, one_minus_beta2, eps, rho,
        neg_rho, neg_lr, update_hessian;
  };

  static unsigned flags(const Hyper&) { return 0; }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(h.weight_decay),
            T(decoupled_factor(h.decoupled, h.weight_decay, h.fixed_decay ? 1.0 : h.lr)),
            T(!h.decoupled && h.weight_decay != 0.0 ? 1.0 : 0.0),
            T(1.0 - h.beta1),
            T(1.0 - h.beta2),
            T(h.eps),
            T(h.rho),
            T(-h.rho),
            T(-h.lr),
            T(h.update_hessian ? 1.0 : 0.0)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V hessian, V* state, const Coef<T>& c) {
    V& m = state[0];
    V& h = state[1];
    g = decay_by_call(p, g * c.grad_factor, c);  // (exact when the factor is +-1)
    m = m + (g - m) * c.one_minus_beta1;
    // (a select, not a template flag, which would double the rule's kernels: the estimate's
    // lanes are read either way, and discarded where it is not refreshed)
    h = lane_where(lane_gt(V(c.update_hessian), V(T(0))), h + (hessian - h) * c.one_minus_beta2, h);
    // (the bound first: lane_max(a, b) keeps b where b is NaN, as torch.clamp does)
    const V ratio = m / lane_max(V(c.eps), h);
    p = p + lane_min(V(c.rho), lane_max(V(c.neg_rho), ratio)) * c.neg_lr;
  }
};

}  // namespace gdfast::optim
