// The part the Adam family (Adam/AdamW, NAdam, RAdam) shares, in the operation order of
// torch.optim's algorithms: the gradient scaled, weight decay (decoupled from p, or an L2
// penalty added to g), and the first and second moments,
//   m <- m + (g - m) * (1 - beta1)      (torch: exp_avg.lerp_(grad, 1 - beta1))
//   v <- beta2 * v + (1 - beta2) * g * g
// The rule's Coef provides grad_factor, decay_factor (1 - lr * wd), weight_decay,
// one_minus_beta1, beta2 and one_minus_beta2. Returns the scaled (and L2-penalised) gradient.
#pragma once

#include "core/config.h"

namespace gdfast::optim {

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
  m = m + (g - m) * c.one_minus_beta1;
  v = v * c.beta2 + g * g * c.one_minus_beta2;
  return g;
}

}  // namespace gdfast::optim
