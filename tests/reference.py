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
import pathlib
from typing import Any, Callable, Dict, List, MutableMapping, Optional, Sequence

import numpy as np

State = MutableMapping[str, Any]

__all__ = [
    "STEPS",
    "lion_sign_argument",
    "ReferenceOptimizer",
    "sgd_same_order",
    "adam_same_order",
    "lion_same_order",
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
