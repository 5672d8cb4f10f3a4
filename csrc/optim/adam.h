// Adam (Kingma & Ba 2015, Algorithm 1) and AdamW (Loshchilov & Hutter 2019, Algorithm 2,
// decoupled weight decay), with AMSGrad (Reddi et al. 2018) and maximize, in the operation
// order of torch.optim.Adam's documented algorithm:
//   g <- g * grad_factor    (grad_factor = -1 if maximize else 1, divided by an AMP loss scale)
//   p <- p * (1 - lr * wd) if decoupled, else g <- g + wd * p
//   m <- m + (1 - beta1) * (g - m)            (torch: exp_avg.lerp_(grad, 1 - beta1))
//   v <- beta2 * v + (1 - beta2) * g * g
//   vmax <- max(vmax, v) if amsgrad
//   p <- p - (lr / bc1) * m / (sqrt(v or vmax) / sqrt(bc2) + eps)
// with the bias corrections bc_i = 1 - beta_i^step computed once per call in double. The
// last line is evaluated in the equivalent form of Kingma & Ba's Section 2 (last paragraph),
//   p <- p - (lr * sqrt(bc2) / bc1) * m / (sqrt(v) + eps * sqrt(bc2)),
// which needs one division per element instead of two (the loop is divide-bound in cache).
#pragma once

#include <cmath>
#include <tuple>

#include "core/config.h"
#include "optim/describe.h"
#include "optim/lane_math.h"
#include "optim/moments.h"

namespace gdfast::optim {

struct Adam {
  static constexpr const char* kName = "adam";
  static constexpr const char* kSummary =
      "Adam, as torch.optim.Adam; AdamW with decoupled_weight_decay=True";
  static constexpr const char* kInputs[] = {"grad"};
  static constexpr StepCount kStepCount = StepCount::kCounted;
  static constexpr bool kStorageRecipes = true;  // (the layouts users train bf16 with)

  enum Flag : unsigned {
    kDecoupled = 1u << 0,
    kAmsgrad = 1u << 1,
    kWeightDecay = 1u << 2,
  };
  static constexpr int kNumFlags = 3;
  static constexpr StateSpec kStates[] = {
      {"exp_avg"},
      StateSpec{"exp_avg_sq"}.never_negative(),
      StateSpec{"max_exp_avg_sq", kAmsgrad, "amsgrad=True"}.never_negative()};

  struct Hyper {
    double lr, beta1, beta2, eps, weight_decay;
    bool decoupled, amsgrad, maximize;
    index_t step;
    double grad_scale;  // gradients are divided by this (1 unless unscaling AMP gradients)
  };
  static constexpr auto kFields = std::make_tuple(
      real("lr", &Hyper::lr, 1e-3, kNonNegative), real("beta1", &Hyper::beta1, 0.9, kUnitOpen),
      real("beta2", &Hyper::beta2, 0.999, kUnitOpen), real("eps", &Hyper::eps, 1e-8, kPositive),
      real("weight_decay", &Hyper::weight_decay, 0.0, kNonNegative),
      flag("decoupled_weight_decay", &Hyper::decoupled, false),
      flag("amsgrad", &Hyper::amsgrad, false), flag("maximize", &Hyper::maximize, false));

  template <class T>
  struct Coef {
    T grad_factor, one_minus_beta1, beta2, one_minus_beta2, neg_step_size, eps_hat, weight_decay,
        decay_factor;
  };

  static unsigned flags(const Hyper& h) {
    unsigned f = 0;
    if (h.decoupled) f |= kDecoupled;
    if (h.amsgrad) f |= kAmsgrad;
    if (h.weight_decay != 0.0) f |= kWeightDecay;
    return f;
  }

  // Host, or device when lr/step live in device memory (CUDA-graph-capturable steps).
  template <class T>
  GDFAST_HD static Coef<T> coef(const Hyper& h) {
    const double step = static_cast<double>(h.step);
    const double bias_correction1 = 1.0 - ::pow(h.beta1, step);
    const double bias_correction2_sqrt = ::sqrt(1.0 - ::pow(h.beta2, step));
    return {T((h.maximize ? -1.0 : 1.0) / h.grad_scale),
            T(1.0 - h.beta1),
            T(h.beta2),
            T(1.0 - h.beta2),
            T(-h.lr * bias_correction2_sqrt / bias_correction1),
            T(h.eps * bias_correction2_sqrt),
            T(h.weight_decay),
            T(1.0 - h.lr * h.weight_decay)};
  }

  template <unsigned F, class V, class T>
  GDFAST_HD static void update(V& p, V g, V* state, const Coef<T>& c) {
    V& m = state[0];
    V& v = state[1];
    update_moments<(F & kWeightDecay) != 0, (F & kDecoupled) != 0>(p, g, m, v, c);
    V second_moment = v;
    if constexpr ((F & kAmsgrad) != 0) {
      state[2] = lane_max(state[2], v);
      second_moment = state[2];
    }
    const V denom = lane_sqrt(second_moment) + c.eps_hat;
    p = p + (m / denom) * c.neg_step_size;
  }
};

}  // namespace gdfast::optim
