"""The correctness gate: before an implementation is timed, its parameters after a few steps
from the initial state are compared with the float64 reference (reference.py, the project's
one) on a sample of elements. A wrong result is reported as an error, never as a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Protocol, Sequence

import numpy as np

from .cases import Case
from .reference import STEPS
from .workloads import Data

# Six steps: RAdam's rectified update starts at step 6 (rho_t > 5 with beta2 = 0.999), so
# every branch a timed run takes is checked; the tolerance grows with the count (rtol).
GATE_STEPS = 6


def reference(case: Case, p0: np.ndarray, g: np.ndarray, steps: int) -> np.ndarray:
    """The parameter after ``steps`` steps from ``p0`` with fresh state and the same gradient
    ``g`` every step, computed in float64 (every rule is elementwise, so a sample of elements
    stands for the whole tensor)."""
    step = STEPS[case.rule.name]
    p = np.array(p0, dtype=np.float64)
    g = np.array(g, dtype=np.float64)
    state: Dict[str, Any] = {}
    for _ in range(steps):
        p = step(p, g, state, **case.hyper)
    return p


def rtol(dtype: np.dtype, steps: int) -> float:
    """The gate's tolerance, relative to the parameter's magnitude plus the distance the
    reference moved it: each step may round the parameter and its update a few times in the
    implementation's dtype (torch's and gdfast's formulas differ in association), so
    8 * steps * machine epsilon. In fp32 an update off by 1% (a wrong learning rate, a missing
    bias correction) exceeds it several times over."""
    return 8.0 * steps * float(np.finfo(dtype).eps)


class Steppable(Protocol):
    """What the gate checks (an implementation's runner): reset to p0 with fresh state, one
    step, and the stepped parameters."""

    fresh: bool

    @property
    def params(self) -> Sequence[np.ndarray]: ...

    def reset(self) -> None: ...

    def step(self) -> None: ...


@dataclass
class Verdict:
    ok: bool
    worst: float  # largest |error| / tolerance over the sample (nan if not comparable)
    message: str = ""
    wrote_grad: bool = False  # the implementation wrote into the (shared) gradients


class Gate:
    """The reference for one (case, data), computed once, checked against many runners."""

    def __init__(self, case: Case, data: Data, steps: int = GATE_STEPS):
        self.case, self.data, self.steps = case, data, steps
        self.p0 = data.gather(data.p0).astype(np.float64)
        self.g = data.gather(data.grads)
        self.expected = reference(case, self.p0, self.g, steps)
        self.rtol = rtol(data.dtype, steps)
        moved = np.abs(self.expected - self.p0)
        scale = float(moved.max()) if moved.size else 0.0
        self.tol = self.rtol * (np.abs(self.expected) + np.abs(self.p0) + scale)
        self.offsets = np.cumsum([0] + [len(s) for s in data.sample])

    def where(self, i: int) -> str:
        t = int(np.searchsorted(self.offsets, i, side="right") - 1)
        e = int(self.data.sample[t][i - self.offsets[t]])
        return f"tensor {t} element {e}" if len(self.data.sample) > 1 else f"element {e}"

    def check(self, runner: Steppable) -> Verdict:
        """From fresh state (reset unless just built or reset), take ``steps`` steps, compare.
        Leaves the runner stepped (the gate's steps are its warm-up)."""
        if not getattr(runner, "fresh", False):
            runner.reset()
        runner.fresh = False
        for _ in range(self.steps):
            runner.step()
        verdict = self.verdict(self.data.gather(runner.params))
        if verdict.wrote_grad:
            self.data.restore_grads()  # for the implementations after this one
        return verdict

    def verdict(self, got: np.ndarray) -> Verdict:
        if not np.array_equal(self.data.gather(self.data.grads), self.g):
            return Verdict(False, float("nan"), "wrong: it modified the gradient", wrote_grad=True)
        if got.size == 0:
            return Verdict(True, 0.0)
        got64 = got.astype(np.float64)
        bad = ~np.isfinite(got64)
        if bad.any():
            i = int(np.argmax(bad))
            return Verdict(False, float("inf"),
                           f"wrong result after {self.steps} steps: {got64[i]} at {self.where(i)}")
        ratio = np.abs(got64 - self.expected) / np.maximum(self.tol, np.finfo(np.float64).tiny)
        i = int(np.argmax(ratio))
        worst = float(ratio[i])
        if worst <= 1.0:
            return Verdict(True, worst)
        return Verdict(False, worst,
                       f"wrong result after {self.steps} steps: {got64[i]:.9g} at {self.where(i)}"
                       f", float64 reference {self.expected[i]:.9g} (error {worst:.3g}x the "
                       f"tolerance, rtol {self.rtol:.2g})")


def describe_failure(exc: BaseException, during: Optional[str] = None) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return f"raised during {during}: {text}" if during else f"raised {text}"
