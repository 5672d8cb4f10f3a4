"""The test database: for each optimizer, the hyperparameter variants every generic test
sweeps, the variants also run at the large size, the problem the trajectories run on, and
the tolerance against the float64 reference with the reason for its size.

Nothing here imports gdfast; tests map a case onto ``gdfast.ops.<op>`` or the stateful
classes. ``Variant.hyper`` holds ``gdfast.ops`` keyword arguments (``beta1``/``beta2``, not
``betas``); :func:`constructor_kwargs` turns them into torch-style constructor arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Tuple

import numpy as np

import reference

# Sizes that hit the SIMD tails of every lane count in use (1 scalar; 4/2 SSE2 and NEON;
# 8/4 AVX2; 16/8 AVX-512, float32/float64): 0 (nothing to do), 1, 7 (8-lane level minus one),
# 15/16/17 (16 lanes minus one, exactly, plus one; 2 and 2+1 lanes of 8), 31/33 (two lanes of
# 16 minus/plus one), 1000 (many full iterations, tail 8 of 16) and 4099 (an odd remainder
# for every lane count).
SMALL_SIZES: Tuple[int, ...] = (0, 1, 7, 15, 16, 17, 31, 33, 1000, 4099)
# Above 2 * 2**14 elements a step is split across threads (gdfast's kMinElementsPerThread),
# so this size also runs the multi-threaded split with thread boundaries inside the array.
LARGE_SIZE = 1_000_000
STEPS = 100
# The large size runs only `Case.large_variants` for LARGE_STEPS steps: the float64 NumPy
# reference costs ~10-20 array passes per step, i.e. ~100 ms per step and combination at 1e6
# elements. The update formula and every option are already checked for 100 steps on all
# the small sizes (whose tails run through the very same rule); what the large size adds is
# the long vector body and the split across threads, which 10 steps (covering the first-step
# buffer initialisation, the momentum path after it and changing bias corrections) exercise
# as well as 100 would.
LARGE_STEPS = 10
# Steps at which trajectories are compared (besides the last): the first step initialises
# state and the second is the first that reads it, so a bug there is reported where it is.
CHECKPOINTS: Tuple[int, ...] = (1, 2, 3, 10, 50)


@dataclass(frozen=True)
class Variant:
    name: str
    hyper: Mapping[str, Any]

    def __str__(self) -> str:
        return self.name


@dataclass(frozen=True)
class Tolerance:
    """Bound on |x - x_ref| after ``t`` steps, elementwise, for x computed in a dtype with
    unit roundoff u = finfo(dtype).eps and x_ref the float64 reference from the same
    (dtype-rounded) inputs; :class:`ReferenceRun` evaluates it along the trajectory:

        state:  c_state * u * t * E_t
        param:  c_param * u * t * (max_s |p_s| + sum_s |p_s - p_s-1| + sum_s h_s)

    Why this shape. Every step rounds p and each state a few times, each rounding at most
    u/2 of the magnitudes involved, and the errors carry over to later steps:

    * A state (momentum buffer, moments) is a running average with decay b (momentum,
      beta1, beta2; 1 for AMSGrad's maximum), so its error at step t is at most a few u times
      sum_k b^k M_t-k, where M_s is the magnitude of the terms rounded at step s: the old and
      new state and w*G_s, with G_s = |g_s| (+ wd*|p_s-1| where an L2 penalty is added, since
      g and wd*p can cancel; squared for second moments) and w the weight g enters with
      (1 - beta; 1 for SGD). So E_t is the envelope max(b*E_t-1, |state_t-1|, |state_t|,
      w*G_t), and the sum is at most min(t, 1/(1-b)) <= t times it. With an L2 penalty the
      error p already has reaches the gradient too: w*wd*(p's bound) is folded into E_t.
    * p's own roundings add up to ~u*t*max|p| and ~u*sum|delta p| (the update rounded).
    * The states' errors reach every update through the rule's sensitivity h_s: the change of
      the update for a state error of u*E_s. SGD: lr*(E_buf(1+momentum if nesterov) + G).
      Adam: lr/bc1 * (E_m/D + |m| E_v / (2 sqrt(v bc2) D^2)) with D = sqrt(v/bc2) + eps;
      where sqrt(v) is about eps or less and m small (gradient terms cancelling, or all tiny)
      Adam's update m/(sqrt(v)+eps) is steep, and this term honestly widens the bound there.
      Lion: 0, sign() is flat away from zero; near zero see ``ambiguous`` below.

    ``c_*`` count the roundings per step; each case gives the measured maxima, 3x to 6x
    below. For gdfast float64 vs the reference (same precision, other operation order) the
    same bound holds with u = 2**-52. Against torch both sides round: tests double c.

    Lion: where c = beta1*m + (1-beta1)*g is within rounding of zero the two computations may
    take different signs. Such elements (counted per step in ``ambiguous``) get 2*lr per such
    step added to their bound (the most one sign difference can move p), and tests assert
    they are rare.
    """

    c_param: float
    c_state: float
    why: str


@dataclass(frozen=True)
class Case:
    name: str  # "sgd" | "adam" | "lion", also the reference.STEPS key
    op: str  # the function in gdfast.ops
    variants: Tuple[Variant, ...]
    large_variants: Tuple[str, ...]
    tolerance: Tolerance
    # ops keyword arguments every variant of the case takes unless it sets them itself
    base: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.name

    def hyper(self, variant: Variant) -> Dict[str, Any]:
        return {**self.base, **variant.hyper}

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"{self.name} has no variant {name!r}")

    def state_names(self, hyper: Mapping[str, Any]) -> Tuple[str, ...]:
        """The state arrays one step of this variant reads and writes."""
        if self.name == "sgd":
            return ("momentum_buffer",) if hyper.get("momentum", 0.0) != 0 else ()
        if self.name == "adam":
            base = ("exp_avg", "exp_avg_sq")
            return base + ("max_exp_avg_sq",) if hyper.get("amsgrad", False) else base
        return ("exp_avg",)


SGD = Case(
    name="sgd",
    op="sgd_",
    base={"lr": 0.01},
    variants=(
        Variant("plain", {}),
        Variant("lr=0.1", {"lr": 0.1}),
        Variant("momentum", {"momentum": 0.9}),
        Variant("dampening", {"momentum": 0.9, "dampening": 0.5}),
        Variant("dampening=1", {"momentum": 0.5, "dampening": 1.0}),
        Variant("nesterov", {"momentum": 0.9, "nesterov": True}),
        Variant("weight_decay", {"weight_decay": 0.1}),
        Variant("momentum+wd", {"momentum": 0.9, "weight_decay": 0.05}),
        Variant("maximize", {"maximize": True}),
        Variant("maximize+momentum+wd", {"momentum": 0.9, "weight_decay": 0.1,
                                         "maximize": True}),
        Variant("all", {"momentum": 0.8, "nesterov": True, "weight_decay": 0.05,
                        "maximize": True}),
    ),
    large_variants=("all", "dampening"),
    tolerance=Tolerance(
        c_param=3.0,
        c_state=4.0,
        why="A step is 2-4 roundings of p and of the buffer (wd add, buffer mul-add, "
            "nesterov add, p add). Measured worst |err| / (u*t*...) over all variants, sizes "
            "(1e6 included) and both dtypes: param 0.50, state 1.07 (float64: exact, the "
            "reference rounds the same way).",
    ),
)

ADAM = Case(
    name="adam",
    op="adam_",
    base={"lr": 0.01},
    variants=(
        Variant("default", {}),
        Variant("lr=1e-3", {"lr": 1e-3}),
        Variant("betas", {"beta1": 0.8, "beta2": 0.95}),
        Variant("beta1=0", {"beta1": 0.0, "beta2": 0.9}),
        Variant("eps=1e-3", {"eps": 1e-3}),
        Variant("l2", {"weight_decay": 0.1}),
        Variant("decoupled", {"weight_decay": 0.1, "decoupled_weight_decay": True}),
        Variant("amsgrad", {"amsgrad": True}),
        Variant("amsgrad+decoupled", {"amsgrad": True, "weight_decay": 0.05,
                                      "decoupled_weight_decay": True}),
        Variant("maximize", {"maximize": True}),
        Variant("maximize+l2+amsgrad", {"maximize": True, "weight_decay": 0.1,
                                        "amsgrad": True, "beta1": 0.85, "beta2": 0.99}),
    ),
    large_variants=("amsgrad+decoupled", "maximize+l2+amsgrad"),
    tolerance=Tolerance(
        c_param=6.0,
        c_state=8.0,
        why="A step is ~10 roundings (moments, sqrt, two divisions, products); v also carries "
            "the float32 rounding of beta2, which compounds as beta2^t (~t*u/2 relative). "
            "Measured worst |err| / (u*t*...) over all variants, sizes (1e6 included) and "
            "both dtypes: param 1.97, state 2.67.",
    ),
)

LION = Case(
    name="lion",
    op="lion_",
    base={"lr": 3e-3},
    variants=(
        Variant("default", {}),
        Variant("lr=1e-4", {"lr": 1e-4}),
        Variant("betas", {"beta1": 0.95, "beta2": 0.98}),
        Variant("beta1=0", {"beta1": 0.0}),
        Variant("beta2=1", {"beta2": 1.0}),
        Variant("weight_decay", {"weight_decay": 1.0}),
        Variant("maximize", {"maximize": True}),
        Variant("all", {"beta1": 0.95, "beta2": 0.98, "weight_decay": 0.3,
                        "maximize": True}),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=4.0,
        c_state=3.0,
        why="Away from sign changes p moves by exactly +-lr per step (one rounding of p, one "
            "of the decay product); m is an EMA with 2-3 roundings per step. Where "
            "c = beta1*m + (1-beta1)*g is within rounding of zero the two precisions may pick "
            "different signs: those elements get 2*lr per such step (Tolerance). Measured "
            "worst |err| / (u*t*...): param 1.15, state 0.68; sign exemptions: 4 of 4099 "
            "elements and 11 of 1e6 in float32, none in float64.",
    ),
)

CASES: Tuple[Case, ...] = (SGD, ADAM, LION)
CASES_BY_NAME: Dict[str, Case] = {c.name: c for c in CASES}


def constructor_kwargs(case: Case, hyper: Mapping[str, Any]) -> Dict[str, Any]:
    """``gdfast.ops`` keyword arguments -> torch-style constructor keyword arguments, as
    ``gdfast.SGD/Adam/Lion`` and ``torch.optim.SGD/Adam`` take them."""
    kw = dict(hyper)
    if case.name in ("adam", "lion"):
        beta1 = kw.pop("beta1", 0.9)
        beta2 = kw.pop("beta2", 0.999 if case.name == "adam" else 0.99)
        kw["betas"] = (beta1, beta2)
    return kw


# -- the problem every trajectory runs on ---------------------------------------------------
def initial_param(size: int, dtype: Any, seed: int = 0) -> np.ndarray:
    """Standard normal parameters, rounded to dtype."""
    rng = np.random.default_rng([seed, size, 1])
    return rng.standard_normal(size).astype(dtype)


def gradient(size: int, dtype: Any, step: int, seed: int = 0) -> np.ndarray:
    """The gradient of step ``step`` (1-based), rounded to dtype: per-element scales spread
    over four decades (1e-3..10) that also shrink or grow over the steps (by up to e^-5 or
    e^1.5 over 100 steps, so that second moments fall as well as rise, which AMSGrad's
    maximum needs in order to matter), a per-element drift so that momentum accumulates,
    fresh noise each step, and about 5% exact zeros (Adam's 0/eps path, sign(0) = 0)."""
    fixed = np.random.default_rng([seed, size, 2])
    scale = 10.0 ** fixed.uniform(-3.0, 1.0, size)
    trend = fixed.uniform(-0.05, 0.015, size)
    drift = 0.5 * fixed.standard_normal(size)
    rng = np.random.default_rng([seed, size, 3, step])
    g = scale * np.exp(trend * step) * (drift + rng.standard_normal(size))
    g[rng.random(size) < 0.05] = 0.0
    return g.astype(dtype)


# -- a reference trajectory with its tolerance -------------------------------------------------
QUADRATIC_STATES = ("exp_avg_sq", "max_exp_avg_sq")


class ReferenceRun:
    """The float64 reference rule stepped along a trajectory, accumulating per element what
    :class:`Tolerance` needs for a computation in unit roundoff ``u``."""

    def __init__(self, case: Case, hyper: Mapping[str, Any], p0: np.ndarray, u: float) -> None:
        self.case, self.hyper, self.u = case, dict(hyper), u
        self.tol = case.tolerance
        self.step_fn = reference.STEPS[case.name]
        self.t = 0
        self.p = np.array(p0, dtype=np.float64)
        self.state: Dict[str, Any] = {}
        self.param_env = np.abs(self.p)
        self.path = np.zeros_like(self.p)
        self.sensitivity = np.zeros_like(self.p)
        self.state_env = {n: np.zeros_like(self.p) for n in case.state_names(hyper)}
        self.ambiguous = np.zeros(self.p.shape, dtype=np.int64)

    def _decay_and_weight(self, name: str) -> Tuple[float, float]:
        """(b, w): the factor a state's old value (and its error) is carried with, and the
        one the gradient terms enter it with."""
        h = self.hyper
        if self.case.name == "sgd":  # the first step copies g; later ones weigh it 1-dampening
            return float(h.get("momentum", 0.0)), 1.0
        if name == "exp_avg" and self.case.name == "adam":
            beta1 = float(h.get("beta1", 0.9))
            return beta1, 1.0 - beta1
        beta2 = float(h.get("beta2", 0.999 if self.case.name == "adam" else 0.99))
        return (1.0 if name == "max_exp_avg_sq" else beta2), 1.0 - beta2

    def step(self, grad: np.ndarray) -> None:
        h, u = self.hyper, self.u
        g = np.asarray(grad, dtype=np.float64)
        g_mag = np.abs(g)
        # an L2 penalty feeds p, and the error p already has, into the gradient
        l2 = 0.0
        if self.case.name in ("sgd", "adam") and not h.get("decoupled_weight_decay", False):
            l2 = float(h.get("weight_decay", 0.0))
        fed_back = l2 * self.param_bound() if l2 and self.t else None
        g_mag = g_mag + l2 * np.abs(self.p)
        if self.case.name == "lion":
            beta1 = h.get("beta1", 0.9)
            m = self.state.get("exp_avg", np.zeros_like(self.p))
            c = reference.lion_sign_argument(g, self.state, beta1=beta1,
                                             maximize=h.get("maximize", False))
            # another computation's c differs by beta1 times its m's error (Tolerance) plus
            # ~3 roundings of the terms of c; the band is twice that
            m_err = self.tol.c_state * u * self.t * self.state_env["exp_avg"]
            band = 2.0 * (beta1 * m_err + 3.0 * u * (beta1 * np.abs(m)
                                                     + (1.0 - beta1) * np.abs(g)))
            self.ambiguous += np.abs(c) < band
        before = {n: np.abs(self.state[n]) for n in self.state_env if n in self.state}
        p = self.step_fn(self.p, g, self.state, **h)
        self.t += 1
        self.path += np.abs(p - self.p)
        self.p = p
        np.maximum(self.param_env, np.abs(p), out=self.param_env)
        for name, env in self.state_env.items():
            decay, weight = self._decay_and_weight(name)
            env *= decay
            np.maximum(env, np.abs(self.state[name]), out=env)
            if name in before:
                np.maximum(env, before[name], out=env)
            terms = g_mag * g_mag if name in QUADRATIC_STATES else g_mag
            np.maximum(env, weight * terms, out=env)
            if fed_back is not None:  # as an envelope: error = c_state * u * t * envelope
                err = 2.0 * g_mag * fed_back if name in QUADRATIC_STATES else fed_back
                np.maximum(env, weight * err / (self.tol.c_state * u * self.t), out=env)
        self.sensitivity += self._sensitivity(g_mag)

    def _sensitivity(self, g_mag: np.ndarray) -> np.ndarray:
        h, env = self.hyper, self.state_env
        if self.case.name == "sgd":
            momentum = h.get("momentum", 0.0)
            if momentum == 0:
                return h["lr"] * g_mag
            k = 1.0 + momentum if h.get("nesterov", False) else 1.0
            return h["lr"] * (g_mag + k * env["momentum_buffer"])
        if self.case.name == "adam":
            t = self.t
            bc1 = 1.0 - h.get("beta1", 0.9) ** t
            bc2 = 1.0 - h.get("beta2", 0.999) ** t
            second = "max_exp_avg_sq" if h.get("amsgrad", False) else "exp_avg_sq"
            v = self.state[second]
            m = self.state["exp_avg"]
            denom = np.sqrt(v / bc2) + h.get("eps", 1e-8)
            root = 2.0 * np.sqrt(v * bc2) * denom * denom
            via_v = np.divide(np.abs(m) * env[second], root, out=np.zeros_like(v),
                              where=root > 0)
            return h["lr"] / bc1 * (env["exp_avg"] / denom + via_v)
        return np.zeros_like(g_mag)

    def param_bound(self, factor: float = 1.0) -> np.ndarray:
        bound = factor * self.tol.c_param * self.u * self.t * (
            self.param_env + self.path + self.sensitivity)
        if self.case.name == "lion":
            bound = bound + 2.0 * self.hyper["lr"] * self.ambiguous
        return bound

    def state_bound(self, name: str, factor: float = 1.0) -> np.ndarray:
        return factor * self.tol.c_state * self.u * self.t * self.state_env[name]


def check_close(what: str, actual: np.ndarray, expected: np.ndarray,
                bound: np.ndarray) -> float:
    """Assert |actual - expected| <= bound elementwise (NaN fails); return the worst
    |actual - expected| / bound, for calibrating tolerances."""
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if actual.size == 0:
        return 0.0
    err = np.abs(actual - expected)
    bad = ~(err <= bound)
    if bad.any():
        idx = np.flatnonzero(bad.ravel())
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = err.ravel()[idx] / bound.ravel()[idx]
        i = idx[np.argmax(np.nan_to_num(ratio, nan=np.inf))]
        raise AssertionError(
            f"{what}: {idx.size} of {actual.size} elements outside tolerance; worst at [{i}]: "
            f"got {actual.ravel()[i]!r}, expected {expected.ravel()[i]!r}, "
            f"|diff| {err.ravel()[i]:.3e} > bound {bound.ravel()[i]:.3e}")
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, err / np.where(bound > 0, bound, 1.0), 0.0)
    return float(ratio.max())
