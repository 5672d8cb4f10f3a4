"""Reference update rules in float64 NumPy, written from the published algorithms.

Independent of gdfast: nothing here imports it, and the formulas are written the way the
sources state them, not in gdfast's kernel operation order:

* SGD: the algorithm box of ``torch.optim.SGD``'s documentation (momentum buffer set to the
  gradient on the first step, dampening only from the second step on, Sutskever-style
  Nesterov ``g + momentum * b``, L2 weight decay added to the gradient).
* Adam / AdamW: the algorithm boxes of ``torch.optim.Adam`` (Kingma & Ba 2015, L2 weight
  decay added to the gradient) and ``torch.optim.AdamW`` (Loshchilov & Hutter 2019,
  decoupled decay ``theta <- theta - lr * wd * theta`` before the moments). AMSGrad as those
  boxes give it (torch 2.13's, and torch's implementation): the running maximum is taken of
  the raw ``v_t`` and then bias-corrected, ``v_hat = max(v_max, v_t) / (1 - beta2^t)``.
* Lion: Chen et al. 2023, "Symbolic Discovery of Optimization Algorithms", Algorithm 2:
  ``c = beta1 m + (1 - beta1) g;  theta <- theta - lr (sign(c) + wd theta);
  m <- beta2 m + (1 - beta2) g``.

``maximize`` (not part of the papers) follows torch: the gradient is negated first.

Each ``*_step(param, grad, state, **hyper)`` takes arrays of any float dtype, computes in
float64 on copies, stores its float64 state arrays (named as torch names them) in the dict
``state`` and returns the new float64 parameter. The inputs are never modified.

The ``*_same_order`` functions at the end are *not* independent references: they repeat
gdfast's documented kernel operation order in the arrays' own dtype, so that a result that
must be bitwise equal (Lion's sign near zero, the "no FMA contraction" promise) can be
checked exactly.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, MutableMapping, Optional, Sequence

import numpy as np

State = MutableMapping[str, Any]

__all__ = [
    "sgd_step",
    "adam_step",
    "lion_step",
    "lion_sign_argument",
    "STEPS",
    "ReferenceOptimizer",
    "sgd_same_order",
    "adam_same_order",
    "lion_same_order",
]


def _f64(x: Any) -> np.ndarray:
    return np.array(x, dtype=np.float64, copy=True)


# -- torch.optim.SGD ----------------------------------------------------------------------------
def sgd_step(param: Any, grad: Any, state: State, *, lr: float, momentum: float = 0.0,
             dampening: float = 0.0, nesterov: bool = False, weight_decay: float = 0.0,
             maximize: bool = False) -> np.ndarray:
    theta = _f64(param)
    g = _f64(grad)
    if maximize:
        g = -g
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


# -- torch.optim.Adam / AdamW ---------------------------------------------------------------------
def adam_step(param: Any, grad: Any, state: State, *, lr: float = 1e-3, beta1: float = 0.9,
              beta2: float = 0.999, eps: float = 1e-8, weight_decay: float = 0.0,
              decoupled_weight_decay: bool = False, amsgrad: bool = False,
              maximize: bool = False) -> np.ndarray:
    theta = _f64(param)
    g = _f64(grad)
    if not state:
        state["step"] = 0
        state["exp_avg"] = np.zeros_like(theta)
        state["exp_avg_sq"] = np.zeros_like(theta)
        if amsgrad:
            state["max_exp_avg_sq"] = np.zeros_like(theta)
    t = state["step"] = state["step"] + 1
    if maximize:
        g = -g
    if weight_decay != 0:
        if decoupled_weight_decay:  # AdamW: theta_t <- theta_{t-1} - lr * wd * theta_{t-1}
            theta = theta - lr * weight_decay * theta
        else:  # Adam: L2 penalty in the gradient
            g = g + weight_decay * theta
    m = beta1 * state["exp_avg"] + (1.0 - beta1) * g
    v = beta2 * state["exp_avg_sq"] + (1.0 - beta2) * g**2
    state["exp_avg"], state["exp_avg_sq"] = m, v
    m_hat = m / (1.0 - beta1**t)
    if amsgrad:
        v_max = np.maximum(state["max_exp_avg_sq"], v)
        state["max_exp_avg_sq"] = v_max
        v_hat = v_max / (1.0 - beta2**t)
    else:
        v_hat = v / (1.0 - beta2**t)
    return theta - lr * m_hat / (np.sqrt(v_hat) + eps)


# -- Lion (Chen et al. 2023, Algorithm 2) -------------------------------------------------------
def lion_sign_argument(grad: Any, state: State, *, beta1: float = 0.9,
                       maximize: bool = False) -> np.ndarray:
    """c_t = beta1 * m_{t-1} + (1 - beta1) * g_t, whose sign Lion's next step applies."""
    g = _f64(grad)
    if maximize:
        g = -g
    m = state["exp_avg"] if "exp_avg" in state else np.zeros_like(g)
    return beta1 * m + (1.0 - beta1) * g


def lion_step(param: Any, grad: Any, state: State, *, lr: float = 1e-4, beta1: float = 0.9,
              beta2: float = 0.99, weight_decay: float = 0.0,
              maximize: bool = False) -> np.ndarray:
    theta = _f64(param)
    g = _f64(grad)
    if maximize:
        g = -g
    m = state["exp_avg"] if "exp_avg" in state else np.zeros_like(theta)
    c = beta1 * m + (1.0 - beta1) * g
    theta = theta - lr * (np.sign(c) + weight_decay * theta)
    state["exp_avg"] = beta2 * m + (1.0 - beta2) * g
    return theta


STEPS: Dict[str, Callable[..., np.ndarray]] = {
    "sgd": sgd_step,
    "adam": adam_step,
    "lion": lion_step,
}


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
# As csrc/optim/{sgd,adam,lion}.h document it. Coefficients are computed in double and rounded
# once to the dtype, as the kernels do; every NumPy ufunc on float32/float64 arrays is one
# correctly rounded IEEE operation, so these give gdfast's results bit for bit unless gdfast
# contracts to FMA or orders the operations otherwise. The gradient is multiplied by
# grad_factor = (-1 if maximize else 1) / grad_scale, exact for the default grad_scale = 1.
def _grad_factor(g: np.ndarray, maximize: bool, grad_scale: float) -> np.ndarray:
    return g * g.dtype.type((-1.0 if maximize else 1.0) / grad_scale)


def sgd_same_order(p: np.ndarray, g: np.ndarray, buf: Optional[np.ndarray], *, step: int,
                   lr: float, momentum: float = 0.0, dampening: float = 0.0,
                   nesterov: bool = False, weight_decay: float = 0.0,
                   maximize: bool = False, grad_scale: float = 1.0) -> None:
    """In place on p (and buf): gdfast's SGD operation order."""
    T = p.dtype.type
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        g = g + p * T(weight_decay)
    if momentum != 0:
        assert buf is not None
        if step == 1:
            buf[...] = g
        else:
            buf[...] = buf * T(momentum) + g * T(1.0 - dampening)
        g = g + buf * T(momentum) if nesterov else buf
    p[...] = p + g * T(-lr)


def adam_same_order(p: np.ndarray, g: np.ndarray, m: np.ndarray, v: np.ndarray, *,
                    step: int, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.999,
                    eps: float = 1e-8, weight_decay: float = 0.0,
                    decoupled_weight_decay: bool = False, amsgrad: bool = False,
                    max_exp_avg_sq: Optional[np.ndarray] = None,
                    maximize: bool = False, grad_scale: float = 1.0) -> None:
    """In place on p, m, v (and max_exp_avg_sq): gdfast's Adam operation order, the last
    line in Kingma & Ba's efficient form (one division)."""
    T = p.dtype.type
    bc1 = 1.0 - beta1**step
    bc2_sqrt = np.sqrt(1.0 - beta2**step)
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        if decoupled_weight_decay:
            p[...] = p * T(1.0 - lr * weight_decay)
        else:
            g = g + p * T(weight_decay)
    m[...] = m + (g - m) * T(1.0 - beta1)
    v[...] = v * T(beta2) + g * g * T(1.0 - beta2)
    second = v
    if amsgrad:
        assert max_exp_avg_sq is not None
        max_exp_avg_sq[...] = np.where(max_exp_avg_sq > v, max_exp_avg_sq, v)
        second = max_exp_avg_sq
    denom = np.sqrt(second) + T(eps * bc2_sqrt)
    p[...] = p + (m / denom) * T(-lr * bc2_sqrt / bc1)


def lion_same_order(p: np.ndarray, g: np.ndarray, m: np.ndarray, *, lr: float = 1e-4,
                    beta1: float = 0.9, beta2: float = 0.99, weight_decay: float = 0.0,
                    maximize: bool = False, grad_scale: float = 1.0) -> None:
    """In place on p and m: gdfast's Lion operation order."""
    T = p.dtype.type
    g = _grad_factor(g, maximize, grad_scale)
    if weight_decay != 0:
        p[...] = p * T(1.0 - lr * weight_decay)
    p[...] = p + np.sign(m * T(beta1) + g * T(1.0 - beta1)) * T(-lr)
    m[...] = m * T(beta2) + g * T(1.0 - beta2)
