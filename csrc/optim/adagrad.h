// Adagrad (Duchi, Hazan & Singer 2011, the diagonal form), with the learning-rate decay of
// torch.optim.Adagrad, in the operation order of its algorithm:
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   g <- g + wd * p
//   s <- s + g * g
//   p <- p - lr_t * g / (sqrt(s) + eps),  lr_t = lr / (1 + (step - 1) * lr_decay)
// with lr_t computed once per call in double.
#pragma once

#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Adagrad {
  static constexpr const char* kName = "adagrad";
  static constexpr const char* kSummary = "Adagrad (Duchi et al. 2011), as torch.optim.Adagrad";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  enum Flag : unsigned {
    kWeightDecay = 1u << 0,
  };
  static constexpr int kNumFlags = 1;
  static constexpr StateSpec kStates[] = {
      StateSpec{"sum", 0u, "", Init::kFill, "initial_accumulator_value"}.never_negative()};

  struct Hyper {
    double lr, lr_decay, weight_decay, initial_accumulator_value, eps;
    bool maximize;
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-2, kNonNegative),
      real("lr_decay", &Hyper::lr_decay, 0.0, kNonNegative),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      real("initial_accumulator_value", &Hyper::initial_accumulator_value, 0.0, kNonNegative),
      real("eps", &Hyper::eps, 1e-10, kNonNegative), flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, weight_decay, eps, neg_lr;
  };

  static unsigned flags(const Hyper& h) { return h.weight_decay != 0.0 ? kWeightDecay : 0u; }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    const double lr_t = h.lr / (1.0 + static_cast<double>(h.step - 1) * h.lr_decay);
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale), T(h.weight_decay), T(h.eps), T(-lr_t)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& sum = state[0];
    g = g * c.grad_factor;  // exact when the factor is +-1
    if constexpr ((F & kWeightDecay) != 0) g = g + p * c.weight_decay;
    sum = sum + g * g;
    p = p + (g / (lane_sqrt(sum) + c.eps)) * c.neg_lr;
  }
};

}  // namespace gdfast::optim
