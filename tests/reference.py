"""The float64 reference rules and the test helpers around them.

The rules themselves (``STEPS[name](param, grad, state, **hyper)``, written from the published
algorithms, independent of gdfast) live in gdfast/bench/reference.py, the project's one
reference, which the benchmark's correctness gate uses too. This module loads that file by its
path, without importing gdfast (whose package would load the kernels under test), from the
source tree if the tests run from one, else from the installed package.

The ``*_same_order`` functions at the end are *not* independent references: they repeat
gdfast's documented kernel operation order in the arrays' own dtype, so that a result that
must be bitwise equal (Lion's sign near zero, the "no FMA contraction" promise) can be
checked exactly.
"""

from __future__ import annotations

import importlib.util
import math
import pathlib
from typing import Any, Callable, Dict, List, MutableMapping, Optional, Sequence

import numpy as np

State = MutableMapping[str, Any]

__all__ = [
    "STEPS",
    "SAME_ORDER",
    "lion_sign_argument",
    "ReferenceOptimizer",
]


def _reference_file() -> pathlib.Path:
    source = pathlib.Path(__file__).resolve().parents[1] / "gdfast" / "bench" / "reference.py"
    if source.is_file():
        return source
    spec = importlib.util.find_spec("gdfast")  # a top-level find_spec imports nothing
    assert spec is not None and spec.submodule_search_locations, "gdfast is not installed"
    return pathlib.Path(list(spec.submodule_search_locations)[0]) / "bench" / "reference.py"


def _load_rules() -> Any:
    spec = importlib.util.spec_from_file_location("gdfast_reference_rules", _reference_file())
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STEPS: Dict[str, Callable[..., np.ndarray]] = _load_rules().STEPS


def _f64(x: Any) -> np.ndarray:
    return np.array(x, dtype=np.float64, copy=True)


# -- Lion (Chen et al. 2023, Algorithm 2) -------------------------------------------------------
def lion_sign_argument(grad: Any, state: State, *, beta1: float = 0.9,
                       maximize: bool = False) -> np.ndarray:
    """c_t = beta1 * m_{t-1} + (1 - beta1) * g_t, whose sign Lion's next step applies."""
    g = _f64(grad)
    if maximize:
        g = -g
    m = state["exp_avg"] if "exp_avg" in state else np.zeros_like(g)
    return beta1 * m + (1.0 - beta1) * g


class ReferenceOptimizer:
    """A list of float64 parameters stepped by one reference rule, in place (for training)."""

    def __init__(self, rule: str, params: Sequence[np.ndarray], **hyper: Any) -> None:
        for p in params:
            if p.dtype != np.float64:
                raise TypeError("reference parameters are float64")
        self.step_fn = STEPS[rule]
        self.params = list(params)
        self.hyper = hyper
        self.state: List[Dict[str, Any]] = [{} for _ in self.params]

    def step(self, grads: Sequence[Optional[np.ndarray]]) -> None:
        for p, g, st in zip(self.params, grads, self.state):
            if g is not None:
                p[...] = self.step_fn(p, g, st, **self.hyper)


# -- gdfast's kernel operation order, in the arrays' dtype (not independent) ---------------------
# As csrc/optim/<name>.h documents it (the `update` and `coef` functions). Coefficients are
# computed in double and rounded once to the dtype, as the kernels' coef() does; every NumPy
# ufunc on float32/float64 arrays is one correctly rounded IEEE operation, so these give
# gdfast's results bit for bit unless gdfast contracts to FMA or orders the operations otherwise.
# The gradient is multiplied by grad_factor = (-1 if maximize else 1) / grad_scale, exact for the
# default grad_scale = 1.
#
# One signature for all: ``SAME_ORDER[name](p, g, states, *, step, <hyper>, <scalar states>)``
# updates p and the state arrays of the dict ``states`` (torch's names) in place, and returns the
# scalar states after the step as the op does (NAdam, ASGD) or None. ``step`` is ignored by the
# rules that keep no count (Lion).
Arrays = Dict[str, np.ndarray]


def _grad_factor(g: np.ndarray, maximize: bool, grad_scale: float) -> np.ndarray:
    return g * g.dtype.type((-1.0 if maximize else 1.0) / grad_scale)


def _max(a: Any, b: Any) -> np.ndarray:
    """lane_max: a > b ? a : b (a NaN in b propagates)."""
    return np.where(a > b, a, b)


def _min(a: Any, b: Any) -> np.ndarray:
    """lane_min: a < b ? a : b (a NaN in b propagates)."""
    return np.where(a < b, a, b)


def _sign(x: np.ndarray) -> np.ndarray:
    """lane_sign: +-1, zeros (with their sign) and NaN unchanged."""
    one = x.dtype.type(1)
    return np.where(x > 0, one, np.where(x < 0, -one, x))


def _moments_same_order(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, *,
                        lr: float, beta1: float, beta2: float, weight_decay: float,
                        decoupled: bool, maximize: bool, grad_scale: float) -> np.ndarray:
    """csrc/optim/moments.h (Adam, NAdam, RAdam): in place on p, m, v; returns the gradient
    as the rest of the rule uses it."""
    T = p.dtype.type
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        if decoupled:
            p[...] = p * T(1.0 - lr * weight_decay)
        else:
            g = g + p * T(weight_decay)
    m[...] = m + (g - m) * T(1.0 - beta1)
    v[...] = v * T(beta2) + g * g * T(1.0 - beta2)
    return g


def sgd_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1e-3,
                   momentum: float = 0.0, dampening: float = 0.0, nesterov: bool = False,
                   weight_decay: float = 0.0, maximize: bool = False,
                   grad_scale: float = 1.0) -> None:
    T = p.dtype.type
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        g = g + p * T(weight_decay)
    if momentum != 0:
        buf = s["momentum_buffer"]
        if step == 1:
            buf[...] = g
        else:
            buf[...] = buf * T(momentum) + g * T(1.0 - dampening)
        g = g + buf * T(momentum) if nesterov else buf
    p[...] = p + g * T(-lr)


def adam_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1e-3,
                    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                    weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                    amsgrad: bool = False, maximize: bool = False,
                    grad_scale: float = 1.0) -> None:
    """The last line in Kingma & Ba's efficient form (one division)."""
    T = p.dtype.type
    m, v = s["exp_avg"], s["exp_avg_sq"]
    bc1 = 1.0 - beta1**step
    bc2_sqrt = math.sqrt(1.0 - beta2**step)
    g = _moments_same_order(p, g, m, v, lr=lr, beta1=beta1, beta2=beta2,
                            weight_decay=weight_decay, decoupled=decoupled_weight_decay,
                            maximize=maximize, grad_scale=grad_scale)
    second = v
    if amsgrad:
        vmax = s["max_exp_avg_sq"]
        vmax[...] = _max(vmax, v)
        second = vmax
    denom = np.sqrt(second) + T(eps * bc2_sqrt)
    p[...] = p + (m / denom) * T(-lr * bc2_sqrt / bc1)


def lion_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: Any = None,
                    lr: float = 1e-4, beta1: float = 0.9, beta2: float = 0.99,
                    weight_decay: float = 0.0, maximize: bool = False,
                    grad_scale: float = 1.0) -> None:
    T = p.dtype.type
    m = s["exp_avg"]
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        p[...] = p * T(1.0 - lr * weight_decay)
    p[...] = p + _sign(m * T(beta1) + g * T(1.0 - beta1)) * T(-lr)
    m[...] = m * T(beta2) + g * T(1.0 - beta2)


def rmsprop_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1e-2,
                       alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
                       momentum: float = 0.0, centered: bool = False, maximize: bool = False,
                       grad_scale: float = 1.0) -> None:
    T = p.dtype.type
    v = s["square_avg"]
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        g = g + p * T(weight_decay)
    v[...] = v * T(alpha) + g * g * T(1.0 - alpha)
    if centered:
        g_avg = s["grad_avg"]
        g_avg[...] = g_avg + (g - g_avg) * T(1.0 - alpha)
        denom = np.sqrt(v - g_avg * g_avg) + T(eps)
    else:
        denom = np.sqrt(v) + T(eps)
    if momentum > 0:
        buf = s["momentum_buffer"]
        buf[...] = buf * T(momentum) + g / denom
        p[...] = p + buf * T(-lr)
    else:
        p[...] = p + (g / denom) * T(-lr)


def adagrad_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1e-2,
                       lr_decay: float = 0.0, weight_decay: float = 0.0,
                       initial_accumulator_value: float = 0.0, eps: float = 1e-10,
                       maximize: bool = False, grad_scale: float = 1.0) -> None:
    """initial_accumulator_value only sets where ``sum`` starts (the caller's business)."""
    T = p.dtype.type
    total = s["sum"]
    lr_t = lr / (1.0 + (step - 1) * lr_decay)
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        g = g + p * T(weight_decay)
    total[...] = total + g * g
    p[...] = p + (g / (np.sqrt(total) + T(eps))) * T(-lr_t)


def adadelta_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1.0,
                        rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
                        maximize: bool = False, grad_scale: float = 1.0) -> None:
    T = p.dtype.type
    v, acc = s["square_avg"], s["acc_delta"]
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        g = g + p * T(weight_decay)
    v[...] = v * T(rho) + g * g * T(1.0 - rho)
    delta = np.sqrt(acc + T(eps)) / np.sqrt(v + T(eps)) * g
    acc[...] = acc * T(rho) + delta * delta * T(1.0 - rho)
    p[...] = p + delta * T(-lr)


def adamax_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 2e-3,
                      beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                      weight_decay: float = 0.0, maximize: bool = False,
                      grad_scale: float = 1.0) -> None:
    T = p.dtype.type
    m, u = s["exp_avg"], s["exp_inf"]
    bc1 = 1.0 - beta1**step
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        g = g + p * T(weight_decay)
    m[...] = m + (g - m) * T(1.0 - beta1)
    decayed = u * T(beta2)
    fresh = np.abs(g) + T(eps)
    u[...] = np.where(np.isnan(decayed), decayed, _max(decayed, fresh))
    p[...] = p + (m / u) * T(-lr / bc1)


def nadam_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 2e-3,
                     beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                     weight_decay: float = 0.0, momentum_decay: float = 4e-3,
                     decoupled_weight_decay: bool = False, maximize: bool = False,
                     mu_product: float = 1.0, grad_scale: float = 1.0) -> Dict[str, float]:
    """The last line as p + (c1 g + c2 m) / (sqrt(v) + eps sqrt(bc2)), c1 and c2 scaled by
    sqrt(bc2); mu_product advanced in double."""
    T = p.dtype.type
    m, v = s["exp_avg"], s["exp_avg_sq"]
    bc2_sqrt = math.sqrt(1.0 - beta2**step)
    mu_now = beta1 * (1.0 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((step + 1.0) * momentum_decay))
    product = mu_product * mu_now
    grad_coef = -lr * (1.0 - mu_now) / (1.0 - product) * bc2_sqrt
    exp_avg_coef = -lr * mu_next / (1.0 - product * mu_next) * bc2_sqrt
    g = _moments_same_order(p, g, m, v, lr=lr, beta1=beta1, beta2=beta2,
                            weight_decay=weight_decay, decoupled=decoupled_weight_decay,
                            maximize=maximize, grad_scale=grad_scale)
    p[...] = p + (g * T(grad_coef) + m * T(exp_avg_coef)) / (np.sqrt(v) + T(eps * bc2_sqrt))
    return {"mu_product": product}


def radam_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1e-3,
                     beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                     weight_decay: float = 0.0, decoupled_weight_decay: bool = False,
                     maximize: bool = False, grad_scale: float = 1.0) -> None:
    """The rectification switch and factor per call in double; per element a select between
    rectified_step / (sqrt(v) + eps) and the plain step, multiplied by m."""
    T = p.dtype.type
    m, v = s["exp_avg"], s["exp_avg_sq"]
    beta2_t = beta2**step
    bc1 = 1.0 - beta1**step
    bc2 = 1.0 - beta2_t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * step * beta2_t / bc2
    rectified = rho_t > 5.0
    rect = (math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                      / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t)) if rectified else 0.0)
    g = _moments_same_order(p, g, m, v, lr=lr, beta1=beta1, beta2=beta2,
                            weight_decay=weight_decay, decoupled=decoupled_weight_decay,
                            maximize=maximize, grad_scale=grad_scale)
    adaptive = T(-lr * rect * math.sqrt(bc2) / bc1) / (np.sqrt(v) + T(eps))
    p[...] = p + m * (adaptive if rectified else T(-lr / bc1))


def asgd_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1e-2,
                    lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
                    weight_decay: float = 0.0, maximize: bool = False,
                    eta: Optional[float] = None, mu: float = 1.0,
                    grad_scale: float = 1.0) -> Dict[str, float]:
    """eta (None: lr) and mu are this step's; returns those of the next step, in double."""
    T = p.dtype.type
    ax = s["ax"]
    eta = lr if eta is None else eta
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        g = g + p * T(weight_decay)
    p[...] = p * T(1.0 - lambd * eta)
    p[...] = p + g * T(-eta)
    if mu != 1.0:
        ax[...] = ax + (p - ax) * T(mu)
    else:
        ax[...] = p
    return {"eta": lr / (1.0 + lambd * lr * step) ** alpha,
            "mu": 1.0 / (step - t0 if step - t0 > 1.0 else 1.0)}


def rprop_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1e-2,
                     etaminus: float = 0.5, etaplus: float = 1.2, step_size_min: float = 1e-6,
                     step_size_max: float = 50.0, maximize: bool = False,
                     grad_scale: float = 1.0) -> None:
    """lr only sets where ``step_size`` starts (the caller's business)."""
    T = p.dtype.type
    prev, step_size = s["prev"], s["step_size"]
    g = _grad_factor(g, maximize, grad_scale)
    agreement = g * prev
    zero = T(0)
    shrink = agreement < zero
    one_or_nan = agreement * zero + T(1)
    eta = np.where(agreement > zero, T(etaplus), np.where(shrink, T(etaminus), one_or_nan))
    step_size[...] = _min(T(step_size_max), _max(T(step_size_min), step_size * eta))
    g = np.where(shrink, zero, g)
    p[...] = p - _sign(g) * step_size
    prev[...] = g


def adan_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1e-3,
                    beta1: float = 0.98, beta2: float = 0.92, beta3: float = 0.99,
                    weight_decay: float = 0.0, eps: float = 1e-8, weight_decouple: bool = False,
                    maximize: bool = False, grad_scale: float = 1.0) -> None:
    T = p.dtype.type
    m, v, n, negative_previous = (s[k] for k in ("exp_avg", "exp_avg_sq", "exp_avg_diff",
                                                 "previous_grad"))
    bc3_sqrt = math.sqrt(1.0 - beta3**step)
    g = _grad_factor(g, maximize, grad_scale)
    d = np.zeros_like(g) if step <= 1 else g + negative_previous
    m[...] = m + (g - m) * T(1.0 - beta1)
    n[...] = n + (d - n) * T(1.0 - beta2)
    corrected = d * T(beta2) + g
    v[...] = v * T(beta3) + corrected * corrected * T(1.0 - beta3)
    decay = lr * weight_decay
    if weight_decay != 0 and weight_decouple:
        p[...] = p * T(1.0 - decay)
    p[...] = p + (m * T(-lr * bc3_sqrt / (1.0 - beta1**step))
                  + n * T(-lr * beta2 * bc3_sqrt / (1.0 - beta2**step))) / (
                      np.sqrt(v) + T(eps * bc3_sqrt))
    if weight_decay != 0 and not weight_decouple:
        p[...] = p * T(1.0 / (1.0 + decay))
    negative_previous[...] = g * T(-1)


def ademamix_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int,
                        lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                        beta3: float = 0.9999, weight_decay: float = 0.0, alpha: float = 5.0,
                        t_alpha_beta3: float = 0.0, eps: float = 1e-8,
                        weight_decouple: bool = False, fixed_decay: bool = False,
                        maximize: bool = False, grad_scale: float = 1.0) -> None:
    T = p.dtype.type
    m_fast, v, m_slow = s["exp_avg"], s["exp_avg_sq"], s["exp_avg_slow"]
    bc2_sqrt = math.sqrt(1.0 - beta2**step)
    if t_alpha_beta3 > 0:
        progress = step / t_alpha_beta3
        alpha = min(progress * alpha, alpha)
        ln1, ln3 = math.log(beta1), math.log(beta3)
        beta3 = min(math.exp(ln1 * ln3 / ((1.0 - progress) * ln3 + progress * ln1)), beta3)
    g = _moments_same_order(p, g, m_fast, v, lr=1.0 if fixed_decay else lr, beta1=beta1,
                            beta2=beta2, weight_decay=weight_decay, decoupled=weight_decouple,
                            maximize=maximize, grad_scale=grad_scale)
    m_slow[...] = m_slow + (g - m_slow) * T(1.0 - beta3)
    p[...] = p + (m_fast * T(-lr * bc2_sqrt / (1.0 - beta1**step))
                  + m_slow * T(-lr * alpha * bc2_sqrt)) / (np.sqrt(v) + T(eps * bc2_sqrt))


def schedulefree_adamw_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int,
                                  lr: float = 2.5e-3, beta1: float = 0.9, beta2: float = 0.999,
                                  weight_decay: float = 0.0, r: float = 0.0,
                                  weight_lr_power: float = 2.0, warmup_steps: float = 0.0,
                                  decoupling_c: float = 0.0, eps: float = 1e-8,
                                  ams_bound: bool = False, maximize: bool = False,
                                  lr_max: float = -1.0, weight_sum: float = 0.0,
                                  grad_scale: float = 1.0) -> Dict[str, float]:
    T = p.dtype.type
    z, v = s["z"], s["exp_avg_sq"]
    lr_t = lr * (step / warmup_steps if step < warmup_steps else 1.0)
    lr_max = max(lr_t, lr_max)
    weight = step**r * lr_max**weight_lr_power
    weight_sum += weight
    c = weight / weight_sum if weight_sum != 0 else 0.0
    if decoupling_c > 0:
        c = min(1.0, c * (1.0 - beta1) * decoupling_c)
    g = _grad_factor(g, maximize, grad_scale)
    if step <= 1:
        z[...] = p
    v[...] = v * T(beta2) + g * g * T(1.0 - beta2)
    second = v * T(1.0 / (1.0 - beta2**step))
    if ams_bound:
        vmax = s["max_exp_avg_sq"]
        vmax[...] = _max(vmax, second)
        second = vmax
    u = g / (np.sqrt(second + T(1e-15)) + T(eps))
    if weight_decay != 0:
        u = u + p * T(weight_decay)
    p[...] = p + (z - p) * T(c)
    p[...] = p + u * T(lr_t * (beta1 * (1.0 - c) - 1.0))
    z[...] = z + u * T(-lr_t)
    return {"lr_max": lr_max, "weight_sum": weight_sum}


def sophia_same_order(param: np.ndarray, g: np.ndarray, s: Arrays, *, step: int,
                      hessian: np.ndarray, lr: float = 6e-2, beta1: float = 0.96,
                      beta2: float = 0.99, weight_decay: float = 0.0, p: float = 1e-2,
                      eps: float = 1e-12, weight_decouple: bool = True, fixed_decay: bool = False,
                      update_hessian: bool = True, maximize: bool = False,
                      grad_scale: float = 1.0) -> None:
    """(``p`` is pytorch_optimizer's name for the clamp's bound: the param is ``param``.)"""
    T = param.dtype.type
    m, h = s["momentum"], s["hessian_moment"]
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        if weight_decouple:
            param[...] = param * T(1.0 - weight_decay * (1.0 if fixed_decay else lr))
        else:
            g = g + param * T(weight_decay)
    m[...] = m + (g - m) * T(1.0 - beta1)
    if update_hessian:
        h[...] = h + (hessian.astype(param.dtype) - h) * T(1.0 - beta2)
    ratio = m / _max(T(eps), h)
    param[...] = param + _min(T(p), _max(T(-p), ratio)) * T(-lr)


def _chunk_sum_squares(x: np.ndarray) -> float:
    """The kernels' sums over a tensor (cpu/kernels/elementwise.h, ChunkSquares): chunks of
    16384 elements; in each, element i into accumulator i % 16 in order (in double), the 16
    added pairwise; the chunks added in order."""
    squares = np.square(x.astype(np.float64).ravel())
    total = 0.0
    for start in range(0, squares.size, 16384):
        chunk = squares[start:start + 16384]
        rows = np.zeros(-(-chunk.size // 16) * 16)
        rows[:chunk.size] = chunk  # (adding 0.0 to a sum of squares changes nothing)
        acc = np.zeros(16)
        for row in rows.reshape(-1, 16):
            acc = acc + row
        width = 8
        while width:
            acc = acc[:width] + acc[width:2 * width]
            width //= 2
        total += float(acc[0])
    return total


def lamb_same_order(p: np.ndarray, g: np.ndarray, s: Arrays, *, step: int, lr: float = 1e-3,
                    beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-6,
                    weight_decay: float = 0.0, weight_decouple: bool = True,
                    fixed_decay: bool = False, rectify: bool = False,
                    degenerated_to_sgd: bool = False, n_sma_threshold: float = 5.0,
                    grad_averaging: bool = True, adam: bool = False, maximize: bool = False,
                    grad_scale: float = 1.0,
                    stored: Optional[Callable[[str, np.ndarray], np.ndarray]] = None) -> None:
    """csrc/optim/lamb.h: pass 1 (the moments; the sums of squares of the decayed p and of d,
    or of p - s d with rectify), the factor s * trust in double, pass 2. ``stored(name, x)``:
    a moment as its storage holds it (narrow states: rounded, widened back), which the sums
    and pass 2 then read."""
    T = p.dtype.type
    m, v = s["exp_avg"], s["exp_avg_sq"]
    g = _grad_factor(g, maximize, grad_scale)
    m[...] = m * T(beta1) + g * T(1.0 - beta1 if grad_averaging else 1.0)
    v[...] = v * T(beta2) + g * g * T(1.0 - beta2)
    if stored is not None:
        m[...] = stored("exp_avg", m)
        v[...] = stored("exp_avg_sq", v)
    size, adaptive = lr, True
    if rectify:
        n_sma_max = 2.0 / (1.0 - beta2) - 1.0
        beta2_t = math.pow(beta2, step)
        n_sma = n_sma_max - 2.0 * step * beta2_t / (1.0 - beta2_t)
        if n_sma >= n_sma_threshold:
            size *= math.sqrt((1.0 - beta2_t) * (n_sma - 4.0) / (n_sma_max - 4.0)
                              * (n_sma - 2.0) / n_sma * n_sma_max / (n_sma_max - 2.0))
        else:
            adaptive = False
            size *= 1.0 if degenerated_to_sgd else -1.0
    size /= 1.0 - math.pow(beta1, step)
    if weight_decay != 0 and weight_decouple:
        p[...] = p * T(1.0 - weight_decay * (1.0 if fixed_decay else lr))
    d = m / (np.sqrt(v) + T(eps)) if adaptive else m.copy()
    if weight_decay != 0 and not weight_decouple and not rectify:
        d = d + p * T(weight_decay)
    if rectify and not size > 0:
        return
    w = min(math.sqrt(_chunk_sum_squares(p)), 10.0)
    u = math.sqrt(_chunk_sum_squares(p + d * T(-size) if rectify else d))
    trust = 1.0 if adam or w == 0 or u == 0 else w / (u + eps)
    p[...] = p - d * T(size * trust)


SAME_ORDER: Dict[str, Callable[..., Optional[Dict[str, float]]]] = {
    "sgd": sgd_same_order,
    "adam": adam_same_order,
    "lion": lion_same_order,
    "rmsprop": rmsprop_same_order,
    "adagrad": adagrad_same_order,
    "adadelta": adadelta_same_order,
    "adamax": adamax_same_order,
    "nadam": nadam_same_order,
    "radam": radam_same_order,
    "asgd": asgd_same_order,
    "rprop": rprop_same_order,
    "adan": adan_same_order,
    "ademamix": ademamix_same_order,
    "schedulefree_adamw": schedulefree_adamw_same_order,
    "sophia": sophia_same_order,
    "lamb": lamb_same_order,
}
