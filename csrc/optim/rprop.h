// Rprop (Riedmiller & Braun 1993; the variant without weight backtracking, "Rprop-", as
// torch.optim.Rprop), in the order of its algorithm:
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   s <- g * prev
//   eta <- etaplus if s > 0, etaminus if s < 0, 1 if s == 0 (NaN stays NaN)
//   step_size <- min(step_size_max, max(step_size_min, step_size * eta))
//   g <- 0 where s < 0
//   p <- p - sign(g) * step_size;  prev <- g
#pragma once

#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Rprop {
  static constexpr const char* kName = "rprop";
  static constexpr const char* kSummary = "Rprop (Riedmiller & Braun 1993), as torch.optim.Rprop";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;

  static constexpr int kNumFlags = 0;
  static constexpr StateSpec kStates[] = {{"prev"}, {"step_size", 0u, "", Init::kFill, "lr"}};

  struct Hyper {
    double lr, etaminus, etaplus, step_size_min, step_size_max;
    bool maximize;
    index_t step;       // counted (torch keeps it); the update does not use it
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  // lr only sets where step_size starts.
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-2, kNonNegative), real("etaminus", &Hyper::etaminus, 0.5, kFinite),
      real("etaplus", &Hyper::etaplus, 1.2, kFinite),
      real("step_size_min", &Hyper::step_size_min, 1e-6, kFinite),
      real("step_size_max", &Hyper::step_size_max, 50.0, kFinite),
      flag("maximize", &Hyper::maximize, false));

  static const char* invalid(const Hyper& h) {
    if (!(0.0 < h.etaminus && h.etaminus < 1.0 && 1.0 < h.etaplus)) {
      return "etas: expected 0 < etaminus < 1 < etaplus";
    }
    return nullptr;
  }

  template <class T>
  struct Coef {
    T grad_factor, etaminus, etaplus, step_size_min, step_size_max;
  };

  static unsigned flags(const Hyper&) { return 0u; }

  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale), T(h.etaminus), T(h.etaplus),
            T(h.step_size_min), T(h.step_size_max)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& prev = state[0];
    V& step_size = state[1];
    g = g * c.grad_factor;  // exact when the factor is +-1
    const V s = g * prev;
    const V zero = V(T(0));
    const auto shrink = lane_lt(s, zero);
    // 1 where s == 0 and NaN where s is NaN (as torch's sign(s)), for the factor below.
    const V one_or_nan = s * zero + V(T(1));
    const V eta =
        lane_where(lane_gt(s, zero), V(c.etaplus), lane_where(shrink, V(c.etaminus), one_or_nan));
    // max then min, each returning its second operand on NaN: NaN propagates, as torch.clamp.
    step_size = lane_min(V(c.step_size_max), lane_max(V(c.step_size_min), step_size * eta));
    g = lane_where(shrink, zero, g);
    p = p - lane_sign(g) * step_size;
    prev = g;
  }
};

}  // namespace gdfast::optim
