// Muon (Jordan et al. 2024; "Muon is Scalable for LLM Training", Liu et al. 2025), as
// torch.optim.Muon: the elementwise work on either side of its Newton-Schulz iteration, which
// the front end runs between the two phases with its array library's matrix product
// (gdfast/_muon.py). Not a whole step: the registry marks it partial, and `gdfast.ops.muon_`,
// `gdfast.Muon` and `gdfast.torch.Muon` compose it.
//   phase 1 (the call's param slot holds the iteration's input x, which it writes):
//     b <- lerp(b, g, 1 - momentum)                      (torch: buf.lerp_(grad, 1 - momentum))
//     x <- lerp(g, b, momentum) if nesterov, else b      (torch: grad.lerp(buf, momentum))
//   phase 2 (the gradient's slot holds the iteration's output o):
//     p <- p * (1 - lr * weight_decay)
//     p <- p - lr * lr_ratio * o     (lr_ratio: AdjustLR's factor for the param's shape)
// A lerp takes torch's two forms, chosen by its weight as torch chooses them (a + w (b - a) for
// |w| < 0.5, else b - (1 - w) (b - a)), each product rounded before its sum.
#pragma once

#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Muon {
  static constexpr const char* kName = "muon";
  static constexpr const char* kSummary =
      "Muon's elementwise phases around its Newton-Schulz iteration (torch.optim.Muon): the "
      "momentum and the iteration's input, then the decayed param stepped along its output";
  static constexpr bool kPartial = true;  // composed by the front end (see above)
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kNone;

  enum Flag : unsigned { kMomentumPhase = 1u << 0 };
  static constexpr int kNumFlags = 1;
  static constexpr StateSpec kStates[] = {{"momentum_buffer", kMomentumPhase, "phase == 1"}};

  struct Hyper {
    double lr, weight_decay, momentum, lr_ratio;
    bool nesterov, apply;  // apply: phase 2
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-3, kNonNegative),
      real("weight_decay", &Hyper::weight_decay, 0.1, kNonNegative),
      real("momentum", &Hyper::momentum, 0.95, kNonNegative),
      real("lr_ratio", &Hyper::lr_ratio, 1.0, kNonNegative),
      flag("nesterov", &Hyper::nesterov, true), flag("apply", &Hyper::apply, false));

  template <class T>
  struct Coef {
    // lerp(a, b, w) = base + coeff * (b - a): (a, w) for a small weight, else (b, w - 1)
    T grad_factor, buffer_coeff, buffer_from_grad,  // b's lerp: base g (1) or b (0)
        nesterov_coeff, nesterov_from_buffer,       // x's lerp: base b (1) or g (0)
        nesterov, decay_factor, neg_step;
  };

  static unsigned flags(const Hyper& h) { return h.apply ? 0u : kMomentumPhase; }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    // (torch converts each weight to the tensor's type first, and makes 1 - w in that type)
    const T to_grad = T(1.0 - h.momentum);
    const T to_buffer = T(h.momentum);
    const bool small_to_grad = to_grad < T(0.5) && to_grad > T(-0.5);
    const bool small_to_buffer = to_buffer < T(0.5) && to_buffer > T(-0.5);
    return {T(1.0 / h.grad_scale),          small_to_grad ? to_grad : to_grad - T(1),
            T(small_to_grad ? 0.0 : 1.0),   small_to_buffer ? to_buffer : to_buffer - T(1),
            T(small_to_buffer ? 0.0 : 1.0), T(h.nesterov ? 1.0 : 0.0),
            T(1.0 - h.lr * h.weight_decay), T(-(h.lr * h.lr_ratio))};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    if constexpr ((F & kMomentumPhase) != 0) {
      V& b = state[0];
      g = g * c.grad_factor;  // (exact when it is 1)
      const V step_to_grad = (g - b) * c.buffer_coeff;
      b = lane_where(lane_gt(V(c.buffer_from_grad), V(T(0))), g, b) + step_to_grad;
      const V toward_buffer = lane_where(lane_gt(V(c.nesterov_from_buffer), V(T(0))), b, g) +
                              (b - g) * c.nesterov_coeff;
      p = lane_where(lane_gt(V(c.nesterov), V(T(0))), toward_buffer, b);
    } else {
      p = p * c.decay_factor;
      p = p + g * c.neg_step;
    }
  }
};

}  // namespace gdfast::optim
