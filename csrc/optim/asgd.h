// Averaged SGD (Polyak & Juditsky 1992; the step-size schedule of Bottou 2012, "Stochastic
// Gradient Descent Tricks", Section 5.3), in the order of torch.optim.ASGD's algorithm:
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   g <- g + wd * p
//   p <- p * (1 - lambd * eta);  p <- p - eta * g
//   ax <- ax + (p - ax) * mu if mu != 1, else ax <- p
// where eta and mu are per-parameter scalar states, after the step set to
//   eta = lr / (1 + lambd * lr * step)^alpha,  mu = 1 / max(1, step - t0).
// The mu switch is a per-element select on a coefficient, not an option set: a kernel that
// wrote ax without reading it would wait on a read-for-ownership per cache line of ax (2x
// slower at DRAM sizes, measured), the select keeps ax read as the averaging steps do.
#pragma once

#include <cmath>
#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Asgd {
  static constexpr const char* kName = "asgd";
  static constexpr const char* kSummary =
      "Averaged SGD (Polyak & Juditsky 1992), as torch.optim.ASGD";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  enum Flag : unsigned {
    kWeightDecay = 1u << 0,
  };
  static constexpr int kNumFlags = 1;
  static constexpr StateSpec kStates[] = {{"ax"}};

  struct Hyper {
    double lr, lambd, alpha, t0, weight_decay;
    bool maximize;
    double eta, mu;  // this step's step size and averaging weight (set by the previous one)
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-2, kNonNegative), real("lambd", &Hyper::lambd, 1e-4, kFinite),
      real("alpha", &Hyper::alpha, 0.75, kFinite), real("t0", &Hyper::t0, 1e6, kFinite),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      flag("maximize", &Hyper::maximize, false), scalar_state("eta", &Hyper::eta, 0.0, "lr"),
      scalar_state("mu", &Hyper::mu, 1.0));

  template <class T>
  struct Coef {
    T grad_factor, weight_decay, decay_factor, neg_eta, averaging, mu;
  };

  static unsigned flags(const Hyper& h) { return h.weight_decay != 0.0 ? kWeightDecay : 0u; }

  // eta and mu after this step, as torch stores them.
  static void advance(Hyper& h) {
    const double step = static_cast<double>(h.step);
    h.eta = h.lr / ::pow(1.0 + h.lambd * h.lr * step, h.alpha);
    h.mu = 1.0 / (step - h.t0 > 1.0 ? step - h.t0 : 1.0);
  }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(h.weight_decay),
            T(1.0 - h.lambd * h.eta),
            T(-h.eta),
            T(h.mu != 1.0 ? 1.0 : 0.0),
            T(h.mu)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& ax = state[0];
    g = g * c.grad_factor;  // exact when the factor is +-1
    if constexpr ((F & kWeightDecay) != 0) g = g + p * c.weight_decay;
    p = p * c.decay_factor;
    p = p + g * c.neg_eta;
    ax = lane_where(lane_gt(V(c.averaging), V(T(0))), ax + (p - ax) * c.mu, p);
  }
};

}  // namespace gdfast::optim
