// SGD with momentum, dampening, Nesterov momentum, L2 weight decay and maximize, as
// torch.optim.SGD (Sutskever et al. 2013 form of Nesterov momentum):
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   g <- g + wd * p
//   b <- g on the first step, else b <- momentum * b + (1 - dampening) * g
//   g <- g + momentum * b if nesterov, else g <- b
//   p <- p - lr * g
#pragma once

#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"

namespace gdfast::optim {

struct Sgd {
  static constexpr const char* kName = "sgd";
  static constexpr const char* kSummary =
      "SGD with momentum, dampening and Nesterov momentum, as torch.optim.SGD";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kFirstCall;
  static constexpr bool kStorageRecipes = true;  // (the layouts users train bf16 with)

  enum Flag : unsigned {
    kMomentum = 1u << 0,
    kNesterov = 1u << 1,
    kFirstStep = 1u << 2,
    kWeightDecay = 1u << 3,
  };
  static constexpr int kNumFlags = 4;
  // torch.optim.SGD starts the buffer as a copy of the gradient: step 1 writes it.
  static constexpr StateSpec kStates[] = {
      {"momentum_buffer", kMomentum, "momentum != 0", Init::kUnset}};

  struct Hyper {
    double lr, momentum, dampening, weight_decay;
    bool nesterov, maximize;
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-3, kNonNegative),
      real("momentum", &Hyper::momentum, 0.0, kNonNegative),
      real("dampening", &Hyper::dampening, 0.0, kUnit),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      flag("nesterov", &Hyper::nesterov, false), flag("maximize", &Hyper::maximize, false));

  static const char* invalid(const Hyper& h) {
    if (h.nesterov && (h.momentum <= 0.0 || h.dampening != 0.0)) {
      return "nesterov: requires momentum > 0 and dampening == 0";
    }
    return nullptr;
  }

  template <class T>
  struct Coef {
    T grad_factor, neg_lr, momentum, one_minus_dampening, weight_decay;
  };

  static unsigned flags(const Hyper& h) {
    unsigned f = 0;
    if (h.momentum != 0.0)
      f |= kMomentum | (h.nesterov ? kNesterov : 0u) | (h.step == 1 ? kFirstStep : 0u);
    if (h.weight_decay != 0.0) f |= kWeightDecay;
    return f;
  }

  // Host, or device when lr/step live in device memory (CUDA-graph-capturable steps).
  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale), T(-h.lr), T(h.momentum),
            T(1.0 - h.dampening), T(h.weight_decay)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    g = g * c.grad_factor;  // exact when the factor is +-1
    if constexpr ((F & kWeightDecay) != 0) g = g + p * c.weight_decay;
    if constexpr ((F & kMomentum) != 0) {
      V& buf = state[0];
      if constexpr ((F & kFirstStep) != 0) {
        buf = g;
      } else {
        buf = buf * c.momentum + g * c.one_minus_dampening;
      }
      if constexpr ((F & kNesterov) != 0) {
        g = g + buf * c.momentum;
      } else {
        g = buf;
      }
    }
    p = p + g * c.neg_lr;
  }
};

}  // namespace gdfast::optim
