"""The optimizers the benchmark steps: hyperparameters, in-place access pattern, and an
independent float64 reference rule for the correctness gate.

A case is one optimizer configuration. Its access pattern (``n_states`` state arrays beside
param and grad, every array read once and param + states written back in place) fixes the
bytes one step must move, and so the bandwidth bound: ``(3 + 2 * n_states) * itemsize`` per
element (fp32: SGD 12, momentum and Lion 20, Adam and AdamW 28).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Sequence, Union

import numpy as np

Hyper = Mapping[str, Union[float, bool]]


@dataclass(frozen=True)
class Case:
    name: str  # what --optimizers names: sgd, momentum, adam, adamw, lion
    family: str  # the gdfast op: sgd, adam, lion
    n_states: int  # state arrays per parameter tensor
    hyper: Hyper = field(default_factory=dict)
    title: str = ""

    def bytes_per_elem(self, itemsize: int) -> int:
        """Bytes one in-place step must move per parameter (read p, g, states; write p,
        states back)."""
        return (3 + 2 * self.n_states) * itemsize

    def describe(self) -> str:
        return f"{self.name}: {self.title}"


CASES: Dict[str, Case] = {
    c.name: c
    for c in (
        Case("sgd", "sgd", 0, {"lr": 1e-2}, "SGD lr=1e-2, no momentum"),
        Case("momentum", "sgd", 1, {"lr": 1e-2, "momentum": 0.9}, "SGD lr=1e-2, momentum=0.9"),
        Case("adam", "adam", 2,
             {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 0.0},
             "Adam lr=1e-3, betas=(0.9, 0.999), eps=1e-8"),
        Case("adamw", "adam", 2,
             {"lr": 1e-3, "beta1": 0.9, "beta2": 0.999, "eps": 1e-8, "weight_decay": 1e-2,
              "decoupled_weight_decay": True},
             "AdamW lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2"),
        Case("lion", "lion", 1, {"lr": 1e-4, "beta1": 0.9, "beta2": 0.99, "weight_decay": 1e-2},
             "Lion lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-2"),
    )
}


# ---------------------------------------------------------------------------------------------
# Float64 reference: the update rules as torch.optim 2.13 and lion-pytorch define them, written
# plainly and independently of every implementation under test. Used on a sample of elements
# only (every rule is elementwise), so it costs nothing even for 1e8-element workloads.


def reference(case: Case, p0: np.ndarray, g: np.ndarray, steps: int) -> np.ndarray:
    """The parameter after ``steps`` steps from ``p0`` with fresh (zero) state and the same
    gradient ``g`` every step, computed in float64."""
    h = case.hyper
    p = np.array(p0, dtype=np.float64)
    g = np.array(g, dtype=np.float64)
    lr = float(h["lr"])
    wd = float(h.get("weight_decay", 0.0))
    if case.family == "sgd":
        mom = float(h.get("momentum", 0.0))
        buf = np.zeros_like(p)
        for t in range(1, steps + 1):
            d = g + wd * p
            if mom:
                buf = d.copy() if t == 1 else mom * buf + d
                d = buf
            p = p - lr * d
    elif case.family == "adam":
        b1, b2, eps = float(h["beta1"]), float(h["beta2"]), float(h["eps"])
        decoupled = bool(h.get("decoupled_weight_decay", False))
        m = np.zeros_like(p)
        v = np.zeros_like(p)
        for t in range(1, steps + 1):
            d = g
            if decoupled:
                p = p * (1.0 - lr * wd)
            else:
                d = g + wd * p
            m = b1 * m + (1.0 - b1) * d
            v = b2 * v + (1.0 - b2) * d * d
            m_hat = m / (1.0 - b1**t)
            v_hat = v / (1.0 - b2**t)
            p = p - lr * m_hat / (np.sqrt(v_hat) + eps)
    elif case.family == "lion":
        b1, b2 = float(h["beta1"]), float(h["beta2"])
        m = np.zeros_like(p)
        for _ in range(steps):
            c = b1 * m + (1.0 - b1) * g
            p = p * (1.0 - lr * wd) - lr * np.sign(c)
            m = b2 * m + (1.0 - b2) * g
    else:  # pragma: no cover - CASES only holds the families above
        raise ValueError(f"no reference for {case.family}")
    return p


def parse_optimizers(text: str) -> List[Case]:
    """``"adam,lion"`` -> [CASES["adam"], CASES["lion"]]; ``"all"`` -> every case."""
    names: Sequence[str] = list(CASES) if text.strip() == "all" else [
        s.strip() for s in text.split(",") if s.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise ValueError(f"unknown optimizer {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(CASES)} or all")
    return [CASES[n] for n in dict.fromkeys(names)]


def rtol(dtype: np.dtype, steps: int) -> float:
    """The gate's tolerance, relative to the parameter's magnitude plus the distance the
    reference moved it: each step may round the parameter and its update a few times in the
    implementation's dtype (torch's and gdfast's formulas differ in association), so
    8 * steps * machine epsilon. In fp32 an update off by 1% (a wrong learning rate, a missing
    bias correction) exceeds it several times over."""
    return 8.0 * steps * float(np.finfo(dtype).eps)

