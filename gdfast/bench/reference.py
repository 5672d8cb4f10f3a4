"""Reference update rules in plain NumPy, written from the published algorithms: the one
reference of the project. The benchmark's correctness gate runs them in float64, its NumPy
competitor runs them in the arrays' own dtype, and the tests (tests/reference.py) load this file
by path. It imports nothing of gdfast, and writes each formula the way its source states it, not
in gdfast's kernel operation order.

Sources: the algorithm boxes of torch 2.13's documentation for SGD, Adam/AdamW, RMSprop,
Adagrad, Adadelta, Adamax, NAdam, RAdam, ASGD and Rprop (they cite the papers); for Lion
Chen et al. 2023, Algorithm 2; for Adan Xie et al. 2022, Algorithm 1, and for AdEMAMix
Pagliardini et al. 2024, Algorithm 1, both with the bias corrections and the decay-rate betas of
pytorch_optimizer (the implementation users switch from); for Schedule-Free AdamW Defazio et al.
2024, Algorithm 1, with pytorch_optimizer's warmup, lr_max weighting and 1e-15 floor under the
square root. ``maximize`` (not part of the papers) negates the gradient first,
as torch does. Two documented choices:

* AMSGrad takes the running maximum of the raw v_t and bias-corrects it afterwards (torch's box).
* Rprop follows the box: a step size grows (up to step_size_max) after a same-sign gradient and
  shrinks (down to step_size_min) after a sign change; torch's code clamps both ways every step,
  which is the same whenever lr lies within step_sizes.

Each ``STEPS[name](param, grad, state, **hyper)`` takes arrays of one float dtype, computes in
that dtype (float64 for the gate and the tests) on copies, keeps its state (torch's names; step
counts and scalar states as Python numbers) in the dict ``state``, made on the first call, and
returns the new parameter. The inputs are never modified. Hyperparameters are named as gdfast.ops
names them (``beta1``/``beta2``, ``etaminus``/``etaplus``, ``step_size_min``/``step_size_max``).
"""

# The rules compute on state entries (Any): mypy types their NumPy results as Any too.
# mypy: disable-error-code="no-any-return"
from __future__ import annotations

from typing import Any, Callable, Dict, MutableMapping

import numpy as np

State = MutableMapping[str, Any]

__all__ = ["STEPS"]


def _copy(x: Any) -> np.ndarray:
    return np.array(x, copy=True)


def _begin(param: Any, grad: Any, maximize: bool) -> Any:
    theta, g = _copy(param), _copy(grad)
    return theta, (-g if maximize else g)


def _zeros(state: State, like: np.ndarray, *names: str) -> None:
    for name in names:
        state.setdefault(name, np.zeros_like(like))


def _count(state: State) -> int:
    state["step"] = state.get("step", 0) + 1
    return int(state["step"])


def _adam_moments(theta: np.ndarray, g: np.ndarray, state: State, *, lr: float, beta1: float,
                  beta2: float, weight_decay: float, decoupled: bool) -> Any:
    """What Adam, AdamW, NAdam and RAdam share: weight decay (decoupled, Loshchilov & Hutter:
    theta <- theta - lr * wd * theta; else an L2 penalty in the gradient), then the moments
    m_t and v_t (stored). Returns (theta, g, m_t, v_t)."""
    if weight_decay != 0:
        if decoupled:
            theta = theta - lr * weight_decay * theta
        else:
            g = g + weight_decay * theta
    m = beta1 * state["exp_avg"] + (1.0 - beta1) * g
    v = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * g**2
    state["exp_avg"], state["exp_avg_sq"] = m, v
    return theta, g, m, v


def sgd_step(param: Any, grad: Any, state: State, *, lr: float = 1e-3, momentum: float = 0.0,
             dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
             maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    if weight_decay != 0:
        g = g + weight_decay * theta
    if momentum != 0:
        if "momentum_buffer" not in state:  # t == 1: b_1 = g_1, no dampening
            b = g.copy()
        else:
            b = momentum * state["momentum_buffer"] + (1.0 - dampening) * g
        state["momentum_buffer"] = b
        g = g + momentum * b if nesterov else b
    return theta - lr * g


def adam_step(param: Any, grad: Any, state: State, *, lr: float = 1e-3, beta1: float = 0.9,
              beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
              decoupled_weight_decay: bool = False, amsgrad: bool = False,
              maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "exp_avg", "exp_avg_sq", *(("max_exp_avg_sq",) if amsgrad else ()))
    t = _count(state)
    theta, g, m, v = _adam_moments(theta, g, state, lr=lr, beta1=beta1, beta2=beta2,
                                   weight_decay=weight_decay, decoupled=decoupled_weight_decay)
    m_hat = m / (1.0 - beta1**t)
    if amsgrad:
        v_max = np.maximum(state["max_exp_avg_sq"], v)
        state["max_exp_avg_sq"] = v_max
        v_hat = v_max / (1.0 - beta2**t)
    else:
        v_hat = v / (1.0 - beta2**t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps)


def lion_step(param: Any, grad: Any, state: State, *, lr: float = 1e-4, beta1: float = 0.9,
              beta2: float = 0.99, weight_decay: float = 0.0,
              maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "exp_avg")
    m = state["exp_avg"]
    c = beta1 * m + (1.0 - beta1) * g
    theta = theta - lr * (np.sign(c) + weight_decay * theta)
    state["exp_avg"] = beta2 * m + (1.0 - beta2) * g
    return theta


def rmsprop_step(param: Any, grad: Any, state: State, *, lr: float = 1e-2, alpha: float = 0.99,
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0,
                 centered: bool = False, maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "square_avg", *(("momentum_buffer",) if momentum > 0 else ()),
           *(("grad_avg",) if centered else ()))
    _count(state)
    if weight_decay != 0:
        g = g + weight_decay * theta
    v = alpha * state["square_avg"] + (1.0 - alpha) * g**2
    state["square_avg"] = v
    v_tilde = v
    if centered:
        g_avg = alpha * state["grad_avg"] + (1.0 - alpha) * g
        state["grad_avg"] = g_avg
        v_tilde = v - g_avg**2
    if momentum > 0:
        b = momentum * state["momentum_buffer"] + g / (np.sqrt(v_tilde) + eps)
        state["momentum_buffer"] = b
        return theta - lr * b
    return theta - lr * g / (np.sqrt(v_tilde) + eps)


def adagrad_step(param: Any, grad: Any, state: State, *, lr: float = 1e-2,
                 lr_decay: float = 0.0, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                 maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    state.setdefault("sum", np.full_like(theta, initial_accumulator_value))
    t = _count(state)
    lr_t = lr / (1.0 + (t - 1) * lr_decay)
    if weight_decay != 0:
        g = g + weight_decay * theta
    s = state["sum"] + g**2
    state["sum"] = s
    return theta - lr_t * g / (np.sqrt(s) + eps)


def adadelta_step(param: Any, grad: Any, state: State, *, lr: float = 1.0, rho: float = 0.9,
                  eps: float = 1e-6, weight_decay: float = 0.0,
                  maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "square_avg", "acc_delta")
    _count(state)
    if weight_decay != 0:
        g = g + weight_decay * theta
    v = rho * state["square_avg"] + (1.0 - rho) * g**2
    delta = np.sqrt(state["acc_delta"] + eps) / np.sqrt(v + eps) * g
    state["square_avg"] = v
    state["acc_delta"] = rho * state["acc_delta"] + (1.0 - rho) * delta**2
    return theta - lr * delta


def adamax_step(param: Any, grad: Any, state: State, *, lr: float = 2e-3, beta1: float = 0.9,
                beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
                maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "exp_avg", "exp_inf")
    t = _count(state)
    if weight_decay != 0:
        g = g + weight_decay * theta
    m = beta1 * state["exp_avg"] + (1.0 - beta1) * g
    u = np.maximum(beta2 * state["exp_inf"], np.abs(g) + eps)
    state["exp_avg"], state["exp_inf"] = m, u
    return theta - lr * m / ((1.0 - beta1**t) * u)


def nadam_step(param: Any, grad: Any, state: State, *, lr: float = 2e-3, beta1: float = 0.9,
               beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
               momentum_decay: float = 4e-3, decoupled_weight_decay: bool = False,
               maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "exp_avg", "exp_avg_sq")
    state.setdefault("mu_product", 1.0)
    t = _count(state)
    theta, g, m, v = _adam_moments(theta, g, state, lr=lr, beta1=beta1, beta2=beta2,
                                   weight_decay=weight_decay, decoupled=decoupled_weight_decay)
    mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * momentum_decay))
    product = state["mu_product"] * mu  # prod_{i <= t} mu_i
    state["mu_product"] = product
    m_hat = mu_next * m / (1.0 - product * mu_next) + (1.0 - mu) * g / (1.0 - product)
    v_hat = v / (1.0 - beta2**t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps)


def radam_step(param: Any, grad: Any, state: State, *, lr: float = 1e-3, beta1: float = 0.9,
               beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
               decoupled_weight_decay: bool = False, maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "exp_avg", "exp_avg_sq")
    t = _count(state)
    theta, g, m, v = _adam_moments(theta, g, state, lr=lr, beta1=beta1, beta2=beta2,
                                   weight_decay=weight_decay, decoupled=decoupled_weight_decay)
    m_hat = m / (1.0 - beta1**t)
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2**t / (1.0 - beta2**t)
    if rho_t > 5.0:
        adaptive = np.sqrt(1.0 - beta2**t) / (np.sqrt(v) + eps)
        rect = np.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                       / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
        return theta - lr * m_hat * rect * adaptive
    return theta - lr * m_hat


def asgd_step(param: Any, grad: Any, state: State, *, lr: float = 1e-2, lambd: float = 1e-4,
              alpha: float = 0.75, t0: float = 1e6, weight_decay: float = 0.0,
              maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "ax")
    state.setdefault("eta", lr)
    state.setdefault("mu", 1.0)
    t = _count(state)
    if weight_decay != 0:
        g = g + weight_decay * theta
    eta, mu = state["eta"], state["mu"]
    theta = theta * (1.0 - lambd * eta) - eta * g
    state["ax"] = theta.copy() if mu == 1 else state["ax"] + mu * (theta - state["ax"])
    state["eta"] = lr / (1.0 + lambd * lr * t) ** alpha
    state["mu"] = 1.0 / max(1.0, t - t0)
    return theta


def rprop_step(param: Any, grad: Any, state: State, *, lr: float = 1e-2, etaminus: float = 0.5,
               etaplus: float = 1.2, step_size_min: float = 1e-6, step_size_max: float = 50.0,
               maximize: bool = False) -> np.ndarray:
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "prev")
    state.setdefault("step_size", np.full_like(theta, lr))
    _count(state)
    agreement = state["prev"] * g
    eta = state["step_size"]
    eta = np.where(agreement > 0, np.minimum(eta * etaplus, step_size_max), eta)
    eta = np.where(agreement < 0, np.maximum(eta * etaminus, step_size_min), eta)
    g = np.where(agreement < 0, 0.0, g).astype(theta.dtype)
    state["step_size"], state["prev"] = eta, g
    return theta - eta * np.sign(g)


def adan_step(param: Any, grad: Any, state: State, *, lr: float = 1e-3, beta1: float = 0.98,
              beta2: float = 0.92, beta3: float = 0.99, weight_decay: float = 0.0,
              eps: float = 1e-8, weight_decouple: bool = False,
              maximize: bool = False) -> np.ndarray:
    """The paper's weights 1 - beta; the gradient difference is 0 on the first step (its
    g_0 = g_1); ``previous_grad`` keeps -g_k, as pytorch_optimizer does."""
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "exp_avg", "exp_avg_sq", "exp_avg_diff")
    t = _count(state)
    diff = g + state["previous_grad"] if t > 1 else np.zeros_like(g)
    m = beta1 * state["exp_avg"] + (1.0 - beta1) * g
    n = beta2 * state["exp_avg_diff"] + (1.0 - beta2) * diff
    v = beta3 * state["exp_avg_sq"] + (1.0 - beta3) * (g + beta2 * diff) ** 2
    state.update(exp_avg=m, exp_avg_diff=n, exp_avg_sq=v, previous_grad=-g)
    if weight_decouple:
        theta = theta - lr * weight_decay * theta
    denom = np.sqrt(v / (1.0 - beta3**t)) + eps
    theta = theta - lr * (m / (1.0 - beta1**t) + beta2 * n / (1.0 - beta2**t)) / denom
    return theta if weight_decouple else theta / (1.0 + lr * weight_decay)


def ademamix_step(param: Any, grad: Any, state: State, *, lr: float = 1e-3, beta1: float = 0.9,
                  beta2: float = 0.999, beta3: float = 0.9999, weight_decay: float = 0.0,
                  alpha: float = 5.0, t_alpha_beta3: float = 0.0, eps: float = 1e-8,
                  weight_decouple: bool = False, fixed_decay: bool = False,
                  maximize: bool = False) -> np.ndarray:
    """Adam's moments and a slow EMA m2 added with weight alpha; t_alpha_beta3 > 0 warms alpha
    up linearly and beta3 log-linearly in the half-life (the paper's schedulers)."""
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "exp_avg", "exp_avg_sq", "exp_avg_slow")
    t = _count(state)
    theta, g, m1, v = _adam_moments(theta, g, state, lr=1.0 if fixed_decay else lr, beta1=beta1,
                                    beta2=beta2, weight_decay=weight_decay,
                                    decoupled=weight_decouple)
    alpha_t, beta3_t = alpha, beta3
    if t_alpha_beta3 > 0:
        alpha_t = min(t * alpha / t_alpha_beta3, alpha)
        ln1, ln3 = np.log(beta1), np.log(beta3)
        mix = t / t_alpha_beta3
        beta3_t = min(float(np.exp(ln1 * ln3 / ((1.0 - mix) * ln3 + mix * ln1))), beta3)
    m2 = beta3_t * state["exp_avg_slow"] + (1.0 - beta3_t) * g
    state["exp_avg_slow"] = m2
    denom = np.sqrt(v / (1.0 - beta2**t)) + eps
    return theta - lr * (m1 / (1.0 - beta1**t) + alpha_t * m2) / denom


def schedulefree_adamw_step(param: Any, grad: Any, state: State, *, lr: float = 2.5e-3,
                            beta1: float = 0.9, beta2: float = 0.999, weight_decay: float = 0.0,
                            r: float = 0.0, weight_lr_power: float = 2.0,
                            warmup_steps: float = 0.0, decoupling_c: float = 0.0,
                            eps: float = 1e-8, ams_bound: bool = False,
                            maximize: bool = False) -> np.ndarray:
    """The param is y = (1 - beta1) z + beta1 x; the step moves z by the AdamW direction at y
    and averages x toward the new z with weight c_t; returns the new y."""
    y, g = _begin(param, grad, maximize)
    _zeros(state, y, "exp_avg_sq", *(("max_exp_avg_sq",) if ams_bound else ()))
    t = _count(state)
    if t == 1:  # z_1 = x_1 = y_1
        state["z"] = y.copy()
    lr_t = lr * min(t / warmup_steps, 1.0) if warmup_steps > 0 else lr
    lr_max = state["lr_max"] = max(lr_t, state.get("lr_max", -1.0))
    weight = t**r * lr_max**weight_lr_power
    weight_sum = state["weight_sum"] = state.get("weight_sum", 0.0) + weight
    c = weight / weight_sum if weight_sum != 0 else 0.0
    if decoupling_c > 0:
        c = min(1.0, c * (1.0 - beta1) * decoupling_c)
    v = state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * g**2
    v_hat = v / (1.0 - beta2**t)
    if ams_bound:
        v_hat = state["max_exp_avg_sq"] = np.maximum(state["max_exp_avg_sq"], v_hat)
    u = g / (np.sqrt(v_hat + 1e-15) + eps) + weight_decay * y
    z = state["z"]
    x = (y - (1.0 - beta1) * z) / beta1
    z = state["z"] = z - lr_t * u
    x = (1.0 - c) * x + c * z
    return (1.0 - beta1) * z + beta1 * x


def sophia_step(param: Any, grad: Any, state: State, *, lr: float = 6e-2, beta1: float = 0.96,
                beta2: float = 0.99, weight_decay: float = 0.0, p: float = 1e-2,
                eps: float = 1e-12, weight_decouple: bool = True, fixed_decay: bool = False,
                update_hessian: bool = True, maximize: bool = False,
                hessian: Any = None) -> np.ndarray:
    """m an EMA of g, h an EMA of the Hessian estimates ``hessian`` (refreshed on
    update_hessian steps); the update lr * clip(m / max(h, eps), p)."""
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "momentum", "hessian_moment")
    _count(state)
    if weight_decay != 0:
        if weight_decouple:
            theta = theta * (1.0 - weight_decay * (1.0 if fixed_decay else lr))
        else:
            g = g + weight_decay * theta
    m = state["momentum"] = beta1 * state["momentum"] + (1.0 - beta1) * g
    if update_hessian:
        assert hessian is not None, "update_hessian: needs the estimate"
        state["hessian_moment"] = beta2 * state["hessian_moment"] + (1.0 - beta2) * hessian
    ratio = m / np.maximum(state["hessian_moment"], eps)
    return theta - lr * np.clip(ratio, -p, p)


def lamb_step(param: Any, grad: Any, state: State, *, lr: float = 1e-3, beta1: float = 0.9,
              beta2: float = 0.999, eps: float = 1e-6, weight_decay: float = 0.0,
              weight_decouple: bool = True, fixed_decay: bool = False, rectify: bool = False,
              degenerated_to_sgd: bool = False, n_sma_threshold: float = 5.0,
              grad_averaging: bool = True, adam: bool = False,
              maximize: bool = False) -> np.ndarray:
    """You et al. 2020, Algorithm 2 (LAMB), as pytorch_optimizer's Lamb: Adam's moments (the
    gradient weighted 1 - beta1, or 1 without grad_averaging), the step size lr / (1 -
    beta1^t) with no second-moment correction, the update r = m / (sqrt(v) + eps) (+ wd * theta
    as an L2 term) scaled by the trust ratio min(||theta||, 10) / (||r|| + eps) of the whole
    tensor (1 if either norm is 0, or with adam=True). rectify: RAdam's rectification of the
    step size, with r = m below the threshold (degenerated_to_sgd; else no update) and the
    ratio's denominator the norm of theta - step * r, as pytorch_optimizer computes it."""
    theta, g = _begin(param, grad, maximize)
    _zeros(state, theta, "exp_avg", "exp_avg_sq")
    t = _count(state)
    m = beta1 * state["exp_avg"] + (1.0 - beta1 if grad_averaging else 1.0) * g
    v = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * g * g
    state.update(exp_avg=m, exp_avg_sq=v)
    if weight_decouple:
        theta = theta * (1.0 - weight_decay * (1.0 if fixed_decay else lr))
    step_size, adaptive = lr, True
    if rectify:
        n_sma_max = 2.0 / (1.0 - beta2) - 1.0
        beta2_t = beta2**t
        n_sma = n_sma_max - 2.0 * t * beta2_t / (1.0 - beta2_t)
        adaptive = n_sma >= n_sma_threshold
        if adaptive:
            step_size *= np.sqrt((1.0 - beta2_t) * (n_sma - 4.0) / (n_sma_max - 4.0)
                                 * (n_sma - 2.0) / n_sma * n_sma_max / (n_sma_max - 2.0))
        elif not degenerated_to_sgd:
            return theta  # (no update this step)
    step_size /= 1.0 - beta1**t
    r = m / (np.sqrt(v) + eps) if adaptive else m
    if not weight_decouple and not rectify:
        r = r + weight_decay * theta
    weight_norm = min(float(np.linalg.norm(theta)), 10.0)
    update_norm = float(np.linalg.norm(theta - step_size * r if rectify else r))
    trust = 1.0 if adam or weight_norm == 0 or update_norm == 0 else (
        weight_norm / (update_norm + eps))
    return theta - step_size * trust * r


STEPS: Dict[str, Callable[..., np.ndarray]] = {
    "sgd": sgd_step,
    "adam": adam_step,
    "lion": lion_step,
    "rmsprop": rmsprop_step,
    "adagrad": adagrad_step,
    "adadelta": adadelta_step,
    "adamax": adamax_step,
    "nadam": nadam_step,
    "radam": radam_step,
    "asgd": asgd_step,
    "rprop": rprop_step,
    "adan": adan_step,
    "ademamix": ademamix_step,
    "schedulefree_adamw": schedulefree_adamw_step,
    "sophia": sophia_step,
    "lamb": lamb_step,
}
