// The part the Adam family (Adam/AdamW, NAdam, RAdam) shares, in the operation order of
// torch.optim's algorithms: the gradient scaled, weight decay (decoupled from p, or an L2
// penalty added to g), and the first and second moments,
//   m <- m + (g - m) * (1 - beta1)      (torch: exp_avg.lerp_(grad, 1 - beta1))
//   v <- beta2 * v + (1 - beta2) * g * g
// The rule's Coef provides grad_factor, decay_factor (1 - lr * wd), weight_decay,
// one_minus_beta1, beta2 and one_minus_beta2. Returns the scaled (and L2-penalised) gradient.
#pragma once

#include "core/config.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

// The moments alone, of a gradient already scaled and penalised.
template <class V, class C>
GDFAST_HD void ema_moments(V g, V& m, V& v, const C& c) {
  m = m + (g - m) * c.one_minus_beta1;
  v = v * c.beta2 + g * g * c.one_minus_beta2;
}

template <bool kWeightDecay, bool kDecoupled, class V, class C>
GDFAST_HD V update_moments(V& p, V g, V& m, V& v, const C& c) {
  g = g * c.grad_factor;  // exact when the factor is +-1
  if constexpr (kWeightDecay) {
    if constexpr (kDecoupled) {
      p = p * c.decay_factor;
    } else {
      g = g + p * c.weight_decay;
    }
  }
  ema_moments(g, m, v, c);
  return g;
}

// decay_by_call's decay_factor: 1 - weight_decay * scale (scale: lr, or 1 for a fixed decay)
// when decoupled, else 1.
GDFAST_HD double decoupled_factor(bool decoupled, double weight_decay, double scale) {
  return decoupled ? 1.0 - weight_decay * scale : 1.0;
}

// Weight decay chosen by the call, not by a kernel of its own (the rules past torch.optim:
// a kernel set per rule instead of one per option). The decoupled factor always multiplies p
// (1 when off, which is exact); the L2 penalty is selected in only where c.l2 is 1, so an Inf or
// NaN param without it leaves g as it is. Returns g, penalised.
template <class V, class C>
GDFAST_HD V decay_by_call(V& p, V g, const C& c) {
  using T = decltype(c.weight_decay);
  p = p * c.decay_factor;
  return lane_where(lane_gt(V(c.l2), V(T(0))), g + p * c.weight_decay, g);
}

}  // namespace gdfast::optim
