"""The correctness gate: before an implementation is timed, its parameters after a few steps
from the initial state are compared with the float64 reference (reference.py, the project's
one) on a sample of elements. A wrong result is reported as an error, never as a time."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Protocol, Sequence

import numpy as np

from .cases import Case
from .precision import FP32, NARROW, Precision, finfo, round_to, ulp
from .reference import STEPS
from .workloads import Data

# Six steps: RAdam's rectified update starts at step 6 (rho_t > 5 with beta2 = 0.999), so
# every branch a timed run takes is checked; the tolerance grows with the count (rtol).
GATE_STEPS = 6


def reference(case: Case, p0: np.ndarray, g: np.ndarray, steps: int,
              precision: Precision = FP32) -> np.ndarray:
    """The parameter after ``steps`` steps from ``p0`` with fresh state and the same gradient
    ``g`` every step, computed in float64 (an elementwise rule's on a sample of elements, which
    stands for the whole tensor; a two-pass rule's on each whole tensor). A mode that narrows
    a stored array (bf16 param or states) is simulated: after each step the param and every
    state are rounded to nearest in the type they are stored in. With a master copy, the
    (float32) master is returned."""
    step = STEPS[case.rule.name]
    p = np.array(p0, dtype=np.float64)
    g = np.array(g, dtype=np.float64)
    state: Dict[str, Any] = {}
    simulate = not precision.plain and not precision.master
    for _ in range(steps):
        p = step(p, g, state, **case.hyper)
        if simulate:
            p = round_to(p, precision.param)
            for name, value in state.items():
                if isinstance(value, np.ndarray):
                    state[name] = round_to(value, precision.state)
    return p


def rtol(dtype: Any, steps: int) -> float:
    """The gate's tolerance, relative to the parameter's magnitude plus the distance the
    reference moved it: each step may round the parameter and its update a few times in the
    implementation's dtype (torch's and gdfast's formulas differ in association), so
    8 * steps * machine epsilon. In fp32 an update off by 1% (a wrong learning rate, a missing
    bias correction) exceeds it several times over."""
    return 8.0 * steps * float(np.finfo(dtype).eps)


def storage_tolerance(precision: Precision, steps: int, expected: np.ndarray, p0: np.ndarray,
                      scale: float, states: Sequence[Any] = ()) -> np.ndarray:
    """What storing narrow arrays adds to the tolerance, per element (zero for a plain mode
    and for a master copy, which is float32). Against the simulated reference (rounded to
    nearest like it), each step's stored param may differ by up to 1.5 of its spacing:
    a stochastic rounding lands within one spacing of the exact value, the reference's within
    half of one, and a float32 result a rounding away from a tie rounds the other way. Each
    narrow state may differ by one spacing (2 eps relative) per step, and the update with it:
    2 * eps(state) * (the farthest move) per step; a narrow state that is an iterate (a point
    like the param: Schedule-Free's z) is rounded like the param, 1.5 of its spacing per step
    (its effect on the param is at most that). So in a bf16 mode the gate catches an
    update off by a factor of 2 either way (a wrong learning rate, a missing bias correction;
    measured: at least 1.3x the tolerance for every case, RAdam's 6 steps the closest), not
    one off by 1% as in fp32."""
    if precision.plain or precision.master:
        return np.zeros_like(expected)
    reach = np.maximum(np.abs(expected), np.abs(p0)) + scale
    per_step = 1.5 * ulp(reach, precision.param) if precision.param in NARROW else 0.0
    if precision.state in NARROW:
        per_step = per_step + 2.0 * float(finfo(precision.state).eps) * scale
        if any(s.iterate for s in states):
            per_step = per_step + 1.5 * ulp(reach, precision.state)
    return steps * per_step + np.zeros_like(expected)


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
    """The reference for one (case, data in one precision mode), computed once, checked
    against many runners."""

    def __init__(self, case: Case, data: Data, steps: int = GATE_STEPS):
        self.case, self.data, self.steps = case, data, steps
        self.precision = data.precision
        self.p0 = data.gather(data.p0).astype(np.float64)
        self.g = data.gather(data.grads)
        if case.two_pass:  # (an element's update depends on its whole tensor: each tensor's)
            self.expected = data.gather([reference(case, p, g, steps, self.precision)
                                         for p, g in zip(data.p0, data.grads)])
        else:
            self.expected = reference(case, self.p0, self.g, steps, self.precision)
        self.rtol = rtol(self.precision.compute, steps)
        moved = np.abs(self.expected - self.p0)
        scale = float(moved.max()) if moved.size else 0.0
        self.tol = self.rtol * (np.abs(self.expected) + np.abs(self.p0) + scale)
        self.tol += storage_tolerance(self.precision, steps, self.expected, self.p0, scale,
                                      [s for s in case.rule.states if s.name in case.states])
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
        masters = getattr(runner, "masters", None)
        if self.precision.master and masters:
            # the master is what the step updates: checked like a float32 param; the param
            # must be it rounded to nearest
            verdict = self.verdict(self.data.gather(masters))
            if verdict.ok:
                verdict = self.rounded_from_master(self.data.gather(runner.params),
                                                   self.data.gather(masters))
        else:
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
                       f"tolerance, {self.describe_tolerance(i)})")

    def describe_tolerance(self, i: int) -> str:
        if self.precision.plain or self.precision.master:
            return f"rtol {self.rtol:.2g}"
        return (f"{self.tol[i]:.2g} here: rtol {self.rtol:.2g} and {self.precision.name}'s "
                "narrow storage")


    def rounded_from_master(self, param: np.ndarray, master: np.ndarray) -> Verdict:
        want = round_to(master.astype(np.float64), self.precision.param)
        got = param.astype(np.float64)
        bad = (got != want) & ~(np.isnan(got) & np.isnan(want))
        if not bad.any():
            return Verdict(True, 0.0)
        i = int(np.argmax(bad))
        return Verdict(False, float("inf"), f"wrong result after {self.steps} steps: param "
                       f"{got[i]:.9g} at {self.where(i)} is not its master {master[i]:.9g} "
                       f"rounded to nearest ({want[i]:.9g})")


def describe_failure(exc: BaseException, during: Optional[str] = None) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return f"raised during {during}: {text}" if during else f"raised {text}"
