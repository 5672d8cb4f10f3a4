"""The test database: for each optimizer (each rule of gdfast's registry), the hyperparameter
variants every generic test sweeps, the variants also run at the large size, the problem the
trajectories run on, the tolerance against the float64 reference with the reason for its size,
and what the generic tests need to know about the rule (its states and how they start, its
scalar states, how the gradient and lr enter, valid sample ranges).

A new optimizer needs only its :class:`Case` here: test_rules, test_validation,
test_properties, test_stateful, test_dispatch, test_threads, test_training and test_registry
read their tables from ``CASES``; test_registry checks every description below against
gdfast's registry (``gdfast._spec.RULES``).

Nothing here imports gdfast; tests map a case onto ``gdfast.ops.<op>`` or the stateful
classes. ``Variant.hyper`` holds ``gdfast.ops`` keyword arguments (``beta1``/``beta2``, not
``betas``); :func:`constructor_kwargs` turns them into torch-style constructor arguments.
Variants marked "torch:" are the CPU entries of torch 2.13's optimizer database
(torch/testing/_internal/common_optimizers.py, ``optim_inputs_func_<name>``, its tensor lr as
a float); the others add the option combinations that select another kernel instantiation.
"""

from __future__ import annotations

import inspect
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Tuple, Union

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

# torch-style constructor arguments holding several of a rule's hyperparameters (gdfast.ops
# names each; a rule takes the leading ones it has: Adam's betas are (beta1, beta2), Adan's
# (beta1, beta2, beta3)). test_registry checks this against gdfast._stepping.TUPLES.
TUPLES: Dict[str, Tuple[str, ...]] = {
    "betas": ("beta1", "beta2", "beta3"),
    "etas": ("etaminus", "etaplus"),
    "step_sizes": ("step_size_min", "step_size_max"),
}


def tuple_arguments(fields: Any) -> Dict[str, Tuple[str, ...]]:
    """The tuple arguments of a rule with these hyperparameters -> the names each holds."""
    out = {}
    for key, names in TUPLES.items():
        held = tuple(n for n in names if n in fields)
        if held:
            out[key] = held
    return out


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

        state:  c_state * u * t * E_t + F_t
        param:  c_param * u * t * (max_s |p_s| + sum_s |p_s - p_s-1| + sum_s h_s) + sum_s f_s

    Why this shape. Every step rounds p and each state a few times, each rounding at most
    u/2 of the magnitudes involved, and the errors carry over to later steps:

    * A state's own roundings. A state (momentum buffer, moments, accumulators) is updated
      from its old value with a decay b (momentum, beta, alpha, rho; 1 for sums and maxima;
      Rprop's step size: the factor it was multiplied by), so its rounding error at step t is
      at most a few u times sum_k b^k M_t-k, where M_s is the magnitude of the terms rounded at
      step s: the old and new state and the terms added, e.g. w*G_s with G_s = |g_s| (+ wd*|p_s-1|
      where an L2 penalty is added, since g and wd*p can cancel; squared for second moments)
      and w the weight g enters with (1 - beta; 1 for SGD and sums). So E_t is the envelope
      max(b*E_t-1, |state_t-1|, |state_t|, M_t), and the sum is at most min(t, 1/(1-b)) <= t
      times it: c_state counts the roundings per step.
    * Errors a state takes over from other quantities, F_t = b*F_t-1 + f_t: with an L2 penalty
      the error p already has enters the gradient (wd times p's bound, doubled by 2|g| for
      squares); RMSprop's momentum buffer and Adadelta's acc_delta take in the update's error
      due to the other states' errors; ASGD's average takes in p's. These are propagated
      linearly (first order), not estimated.
    * p's own roundings add up to ~u*t*max|p| and ~u*sum|delta p| (the update rounded), plus
      h_s: the rounding of gradient terms that enter the update directly (SGD lr*G; RMSprop,
      Adagrad lr*G/D; ...).
    * The states' errors reach every update through the rule's sensitivity: f_s is the
      change of the update for the states' bounds (and the L2 penalty's), to first order.
      SGD: lr*B_buf (+ momentum*lr*B_buf with nesterov). Adam: lr/bc1 * (B_m/D + |m| B_v /
      (2 sqrt(v bc2) D^2)) with D = sqrt(v/bc2) + eps; where sqrt(v) is about eps or less and m
      small (gradient terms cancelling, or all tiny) Adam's update m/(sqrt(v)+eps) is steep,
      and this term honestly widens the bound there. The other rules' derivatives are in
      their models below. Lion and Rprop: 0 for the sign, which is flat away from zero.

    ``c_*`` count the roundings per step; each case's ``why`` gives the measured worst
    |err|/bound over all its variants, sizes (1e6 included) and both dtypes: 1/6 to 1/3.
    For gdfast float64 vs the reference (same precision, other operation order) the
    same bound holds with u = 2**-52. Against torch both sides round: tests double c.

    Discontinuities. Lion: where c = beta1*m + (1-beta1)*g is within rounding of zero the two
    computations may take different signs. Such elements (counted per step in ``ambiguous``)
    get 2*lr per such step added to their bound (the most one sign difference can move p),
    and tests assert they are rare. Rprop's decisions (the sign of g*prev) depend only on the
    input gradients, which both computations hold exactly (prev is a copy of a gradient), so
    they take the same branches unless a dtype product underflows: ``ambiguous`` counts such
    elements without exempting them, and tests assert there are none; prev is then compared
    exactly. Adamax's maximum is continuous (1-Lipschitz) and needs nothing. ASGD's switch
    (mu == 1) and RAdam's (rho_t > 5) are per step, computed in double from the step count
    on both sides; the scalar states are compared exactly and RAdam's model asserts that
    rho_t is never within rounding of 5.
    """

    c_param: float
    c_state: float
    why: str


class Update(NamedTuple):
    """One step's contribution to p's bound (see Tolerance): ``rounding`` is h_s (multiplied
    by c_param * u * t), ``propagated`` is f_s (an absolute error)."""

    rounding: Any
    propagated: Any


def _always(h: Mapping[str, Any]) -> bool:
    return True


def coupled_weight_decay(h: Mapping[str, Any]) -> float:
    """The L2 coefficient the rule adds to the gradient (0 when decay is decoupled)."""
    if h.get("decoupled_weight_decay", False):
        return 0.0
    return float(h.get("weight_decay", 0.0))


def _no_l2(h: Mapping[str, Any]) -> float:
    return 0.0


@dataclass(frozen=True)
class Case:
    """One rule: how tests call it, what they sweep, how far from the reference it may be."""

    name: str  # the rule, also the reference.STEPS key
    op: str  # the function in gdfast.ops
    classes: Mapping[str, Mapping[str, Any]]  # stateful classes -> hyperparameters they fix
    variants: Tuple[Variant, ...]
    large_variants: Tuple[str, ...]
    tolerance: Tolerance
    # every state array of the rule, in its declaration order -> used with these (complete)
    # hyperparameters?
    states: Mapping[str, Callable[[Mapping[str, Any]], bool]]
    # error propagation of one step (see Tolerance): advances every state's bound
    model: Callable[["Step"], Update]
    # ops keyword arguments every variant of the case takes unless it sets them itself
    base: Mapping[str, Any] = field(default_factory=dict)
    step: str = "counted"  # "counted" (state["step"]), "first_call" (SGD) or "none" (Lion)
    starts: Mapping[str, str] = field(default_factory=dict)  # state -> hyperparameter it starts at
    written_first: Tuple[str, ...] = ()  # states the first step writes without reading
    # scalar states (per parameter, on the host) -> start: a number, or the hyperparameter
    scalars: Mapping[str, Union[float, str]] = field(default_factory=dict)
    l2: Callable[[Mapping[str, Any]], float] = coupled_weight_decay
    nonnegative: Tuple[str, ...] = ()  # states that are >= 0 in any real run
    # how lr enters: "scales" (lr=0 freezes p; states do not depend on lr), "eta" (ASGD: only
    # through the scalar state eta, which starts at lr), "start" (Rprop: only where step_size
    # starts; the op itself ignores it), "averaged" (Schedule-Free: lr also weights the
    # average through lr_max; with lr = 0 and no lr seen yet, lr_max <= 0, p stays)
    lr_role: str = "scales"
    # elements whose comparison with the reference is ambiguous this step (see Tolerance),
    # evaluated before the step; and how far each such step may move p
    ambiguous: Optional[Callable[["ReferenceRun", np.ndarray], np.ndarray]] = None
    ambiguous_slack: Callable[[Mapping[str, Any]], float] = lambda h: 0.0
    # a valid ops call that uses every state and changes every element of every written array
    # (test_validation's base call), and uniform ranges for those arrays (others: N(0.5, 1))
    checked: Mapping[str, Any] = field(default_factory=dict)
    checked_ranges: Mapping[str, Tuple[float, float]] = field(default_factory=dict)
    # sampling ranges for hyperparameters and scalar states whose registry range is unbounded
    # (or too wide to be typical), for hypothesis
    sample: Mapping[str, Tuple[float, float]] = field(default_factory=dict)
    # option combinations the rule rejects beyond ranges: (ops keywords, message)
    invalid: Tuple[Tuple[Mapping[str, Any], str], ...] = ()
    # the digits MLP of test_training: class -> ops keyword arguments
    training: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # the rule's inputs after the gradient (Sophia's hessian), and their values on a
    # trajectory: (the step's gradient, in its dtype; the step) -> arrays in that dtype. Other
    # tests fill them like gradients.
    extra_inputs: Tuple[str, ...] = ()
    input_values: Optional[Callable[[np.ndarray, int], Dict[str, np.ndarray]]] = None
    # An element's update depends on its whole tensor (LAMB's trust ratio): the references run
    # on each tensor alone, and a prefix of an array is not stepped as that part of the array.
    # Such a rule runs in two passes, on float32/float64 arrays only (README "LAMB"): the
    # lower-precision tests leave it out.
    per_tensor: bool = False

    def __str__(self) -> str:
        return self.name

    def hyper(self, variant: Variant) -> Dict[str, Any]:
        return {**self.base, **variant.hyper}

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"{self.name} has no variant {name!r}")

    @property
    def defaults(self) -> Dict[str, Any]:
        """The reference rule's keyword defaults (the registry's, test_registry checks)."""
        return dict(_DEFAULTS[self.name])

    def full(self, hyper: Mapping[str, Any]) -> Dict[str, Any]:
        """Every hyperparameter: the given ones over the defaults."""
        return {**_DEFAULTS[self.name], **hyper}

    def tensor_names(self, hyper: Mapping[str, Any]) -> Tuple[str, ...]:
        """Every array of one step of this variant: param, the inputs, the states used."""
        return ("param", "grad", *self.extra_inputs, *self.state_names(hyper))

    def inputs_at(self, g: Any, t: int) -> Dict[str, Any]:
        """The extra inputs of trajectory step t with gradient g, an array or a list of them
        (none for most rules)."""
        if self.input_values is None:
            return {}
        if isinstance(g, (list, tuple)):
            each = [self.input_values(x, t) for x in g]
            return {name: [d[name] for d in each] for name in self.extra_inputs}
        return self.input_values(np.asarray(g), t)

    def state_names(self, hyper: Mapping[str, Any]) -> Tuple[str, ...]:
        """The state arrays one step of this variant reads and writes."""
        full = self.full(hyper)
        return tuple(name for name, used in self.states.items() if used(full))

    def start(self, name: str, hyper: Mapping[str, Any]) -> float:
        """Where a state array's elements (or a scalar state) start."""
        source = self.starts.get(name, self.scalars.get(name, 0.0))
        return float(self.full(hyper)[source]) if isinstance(source, str) else float(source)


def _reference_defaults() -> Dict[str, Dict[str, Any]]:
    out = {}
    for name, fn in reference.STEPS.items():  # (inputs after the gradient default to None)
        out[name] = {n: p.default for n, p in inspect.signature(fn).parameters.items()
                     if p.kind is p.KEYWORD_ONLY and p.default is not None}
    return out


_DEFAULTS = _reference_defaults()


def constructor_kwargs(case: Case, hyper: Mapping[str, Any],
                       cls: Optional[str] = None) -> Dict[str, Any]:
    """``gdfast.ops`` keyword arguments -> torch-style constructor keyword arguments, as
    ``gdfast.<Name>`` and ``torch.optim.<Name>`` take them (tuples such as betas folded, the
    others at their defaults; the arguments class ``cls`` fixes left out)."""
    kw = dict(hyper)
    full = case.full(hyper)
    for key, names in tuple_arguments(full).items():
        if any(n in kw for n in names):
            for n in names:
                kw.pop(n, None)
            kw[key] = tuple(full[n] for n in names)
    if cls is not None:
        for name in case.classes[cls]:
            kw.pop(name, None)
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
def _div(a: Any, b: Any) -> np.ndarray:
    """a / b where b > 0, else 0 (a derivative term where its denominator vanishes: there the
    numerator vanishes too, e.g. m = 0 where v = 0)."""
    a, b = np.broadcast_arrays(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64))
    return np.divide(a, b, out=np.zeros(a.shape), where=b > 0)


class Step:
    """What a case's error model sees of one reference step (float64 arrays): the
    hyperparameters ``h``, the step ``t`` (1-based), the gradient ``g`` (negated under
    maximize), ``gp`` = g + l2*p (the gradient with the L2 penalty), ``G`` = |g| + l2*|p|
    (the magnitude its rounding scales with), ``l2_err`` = l2 times p's bound before the step
    (the error the penalty feeds in); the states before (``old``) and after (``new``)."""

    def __init__(self, run: "ReferenceRun", g: np.ndarray, p_prev: np.ndarray,
                 old: Dict[str, Any], p_bound_prev: np.ndarray,
                 inputs: Optional[Mapping[str, np.ndarray]] = None) -> None:
        self.inputs = dict(inputs or {})  # the extra inputs (float64)
        self.run, self.h, self.t, self.u = run, run.hyper, run.t, run.u
        l2 = run.case.l2(self.h)
        self.g = -g if self.h.get("maximize", False) else g
        self.gp = self.g + l2 * p_prev
        self.G = np.abs(self.g) + l2 * np.abs(p_prev)
        self.l2_err = l2 * p_bound_prev
        self.p_prev, self.p_bound_prev = p_prev, p_bound_prev
        self._old = old
        self.advanced: set = set()

    def old(self, name: str) -> Any:
        """A state (array or scalar) before the step; its start before the first."""
        if name in self._old:
            return self._old[name]
        start = self.run.case.start(name, self.h)
        return np.full_like(self.run.p, start) if name in self.run.state_env else start

    def new(self, name: str) -> Any:
        return self.run.state[name]

    def old_bound(self, name: str) -> np.ndarray:
        """A state's bound before the step (before the model advances it)."""
        assert name not in self.advanced, f"{name}: already advanced"
        return self.run.state_bound(name, steps=self.t - 1)

    def state(self, name: str, decay: Any, *rounded: Any, fed: Any = None) -> np.ndarray:
        """Advance a state's bound: envelope E (decayed, the old and new magnitudes and the
        ``rounded`` ones), propagated F (decayed, plus ``fed``). Returns the new bound."""
        run = self.run
        env = run.state_env[name]
        env *= decay
        np.maximum(env, np.abs(self.old(name)), out=env)
        np.maximum(env, np.abs(self.new(name)), out=env)
        for r in rounded:
            np.maximum(env, r, out=env)
        run.state_fed[name] *= decay
        if fed is not None:
            run.state_fed[name] += fed
        self.advanced.add(name)
        return run.state_bound(name)

    def maximum(self, name: str, of: str, scale: float = 1.0) -> np.ndarray:
        """A running maximum of state ``of`` (times ``scale``): its error is at most the
        larger of the two."""
        run = self.run
        np.maximum(run.state_env[name], scale * run.state_env[of], out=run.state_env[name])
        np.maximum(run.state_env[name], np.abs(self.new(name)), out=run.state_env[name])
        np.maximum(run.state_fed[name], scale * run.state_fed[of], out=run.state_fed[name])
        self.advanced.add(name)
        return run.state_bound(name)

    def exact(self, name: str) -> None:
        """A state both computations hold exactly (bound 0)."""
        self.advanced.add(name)

    def param_bound_after(self, update: Update) -> np.ndarray:
        """p's bound after this step, with this step's update terms."""
        run = self.run
        return (run.tol.c_param * self.u * self.t
                * (run.param_env + run.path + run.sensitivity + update.rounding)
                + run.propagated + update.propagated + run.slack)


class ReferenceRun:
    """The float64 reference rule stepped along a trajectory, accumulating per element what
    :class:`Tolerance` needs for a computation in unit roundoff ``u``."""

    def __init__(self, case: Case, hyper: Mapping[str, Any], p0: np.ndarray, u: float) -> None:
        self.case, self.hyper, self.u = case, case.full(hyper), u
        self.dtype = np.float32 if u >= float(np.finfo(np.float32).eps) else np.float64
        self.tol = case.tolerance
        self.step_fn = reference.STEPS[case.name]
        self.t = 0
        self.p = np.array(p0, dtype=np.float64)
        self.state: Dict[str, Any] = {}
        self.param_env = np.abs(self.p)
        self.path = np.zeros_like(self.p)
        self.sensitivity = np.zeros_like(self.p)  # sum of h_s
        self.propagated = np.zeros_like(self.p)  # sum of f_s
        self.slack = np.zeros_like(self.p)  # ambiguous steps' allowance
        names = case.state_names(self.hyper)
        self.state_env = {n: np.zeros_like(self.p) for n in names}
        self.state_fed = {n: np.zeros_like(self.p) for n in names}
        self.ambiguous = np.zeros(self.p.shape, dtype=np.int64)

    @property
    def scalars(self) -> Dict[str, float]:
        """The scalar states after the last step (step count excluded)."""
        return {k: v for k, v in self.state.items() if k in self.case.scalars}

    def step(self, grad: np.ndarray, inputs: Optional[Mapping[str, np.ndarray]] = None) -> None:
        """One reference step; ``inputs``: the extra inputs as the computation under test got
        them (Case.inputs_at)."""
        g = np.asarray(grad, dtype=np.float64)
        extra = {k: np.asarray(v, dtype=np.float64) for k, v in (inputs or {}).items()}
        p_bound = self.param_bound() if self.t else np.zeros_like(self.p)
        old = dict(self.state)
        if self.case.ambiguous is not None:
            hit = self.case.ambiguous(self, g)
            self.ambiguous += hit
            self.slack += self.case.ambiguous_slack(self.hyper) * hit
        p = self.step_fn(self.p, g, self.state, **self.hyper, **extra)
        self.t += 1
        p_prev = self.p
        self.path += np.abs(p - p_prev)
        self.p = p
        np.maximum(self.param_env, np.abs(p), out=self.param_env)
        step = Step(self, g, p_prev, old, p_bound, extra)
        update = self.case.model(step)
        missing = set(self.state_env) - step.advanced
        assert not missing, f"{self.case.name}'s model left {missing} behind"
        self.sensitivity += update.rounding
        self.propagated += update.propagated

    def param_bound(self, factor: float = 1.0) -> np.ndarray:
        return factor * (self.tol.c_param * self.u * self.t
                         * (self.param_env + self.path + self.sensitivity)
                         + self.propagated + self.slack)

    def state_bound(self, name: str, factor: float = 1.0,
                    steps: Optional[int] = None) -> np.ndarray:
        t = self.t if steps is None else steps
        return factor * (self.tol.c_state * self.u * t * self.state_env[name]
                         + self.state_fed[name])


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


# -- the error models (see Tolerance; B_x is state x's bound, an absolute error) ---------------
def _moments(s: Step, beta1: float, beta2: float) -> Tuple[np.ndarray, np.ndarray]:
    """Adam-style m and v: EMAs of g (weight 1-beta1) and g^2 (weight 1-beta2)."""
    b_m = s.state("exp_avg", beta1, (1.0 - beta1) * s.G, fed=(1.0 - beta1) * s.l2_err)
    b_v = s.state("exp_avg_sq", beta2, (1.0 - beta2) * s.G**2,
                  fed=(1.0 - beta2) * 2.0 * s.G * s.l2_err)
    return b_m, b_v


def _sgd_model(s: Step) -> Update:
    lr, momentum = s.h["lr"], s.h["momentum"]
    if momentum == 0:
        return Update(lr * s.G, lr * s.l2_err)
    b_buf = s.state("momentum_buffer", momentum, s.G, fed=s.l2_err)
    if s.h["nesterov"]:  # g + momentum * b: g's rounding and penalty enter directly
        return Update(lr * s.G, lr * (s.l2_err + momentum * b_buf))
    return Update(0.0, lr * b_buf)


def _adam_model(s: Step) -> Update:
    h, t = s.h, s.t
    b_m, b_v = _moments(s, h["beta1"], h["beta2"])
    second = "exp_avg_sq"
    if h["amsgrad"]:
        b_v = s.maximum("max_exp_avg_sq", of="exp_avg_sq")
        second = "max_exp_avg_sq"
    bc1, bc2 = 1.0 - h["beta1"] ** t, 1.0 - h["beta2"] ** t
    v, m = s.new(second), s.new("exp_avg")
    denom = np.sqrt(v / bc2) + h["eps"]
    via_v = _div(np.abs(m) * b_v, 2.0 * np.sqrt(v * bc2) * denom**2)
    return Update(0.0, h["lr"] / bc1 * (b_m / denom + via_v))


def _lion_model(s: Step) -> Update:
    beta2 = s.h["beta2"]
    s.state("exp_avg", beta2, (1.0 - beta2) * s.G)
    return Update(0.0, 0.0)  # sign() is flat; its ambiguous elements are exempted


def _lion_ambiguous(run: "ReferenceRun", g: np.ndarray) -> np.ndarray:
    """Another computation's c differs by beta1 times its m's error plus ~3 roundings of the
    terms of c; the band is twice that."""
    h, u = run.hyper, run.u
    beta1 = h["beta1"]
    m = run.state.get("exp_avg", np.zeros_like(g))
    c = reference.lion_sign_argument(g, run.state, beta1=beta1, maximize=h["maximize"])
    m_err = run.state_bound("exp_avg")
    band = 2.0 * (beta1 * m_err + 3.0 * u * (beta1 * np.abs(m) + (1.0 - beta1) * np.abs(g)))
    return np.abs(c) < band


def _rmsprop_model(s: Step) -> Update:
    h = s.h
    alpha, lr, momentum = h["alpha"], h["lr"], h["momentum"]
    b_v = s.state("square_avg", alpha, (1.0 - alpha) * s.G**2,
                  fed=(1.0 - alpha) * 2.0 * s.G * s.l2_err)
    v = s.new("square_avg")
    if h["centered"]:  # v - g_avg^2: both errors, and the rounding of the square and difference
        b_avg = s.state("grad_avg", alpha, (1.0 - alpha) * s.G, fed=(1.0 - alpha) * s.l2_err)
        g_avg = s.new("grad_avg")
        vt = v - g_avg**2
        b_vt, r_vt = b_v + 2.0 * np.abs(g_avg) * b_avg, v + g_avg**2
    else:
        vt, b_vt, r_vt = v, b_v, 0.0
    root = np.sqrt(np.maximum(vt, 0.0))
    denom = root + h["eps"]
    slope = _div(np.abs(s.gp), 2.0 * root * denom**2)  # |d(g/D)/dvt|
    q_rounding = s.G / denom + slope * r_vt
    q_propagated = slope * b_vt + s.l2_err / denom
    if momentum > 0:
        b_buf = s.state("momentum_buffer", momentum, q_rounding, fed=q_propagated)
        return Update(0.0, lr * b_buf)
    return Update(lr * q_rounding, lr * q_propagated)


def _adagrad_model(s: Step) -> Update:
    h, t = s.h, s.t
    b_sum = s.state("sum", 1.0, s.G**2, fed=2.0 * s.G * s.l2_err)
    root = np.sqrt(s.new("sum"))
    denom = root + h["eps"]
    lr_t = h["lr"] / (1.0 + (t - 1) * h["lr_decay"])
    via_sum = _div(np.abs(s.gp) * b_sum, 2.0 * root * denom**2)
    return Update(lr_t * s.G / denom, lr_t * (via_sum + s.l2_err / denom))


def _adadelta_model(s: Step) -> Update:
    h = s.h
    rho, eps, lr = h["rho"], h["eps"], h["lr"]
    acc_old, b_acc_old = s.old("acc_delta"), s.old_bound("acc_delta")
    b_v = s.state("square_avg", rho, (1.0 - rho) * s.G**2, fed=(1.0 - rho) * 2.0 * s.G * s.l2_err)
    v = s.new("square_avg")
    ratio = np.sqrt(acc_old + eps) / np.sqrt(v + eps)
    delta = ratio * np.abs(s.gp)
    d_rounding = ratio * s.G
    d_propagated = (delta * (_div(b_acc_old, 2.0 * (acc_old + eps)) + _div(b_v, 2.0 * (v + eps)))
                    + ratio * s.l2_err)
    s.state("acc_delta", rho, (1.0 - rho) * d_rounding**2,
            fed=(1.0 - rho) * 2.0 * delta * d_propagated)
    return Update(lr * d_rounding, lr * d_propagated)


def _adamax_model(s: Step) -> Update:
    h, t = s.h, s.t
    beta1 = h["beta1"]
    b_m = s.state("exp_avg", beta1, (1.0 - beta1) * s.G, fed=(1.0 - beta1) * s.l2_err)
    # max(beta2 * u, |g| + eps) is 1-Lipschitz: the error of either side bounds it
    b_u = s.state("exp_inf", h["beta2"], s.G + h["eps"], fed=s.l2_err)
    m, u_inf = s.new("exp_avg"), s.new("exp_inf")
    bc1 = 1.0 - beta1**t
    return Update(0.0, h["lr"] / bc1 * (_div(b_m, u_inf) + _div(np.abs(m) * b_u, u_inf**2)))


def _adan_model(s: Step) -> Update:
    h, t = s.h, s.t
    beta1, beta2, beta3, lr = h["beta1"], h["beta2"], h["beta3"], h["lr"]
    s.exact("previous_grad")  # -g: exact
    # d = g - g_prev (0 on step 1), rounded once: magnitude |g| + |g_prev|
    D = s.G + np.abs(s.old("previous_grad")) if t > 1 else 0.0 * s.G
    b_m = s.state("exp_avg", beta1, (1.0 - beta1) * s.G)
    b_n = s.state("exp_avg_diff", beta2, (1.0 - beta2) * D)
    b_v = s.state("exp_avg_sq", beta3, (1.0 - beta3) * (beta2 * D + s.G) ** 2)
    bc1, bc2, bc3 = 1.0 - beta1**t, 1.0 - beta2**t, 1.0 - beta3**t
    m, n, v = s.new("exp_avg"), s.new("exp_avg_diff"), s.new("exp_avg_sq")
    denom = np.sqrt(v / bc3) + h["eps"]
    numerator = m / bc1 + beta2 * n / bc2
    via_v = _div(np.abs(numerator) * b_v, 2.0 * np.sqrt(v * bc3) * denom**2)
    return Update(0.0, lr * ((b_m / bc1 + beta2 * b_n / bc2) / denom + via_v))


def ademamix_schedule(h: Mapping[str, Any], t: int) -> Tuple[float, float]:
    """(alpha_t, beta3_t) of step t: the paper's warmups over t_alpha_beta3 steps (0: none)."""
    alpha, beta3, period = h["alpha"], h["beta3"], h["t_alpha_beta3"]
    if period <= 0:
        return alpha, beta3
    ln1, ln3 = math.log(h["beta1"]), math.log(beta3)
    half_life_mix = ln1 * ln3 / ((1.0 - t / period) * ln3 + (t / period) * ln1)
    return min(t * alpha / period, alpha), min(math.exp(half_life_mix), beta3)


def _ademamix_model(s: Step) -> Update:
    h, t = s.h, s.t
    alpha_t, beta3_t = ademamix_schedule(h, t)
    b_m, b_v = _moments(s, h["beta1"], h["beta2"])
    # During the warmup beta3_t comes from exp and log in double, a few ulps of 1 from the
    # reference's (another libm): the weight 1 - beta3_t is off by as much, absolutely.
    weight_err = 4.0 * 2.0**-53 if h["t_alpha_beta3"] > 0 else 0.0
    b_slow = s.state("exp_avg_slow", beta3_t, (1.0 - beta3_t) * s.G,
                     fed=(1.0 - beta3_t) * s.l2_err
                     + weight_err * np.abs(s.gp - s.old("exp_avg_slow")))
    bc1, bc2 = 1.0 - h["beta1"] ** t, 1.0 - h["beta2"] ** t
    m, slow, v = s.new("exp_avg"), s.new("exp_avg_slow"), s.new("exp_avg_sq")
    denom = np.sqrt(v / bc2) + h["eps"]
    numerator = m / bc1 + alpha_t * slow
    via_v = _div(np.abs(numerator) * b_v, 2.0 * np.sqrt(v * bc2) * denom**2)
    return Update(0.0, h["lr"] * ((b_m / bc1 + alpha_t * b_slow) / denom + via_v))


def schedulefree_scalars(h: Mapping[str, Any], t: int, lr_max: float,
                         weight_sum: float) -> Tuple[float, float]:
    """(lr_t, c_t) of step t from the scalar states before it."""
    warmup = h["warmup_steps"]
    lr_t = h["lr"] * (min(t / warmup, 1.0) if warmup > 0 else 1.0)
    lr_max = max(lr_t, lr_max)
    weight = t ** h["r"] * lr_max ** h["weight_lr_power"]
    weight_sum += weight
    c = weight / weight_sum if weight_sum != 0 else 0.0
    if h["decoupling_c"] > 0:
        c = min(1.0, c * (1.0 - h["beta1"]) * h["decoupling_c"])
    return lr_t, c


def _schedulefree_model(s: Step) -> Update:
    """u = g / (sqrt(v_hat + 1e-15) + eps) + wd y (the decay's error: l2_err); z sums -lr u;
    y moves toward z by c and by coef u."""
    h, t = s.h, s.t
    beta1, beta2 = h["beta1"], h["beta2"]
    lr_t, c = schedulefree_scalars(h, t, s.old("lr_max"), s.old("weight_sum"))
    bc2 = 1.0 - beta2**t
    b_v = s.state("exp_avg_sq", beta2, (1.0 - beta2) * s.g**2)
    if h["ams_bound"]:
        b_hat = s.maximum("max_exp_avg_sq", of="exp_avg_sq", scale=1.0 / bc2)
        v_hat = s.new("max_exp_avg_sq")
    else:
        b_hat, v_hat = b_v / bc2, s.new("exp_avg_sq") / bc2
    root = np.sqrt(v_hat + 1e-15)
    denom = root + h["eps"]
    u = s.g / denom + h["weight_decay"] * s.p_prev
    b_u = _div(np.abs(s.g) * b_hat, 2.0 * root * denom**2) + s.l2_err
    z_old = s.old("z") if t > 1 else s.p_prev
    b_z_old = s.old_bound("z") if t > 1 else 0.0
    s.state("z", 1.0, lr_t * np.abs(u), fed=lr_t * b_u)
    coef = abs(lr_t * (beta1 * (1.0 - c) - 1.0))
    return Update(c * np.abs(z_old - s.p_prev) + coef * np.abs(u), c * b_z_old + coef * b_u)


def _sophia_hessian(g: np.ndarray, t: int) -> Dict[str, np.ndarray]:
    """A stand-in for an estimate of diag(H): positive where |g| is large (4 g^2), negative
    where it is tiny (a noisy estimate; max(h, eps) then bounds the step), zero where g is."""
    g64 = g.astype(np.float64)
    return {"hessian": (4.0 * g64 * g64 - 0.01 * np.abs(g64)).astype(g.dtype)}


def _sophia_model(s: Step) -> Update:
    """u = clamp(m / max(h, eps), -rho, rho): max and clamp are 1-Lipschitz, so u's error is
    at most the ratio's, none where the ratio is beyond rho by more than its error (clamped
    on both sides), and never more than 2 rho (the clamp's width)."""
    h, lr, rho = s.h, s.h["lr"], s.h["p"]
    b_m = s.state("momentum", h["beta1"], (1.0 - h["beta1"]) * s.G,
                  fed=(1.0 - h["beta1"]) * s.l2_err)
    if h["update_hessian"]:
        b_h = s.state("hessian_moment", h["beta2"],
                      (1.0 - h["beta2"]) * np.abs(s.inputs["hessian"]))
    else:
        b_h = s.state("hessian_moment", 1.0)
    m = s.new("momentum")
    denom = np.maximum(s.new("hessian_moment"), h["eps"])
    ratio = np.abs(m) / denom
    ratio_err = b_m / denom + ratio * b_h / denom
    f = np.where(ratio - ratio_err > rho, 0.0, lr * np.minimum(ratio_err, 2.0 * rho))
    return Update(lr * np.minimum(ratio, rho), f)


def lamb_step_size(h: Mapping[str, Any], t: int) -> Tuple[float, bool]:
    """LAMB's step size before the trust ratio, and whether d divides by sqrt(v) + eps
    (pytorch_optimizer's rectification; the same double arithmetic as the reference)."""
    size, adaptive = h["lr"], True
    if h["rectify"]:
        n_sma_max = 2.0 / (1.0 - h["beta2"]) - 1.0
        beta2_t = h["beta2"] ** t
        n_sma = n_sma_max - 2.0 * t * beta2_t / (1.0 - beta2_t)
        assert abs(n_sma - h["n_sma_threshold"]) > 1e-9 * n_sma_max, "switch within rounding"
        adaptive = n_sma >= h["n_sma_threshold"]
        if adaptive:
            size *= math.sqrt((1.0 - beta2_t) * (n_sma - 4.0) / (n_sma_max - 4.0)
                              * (n_sma - 2.0) / n_sma * n_sma_max / (n_sma_max - 2.0))
        elif not h["degenerated_to_sgd"]:
            size = -size
    return size / (1.0 - h["beta1"] ** t), adaptive


def _lamb_model(s: Step) -> Update:
    """m and v: Adam's moments (g weighted beta3); d = m / (sqrt(v) + eps) with Adam's
    sensitivity to them (or d = m), plus its own roundings. The trust ratio is a ratio of two
    norms over the whole tensor: by the triangle inequality each norm's error is at most the
    norm of its elements' bounds, so the ratio's relative error is at most the two norms'
    relative errors plus a few u. The update s * trust * d takes d's error times s * trust and
    the ratio's times s * |d|. The decay factor is at most 1: p's error only shrinks by it."""
    h, t, u = s.h, s.t, s.u
    beta1, beta2, eps, wd = h["beta1"], h["beta2"], h["eps"], h["weight_decay"]
    beta3 = 1.0 - beta1 if h["grad_averaging"] else 1.0
    b_m = s.state("exp_avg", beta1, beta3 * s.G)
    b_v = s.state("exp_avg_sq", beta2, (1.0 - beta2) * s.G**2)
    size, adaptive = lamb_step_size(h, t)
    if not size > 0:  # rectify's steps without an update: the decay alone
        return Update(0.0, 0.0)
    decay = 1.0 - wd * (1.0 if h["fixed_decay"] else h["lr"]) if h["weight_decouple"] else 1.0
    p = s.p_prev * decay
    b_p = s.p_bound_prev * decay + u * np.abs(p)
    m, v = s.new("exp_avg"), s.new("exp_avg_sq")
    if adaptive:
        root = np.sqrt(v)
        denom = root + eps
        d = m / denom
        b_d = b_m / denom + _div(np.abs(m) * b_v, 2.0 * root * denom**2) + 3.0 * u * np.abs(d)
    else:
        d, b_d = m, b_m
    if wd != 0 and not h["weight_decouple"] and not h["rectify"]:
        d = d + wd * p
        b_d = b_d + wd * b_p + u * (np.abs(d) + wd * np.abs(p))
    if h["rectify"]:
        q = p - size * d
        b_q = b_p + size * b_d + 2.0 * u * (np.abs(p) + size * np.abs(d))
    else:
        q, b_q = d, b_d
    w, n = float(np.linalg.norm(p)), float(np.linalg.norm(q))
    if h["adam"] or w == 0 or n == 0:
        trust, b_trust = 1.0, 0.0
    else:
        trust = min(w, 10.0) / (n + eps)
        b_trust = trust * (float(np.linalg.norm(b_p)) / w + float(np.linalg.norm(b_q)) / n
                           + 4.0 * u)
    return Update(size * trust * np.abs(d), size * (trust * b_d + np.abs(d) * b_trust))


def _coupled_unless_weight_decouple(h: Mapping[str, Any]) -> float:
    return 0.0 if h.get("weight_decouple", False) else float(h.get("weight_decay", 0.0))


def _nadam_mu(h: Mapping[str, Any], t: float) -> float:
    return h["beta1"] * (1.0 - 0.5 * 0.96 ** (t * h["momentum_decay"]))


def _nadam_model(s: Step) -> Update:
    h, t = s.h, s.t
    b_m, b_v = _moments(s, h["beta1"], h["beta2"])
    mu, mu_next = _nadam_mu(h, t), _nadam_mu(h, t + 1)
    product = s.new("mu_product")
    a_m = h["lr"] * mu_next / (1.0 - product * mu_next)  # the update's factors of m and g
    a_g = h["lr"] * (1.0 - mu) / (1.0 - product)
    bc2 = 1.0 - h["beta2"] ** t
    v, m = s.new("exp_avg_sq"), s.new("exp_avg")
    denom = np.sqrt(v / bc2) + h["eps"]
    via_v = _div((a_m * np.abs(m) + a_g * np.abs(s.gp)) * b_v, 2.0 * np.sqrt(v * bc2) * denom**2)
    return Update(a_g * s.G / denom, (a_m * b_m + a_g * s.l2_err) / denom + via_v)


def _radam_model(s: Step) -> Update:
    h, t = s.h, s.t
    beta1, beta2 = h["beta1"], h["beta2"]
    b_m, b_v = _moments(s, beta1, beta2)
    bc1, bc2 = 1.0 - beta1**t, 1.0 - beta2**t
    rho_inf = 2.0 / (1.0 - beta2) - 1.0
    rho_t = rho_inf - 2.0 * t * beta2**t / bc2
    assert abs(rho_t - 5.0) > 1e-9 * rho_inf, "RAdam's switch within rounding of rho_t = 5"
    if rho_t <= 5.0:
        return Update(0.0, h["lr"] / bc1 * b_m)
    rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf
                     / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
    v, m = s.new("exp_avg_sq"), s.new("exp_avg")
    root = np.sqrt(v)
    denom = root + h["eps"]
    k = h["lr"] * rect * math.sqrt(bc2) / bc1
    return Update(0.0, k * (b_m / denom + _div(np.abs(m) * b_v, 2.0 * root * denom**2)))


def _asgd_model(s: Step) -> Update:
    eta, mu = s.old("eta"), s.old("mu")  # this step's, as the previous step left them
    update = Update(eta * s.G, eta * s.l2_err)
    p_bound = s.param_bound_after(update)
    if mu == 1.0:  # ax = p, exactly
        s.state("ax", 0.0, fed=p_bound)
    else:  # ax + (p - ax) * mu
        s.state("ax", 1.0 - mu, mu * np.abs(s.run.p), fed=mu * p_bound)
    return update


def _rprop_model(s: Step) -> Update:
    old = s.old("step_size")
    factor = _div(s.new("step_size"), old)  # eta, or the clamp's
    b_step = s.state("step_size", factor)
    s.exact("prev")
    return Update(0.0, b_step * (s.new("prev") != 0))


def _rprop_ambiguous(run: "ReferenceRun", g: np.ndarray) -> np.ndarray:
    """Elements where the dtype product g * prev has another sign than the exact one (only
    an underflow could do that: both factors are dtype values)."""
    prev = run.state.get("prev")
    if prev is None:
        return np.zeros(g.shape, dtype=bool)
    with np.errstate(under="ignore", over="ignore"):
        low = g.astype(run.dtype) * prev.astype(run.dtype)
    return np.sign(low) != np.sign(g * prev)


# -- the cases ----------------------------------------------------------------------------------
def V(name: str, **hyper: Any) -> Variant:
    return Variant(name, hyper)


SGD = Case(
    name="sgd",
    op="sgd_",
    classes={"SGD": {}},
    base={"lr": 0.01},
    step="first_call",
    states={"momentum_buffer": lambda h: h["momentum"] != 0},
    written_first=("momentum_buffer",),
    model=_sgd_model,
    variants=(
        V("plain"),
        V("lr=0.1", lr=0.1),
        V("momentum", momentum=0.9),
        V("dampening", momentum=0.9, dampening=0.5),
        V("dampening=1", momentum=0.5, dampening=1.0),
        V("nesterov", momentum=0.9, nesterov=True),
        V("weight_decay", weight_decay=0.1),
        V("momentum+wd", momentum=0.9, weight_decay=0.05),
        V("maximize", maximize=True),
        V("maximize+momentum+wd", momentum=0.9, weight_decay=0.1, maximize=True),
        V("all", momentum=0.8, nesterov=True, weight_decay=0.05, maximize=True),
    ),
    large_variants=("all", "dampening"),
    tolerance=Tolerance(
        c_param=3.0,
        c_state=4.0,
        why="A step is 2-4 roundings of p and of the buffer (wd add, buffer mul-add, "
            "nesterov add, p add). Measured worst |err|/bound over all variants, sizes (1e6 "
            "included) and both dtypes: param 0.18, state 0.27 (float64: exact, the reference "
            "rounds the same way).",
    ),
    checked=dict(step=2, lr=0.1, momentum=0.9, dampening=0.1, weight_decay=0.01),
    invalid=(
        ({"nesterov": True, "momentum": 0.0}, "nesterov: requires momentum > 0 and dampening == 0"),
        ({"nesterov": True, "momentum": 0.9, "dampening": 0.1},
         "nesterov: requires momentum > 0 and dampening == 0"),
    ),
    training={"SGD": {"lr": 0.1, "momentum": 0.9, "weight_decay": 1e-4}},
)

ADAM = Case(
    name="adam",
    op="adam_",
    classes={"Adam": {}, "AdamW": {"decoupled_weight_decay": True}},
    base={"lr": 0.01},
    states={"exp_avg": _always, "exp_avg_sq": _always,
            "max_exp_avg_sq": lambda h: h["amsgrad"]},
    model=_adam_model,
    nonnegative=("exp_avg_sq", "max_exp_avg_sq"),
    variants=(
        V("default"),
        V("lr=1e-3", lr=1e-3),
        V("betas", beta1=0.8, beta2=0.95),
        V("beta1=0", beta1=0.0, beta2=0.9),
        V("eps=1e-3", eps=1e-3),
        V("l2", weight_decay=0.1),
        V("decoupled", weight_decay=0.1, decoupled_weight_decay=True),
        V("amsgrad", amsgrad=True),
        V("amsgrad+decoupled", amsgrad=True, weight_decay=0.05, decoupled_weight_decay=True),
        V("maximize", maximize=True),
        V("maximize+l2+amsgrad", maximize=True, weight_decay=0.1, amsgrad=True, beta1=0.85,
          beta2=0.99),
    ),
    large_variants=("amsgrad+decoupled", "maximize+l2+amsgrad"),
    tolerance=Tolerance(
        c_param=6.0,
        c_state=8.0,
        why="A step is ~10 roundings (moments, sqrt, two divisions, products); v also carries "
            "the float32 rounding of beta2, which compounds as beta2^t (~t*u/2 relative). "
            "Measured worst |err|/bound over all variants, sizes (1e6 included) and both "
            "dtypes: param 0.33 (float64 at 1e6; float32 0.19), state 0.33.",
    ),
    checked=dict(step=3, lr=0.01, beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.01,
                 amsgrad=True),
    # max_exp_avg_sq below every new exp_avg_sq, so that the call updates it
    checked_ranges={"exp_avg_sq": (0.1, 2.0), "max_exp_avg_sq": (0.0, 1e-3)},
    training={"Adam": {"lr": 1e-2},
              "AdamW": {"lr": 1e-2, "weight_decay": 1e-2, "decoupled_weight_decay": True}},
)

LION = Case(
    name="lion",
    op="lion_",
    classes={"Lion": {}},
    base={"lr": 3e-3},
    step="none",
    states={"exp_avg": _always},
    model=_lion_model,
    l2=_no_l2,
    ambiguous=_lion_ambiguous,
    ambiguous_slack=lambda h: 2.0 * h["lr"],
    variants=(
        V("default"),
        V("lr=1e-4", lr=1e-4),
        V("betas", beta1=0.95, beta2=0.98),
        V("beta1=0", beta1=0.0),
        V("beta2=1", beta2=1.0),
        V("weight_decay", weight_decay=1.0),
        V("maximize", maximize=True),
        V("all", beta1=0.95, beta2=0.98, weight_decay=0.3, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=4.0,
        c_state=3.0,
        why="Away from sign changes p moves by exactly +-lr per step (one rounding of p, one "
            "of the decay product); m is an EMA with 2-3 roundings per step. Where "
            "c = beta1*m + (1-beta1)*g is within rounding of zero the two precisions may pick "
            "different signs: those elements get 2*lr per such step (Tolerance). Measured "
            "worst |err|/bound: param 0.29, state 0.23; sign exemptions: at most 5 of the "
            "5219 small-size elements and 11 of 1e6 in float32, none in float64.",
    ),
    checked=dict(lr=0.01, beta1=0.9, beta2=0.99, weight_decay=0.01),
    training={"Lion": {"lr": 3e-3, "weight_decay": 1.0}},
)

RMSPROP = Case(
    name="rmsprop",
    op="rmsprop_",
    classes={"RMSprop": {}},
    states={"square_avg": _always, "momentum_buffer": lambda h: h["momentum"] > 0,
            "grad_avg": lambda h: h["centered"]},
    model=_rmsprop_model,
    nonnegative=("square_avg",),
    variants=(
        V("default"),  # torch: default
        V("lr=1e-3", lr=1e-3),  # torch: non-default lr
        V("weight_decay", weight_decay=0.1),  # torch: nonzero weight_decay
        V("maximize", maximize=True),  # torch: maximize
        V("centered+wd", weight_decay=0.1, centered=True),  # torch: centered
        V("maximize+wd", maximize=True, weight_decay=0.1),  # torch: maximize, weight_decay
        V("centered+wd+momentum", weight_decay=0.1, centered=True, momentum=0.1),  # torch: momentum
        V("all", weight_decay=0.1, centered=True, momentum=0.1, maximize=True),  # torch: maximize,
        # centered, weight_decay, w/ momentum
        V("momentum", momentum=0.9),
        V("centered", centered=True),
        V("momentum+wd", momentum=0.5, weight_decay=0.05),
        V("centered+momentum", centered=True, momentum=0.9),
        V("alpha+eps", alpha=0.9, eps=1e-3),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=4.0,
        c_state=8.0,
        why="v: 3-4 roundings per step (square, two products, add; float32 also rounds "
            "alpha and 1-alpha); g_avg 3; the update: sqrt, eps, division, the buffer's "
            "mul-add, p's add. With centered, v - g_avg^2 cancels part of v: the rounding of "
            "the square and the difference enters through |d(g/D)/dv| (the model). Measured "
            "worst |err|/bound over all variants, sizes (1e6 included) and both dtypes: "
            "param 0.22 (float64; float32 0.13), state 0.32 (float32, 1e6).",
    ),
    checked=dict(step=3, lr=0.01, momentum=0.9, centered=True, weight_decay=0.01),
    checked_ranges={"square_avg": (10.0, 20.0)},  # above every grad_avg^2: a finite update
    training={"RMSprop": {"lr": 3e-3}},
)

ADAGRAD = Case(
    name="adagrad",
    op="adagrad_",
    classes={"Adagrad": {}},
    states={"sum": _always},
    starts={"sum": "initial_accumulator_value"},
    model=_adagrad_model,
    nonnegative=("sum",),
    variants=(
        V("default"),  # torch: default
        V("weight_decay", weight_decay=0.1),  # torch: nonzero weight_decay
        V("maximize+wd", weight_decay=0.1, maximize=True),  # torch: maximize
        V("lr=0.1", lr=0.1),  # torch: non-default lr
        V("initial_accumulator_value+wd", initial_accumulator_value=0.1,
          weight_decay=0.1),  # torch: initial_accumulator_value
        V("lr_decay+wd", lr=0.1, lr_decay=0.5, weight_decay=0.1),  # torch: lr_decay
        V("lr=1e-3", lr=1e-3),  # torch: Tensor lr
        V("maximize", maximize=True),
        V("all", lr=0.1, lr_decay=0.01, weight_decay=0.05, initial_accumulator_value=0.1,
          eps=1e-6, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=4.0,
        c_state=8.0,
        why="sum: one square and one add per step, never decaying (decay 1: its error is "
            "t roundings of the growing sum); the update: sqrt, eps, division and the "
            "dtype-rounded lr_t. Measured worst |err|/bound over all variants, sizes (1e6 "
            "included) and both dtypes: param 0.24 (float64; float32 0.12), state 0.28.",
    ),
    checked=dict(step=3, lr=0.01, lr_decay=0.01, weight_decay=0.01),
    checked_ranges={"sum": (0.1, 2.0)},
    training={"Adagrad": {"lr": 0.05}},
)

ADADELTA = Case(
    name="adadelta",
    op="adadelta_",
    classes={"Adadelta": {}},
    states={"square_avg": _always, "acc_delta": _always},
    model=_adadelta_model,
    nonnegative=("square_avg", "acc_delta"),
    variants=(
        V("default"),  # torch: default
        V("lr=0.01", lr=0.01),  # torch: non-default lr
        V("weight_decay", weight_decay=0.1),  # torch: nonzero weight_decay
        V("maximize", maximize=True),  # torch: maximize
        V("maximize+wd", weight_decay=0.1, maximize=True),  # torch: maximize, weight_decay
        V("rho+wd", rho=0.95, weight_decay=0.9),  # torch: rho
        V("eps=1e-3", eps=1e-3),
        V("all", rho=0.8, eps=1e-4, weight_decay=0.05, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=3.0,
        c_state=16.0,
        why="delta = sqrt(u + eps) / sqrt(v + eps) * g is ~8 roundings (eps and rho "
            "rounded to float32 too), and acc_delta takes in its square, twice its relative "
            "error, hence c_state = 16; p one product and add. Measured worst |err|/bound "
            "over all variants, sizes (1e6 included) and both dtypes: param 0.16, state 0.23 "
            "(float64: exact, the reference computes in the kernel's order).",
    ),
    checked=dict(step=3, lr=1.0, rho=0.9, weight_decay=0.01),
    checked_ranges={"square_avg": (0.1, 2.0), "acc_delta": (0.1, 2.0)},
    training={"Adadelta": {"lr": 1.0}},
)

ADAMAX = Case(
    name="adamax",
    op="adamax_",
    classes={"Adamax": {}},
    states={"exp_avg": _always, "exp_inf": _always},
    model=_adamax_model,
    nonnegative=("exp_inf",),
    variants=(
        V("default"),  # torch: default
        V("lr=0.1", lr=0.1),  # torch: non-default lr
        V("weight_decay", weight_decay=0.1),  # torch: nonzero weight_decay
        V("maximize", maximize=True),  # torch: maximize
        V("maximize+wd", weight_decay=0.1, maximize=True),  # torch: maximize, weight_decay
        V("betas", beta1=0.8, beta2=0.95),
        V("beta1=0+eps", beta1=0.0, eps=1e-3),
        V("all", beta1=0.85, beta2=0.99, eps=1e-6, weight_decay=0.05, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=4.0,
        c_state=6.0,
        why="m as Adam's (3 roundings); exp_inf one product, |g| + eps, and the maximum, "
            "which is 1-Lipschitz (continuous: no exemption); the update m / u times the "
            "rounded lr/bc1. Measured worst |err|/bound over all variants, sizes (1e6 "
            "included) and both dtypes: param 0.25 (float64; float32 0.12), state 0.28.",
    ),
    checked=dict(step=3, lr=0.01, weight_decay=0.01),
    checked_ranges={"exp_inf": (0.1, 2.0)},
    training={"Adamax": {"lr": 1e-2}},
)

NADAM = Case(
    name="nadam",
    op="nadam_",
    classes={"NAdam": {}},
    states={"exp_avg": _always, "exp_avg_sq": _always},
    scalars={"mu_product": 1.0},
    model=_nadam_model,
    nonnegative=("exp_avg_sq",),
    variants=(
        V("default"),  # torch: default
        V("lr=1e-3", lr=1e-3),  # torch: non-default lr
        V("momentum_decay", momentum_decay=6e-3),  # torch: non-zero momentum_decay
        V("weight_decay", weight_decay=0.1),  # torch: weight_decay
        V("wd+momentum_decay", weight_decay=0.1, momentum_decay=6e-3),  # torch: weight_decay,
        # momentum_decay
        V("decoupled", weight_decay=0.1, momentum_decay=6e-3,
          decoupled_weight_decay=True),  # torch: decoupled_weight_decay
        V("maximize+wd", weight_decay=0.1, maximize=True),  # torch: maximize
        V("decoupled-no-wd", decoupled_weight_decay=True),
        V("betas", beta1=0.8, beta2=0.99),
        V("all", beta1=0.85, beta2=0.99, eps=1e-6, weight_decay=0.05, momentum_decay=1e-2,
          decoupled_weight_decay=True, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=7.0,
        c_state=12.0,
        why="Adam's moments; the update combines g and m with two dtype-rounded coefficients "
            "over sqrt(v) + eps*sqrt(bc2): ~10 roundings, and g enters directly (its rounding "
            "and the L2 penalty's error: h and f in the model). mu_product is computed in "
            "double on both sides and compared exactly. Measured worst |err|/bound over all "
            "variants, sizes (1e6 included) and both dtypes: param 0.27 (float64 at 1e6; "
            "float32 0.16), state 0.23.",
    ),
    checked=dict(step=3, lr=0.01, weight_decay=0.01, mu_product=0.8),
    checked_ranges={"exp_avg_sq": (0.1, 2.0)},
    sample={"mu_product": (0.0, 1.0)},
    training={"NAdam": {"lr": 1e-2}},
)

RADAM = Case(
    name="radam",
    op="radam_",
    classes={"RAdam": {}},
    states={"exp_avg": _always, "exp_avg_sq": _always},
    model=_radam_model,
    nonnegative=("exp_avg_sq",),
    variants=(
        V("default"),  # torch: default
        V("lr=2e-3", lr=2e-3),  # torch: non-default lr
        V("eps=1e-6", eps=1e-6),  # torch: non-default eps
        V("weight_decay", weight_decay=0.1),  # torch: nonzero weight_decay
        V("decoupled", weight_decay=0.1, decoupled_weight_decay=True),  # torch:
        # decoupled_weight_decay
        V("maximize+wd", weight_decay=0.1, maximize=True),  # torch: maximize
        V("decoupled-no-wd", decoupled_weight_decay=True),
        V("betas", beta1=0.8, beta2=0.9),
        V("all", beta1=0.85, beta2=0.99, eps=1e-6, weight_decay=0.05,
          decoupled_weight_decay=True, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=7.0,
        c_state=12.0,
        why="Adam's moments; rectified steps (from step 6 on) divide the dtype-rounded "
            "coefficient by sqrt(v) + eps (~8 roundings), the first 5 are lr/bc1*m. The switch "
            "rho_t > 5 is per step, in double on both sides, never within 4e-3 of 5 (the model "
            "asserts a margin). Measured worst |err|/bound over all variants, sizes (1e6 "
            "included) and both dtypes: param 0.27 (float64 at 1e6; float32 0.15), state "
            "0.23.",
    ),
    checked=dict(step=10, lr=0.01, weight_decay=0.01),  # step 10: the rectified branch
    checked_ranges={"exp_avg_sq": (0.1, 2.0)},
    training={"RAdam": {"lr": 3e-2}},
)

ASGD = Case(
    name="asgd",
    op="asgd_",
    classes={"ASGD": {}},
    states={"ax": _always},
    scalars={"eta": "lr", "mu": 1.0},
    model=_asgd_model,
    lr_role="eta",
    variants=(
        V("default"),  # torch: default
        V("lambd=0.1", lambd=0.1),  # torch: non-default lambd
        V("lr=0.02", lr=0.02),  # torch: non-default lr
        V("t0=100", t0=100.0),  # torch: t0 (averaging would start at step 102)
        V("maximize", maximize=True),  # torch: maximize
        V("weight_decay", weight_decay=0.1),  # torch: nonzero weight_decay
        V("maximize+wd", weight_decay=0.1, maximize=True),  # torch: maximize, nonzero wd
        V("t0=10", t0=10.0),  # averaging from step 12 on
        V("t0=0+alpha", t0=0.0, alpha=0.5, lambd=0.01),  # averaging from step 2 on
        V("all", lr=0.05, lambd=0.01, alpha=0.6, t0=5.5, weight_decay=0.05, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=5.0,
        c_state=2.0,
        why="p: two roundings per step (the decay product, the gradient step) and the two "
            "dtype-rounded coefficients; ax a copy of p while mu = 1 (its bound is p's), then "
            "an average with 3 roundings. eta and mu are computed in double on both sides from "
            "the step count, so the mu == 1 switch is the same and they are compared exactly. "
            "Measured worst |err|/bound over all variants, sizes (1e6 included) and both "
            "dtypes: param 0.24, state 0.17 (float64: exact).",
    ),
    checked=dict(step=3, lr=0.01, weight_decay=0.01, eta=0.01, mu=0.5),
    sample={"lambd": (0.0, 1.0), "alpha": (0.0, 1.0), "t0": (0.0, 20.0), "eta": (0.0, 1.0),
            "mu": (0.0, 1.0)},
    training={"ASGD": {"lr": 0.3}},
)

RPROP = Case(
    name="rprop",
    op="rprop_",
    classes={"Rprop": {}},
    states={"prev": _always, "step_size": _always},
    starts={"step_size": "lr"},
    model=_rprop_model,
    l2=_no_l2,
    nonnegative=("step_size",),
    lr_role="start",
    ambiguous=_rprop_ambiguous,
    variants=(
        V("default"),  # torch: default
        V("lr=2e-4", lr=2e-4),  # torch: non-default lr
        V("etas", etaminus=0.5, etaplus=1.5),  # torch: non-default etas
        V("step_sizes", step_size_min=2e-6, step_size_max=100.0),  # torch: non-default
        # step_sizes
        V("maximize", maximize=True),  # torch: maximize
        V("clamped", step_size_min=1e-3, step_size_max=0.02),  # both clamps reached
        V("all", lr=0.05, etaminus=0.3, etaplus=1.7, step_size_min=1e-3, step_size_max=0.5,
          maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=2.0,
        c_state=1.5,
        why="prev is a copy of the (masked) gradient and the decisions are exact (no "
            "ambiguous element in any run): prev is compared exactly; step_size is one "
            "product per step with a dtype-rounded eta (~u relative per step), p one "
            "subtraction of it. Measured worst |err|/bound over all variants, sizes (1e6 "
            "included) and both dtypes: param 0.24, state 0.21 (float64: exact).",
    ),
    checked=dict(step=3, lr=0.01),
    # grad and prev of one sign: every element grows its step and moves
    checked_ranges={"grad": (0.5, 1.5), "prev": (0.5, 1.5), "step_size": (0.01, 0.1)},
    sample={"etaminus": (0.05, 0.95), "etaplus": (1.05, 3.0), "step_size_min": (0.0, 1e-3),
            "step_size_max": (1.0, 100.0)},
    invalid=(
        ({"etaminus": 1.0}, "etas: expected 0 < etaminus < 1 < etaplus"),
        ({"etaminus": 0.0}, "etas: expected 0 < etaminus < 1 < etaplus"),
        ({"etaplus": 1.0}, "etas: expected 0 < etaminus < 1 < etaplus"),
    ),
    training={"Rprop": {"lr": 1e-3}},
)

ADAN = Case(
    name="adan",
    op="adan_",
    classes={"Adan": {}},
    states={"exp_avg": _always, "exp_avg_sq": _always, "exp_avg_diff": _always,
            "previous_grad": _always},
    model=_adan_model,
    l2=_no_l2,  # (its weight decay is a proximal step or decoupled, never in the gradient)
    nonnegative=("exp_avg_sq",),
    variants=(
        V("default"),
        V("betas", beta1=0.9, beta2=0.8, beta3=0.999),
        V("weight_decay", weight_decay=0.1),  # the proximal step p / (1 + lr wd)
        V("weight_decouple", weight_decay=0.1, weight_decouple=True),
        V("maximize", maximize=True),
        V("all", beta1=0.95, beta2=0.9, beta3=0.995, eps=1e-6, weight_decay=0.05,
          weight_decouple=True, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=6.0,
        c_state=8.0,
        why="Adam's structure with a third moment: the difference d = g - g_prev (one "
            "rounding of |g| + |g_prev|) feeds n and, as g + beta2 d, v; the update is one "
            "division of two dtype-rounded terms. previous_grad (-g) is exact. Measured worst "
            "|err|/bound over all variants, sizes (1e6 included) and both dtypes: param 0.29 "
            "(float64 at 1e6; float32 0.18), state 0.16.",
    ),
    checked=dict(step=3, lr=0.01, weight_decay=0.01),
    checked_ranges={"exp_avg_sq": (0.1, 2.0)},
    training={"Adan": {"lr": 1e-2}},
)

ADEMAMIX = Case(
    name="ademamix",
    op="ademamix_",
    classes={"AdEMAMix": {}},
    states={"exp_avg": _always, "exp_avg_sq": _always, "exp_avg_slow": _always},
    model=_ademamix_model,
    l2=_coupled_unless_weight_decouple,
    nonnegative=("exp_avg_sq",),
    variants=(
        V("default"),
        V("betas", beta1=0.8, beta2=0.99, beta3=0.999),
        V("alpha", alpha=2.0),
        V("warmup", t_alpha_beta3=40.0),  # alpha and beta3 ramp over the first 40 steps
        V("weight_decay", weight_decay=0.1),  # an L2 penalty in the gradient
        V("weight_decouple", weight_decay=0.1, weight_decouple=True),
        V("fixed_decay", weight_decay=0.01, weight_decouple=True, fixed_decay=True),
        V("maximize", maximize=True),
        V("all", beta1=0.85, beta2=0.99, beta3=0.999, alpha=3.0, t_alpha_beta3=30.0, eps=1e-6,
          weight_decay=0.05, weight_decouple=True, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=6.0,
        c_state=8.0,
        why="Adam's moments plus a slow EMA (2-3 roundings a step, its weight 1 - beta3_t "
            "computed in double on both sides); the update one division of two dtype-rounded "
            "terms; during the warmup beta3_t's own rounding in double (a few ulps of 1, "
            "another libm than the reference's) enters the slow EMA's bound absolutely. "
            "Measured worst |err|/bound over all variants, sizes (1e6 included) and both "
            "dtypes: param 0.30 (float64 at 1e6; float32 0.18), state 0.33.",
    ),
    checked=dict(step=3, lr=0.01, weight_decay=0.01),
    checked_ranges={"exp_avg_sq": (0.1, 2.0)},
    sample={"t_alpha_beta3": (0.0, 200.0), "alpha": (0.0, 10.0)},
    invalid=(
        ({"t_alpha_beta3": 10.0, "beta1": 0.0}, "t_alpha_beta3: the warmup requires beta1 > 0 "
                                                "and beta3 > 0 (betas[0], betas[2])"),
        ({"t_alpha_beta3": 10.0, "beta3": 0.0}, "t_alpha_beta3: the warmup requires beta1 > 0"),
    ),
    training={"AdEMAMix": {"lr": 1e-2}},
)

SCHEDULEFREE_ADAMW = Case(
    name="schedulefree_adamw",
    op="schedulefree_adamw_",
    classes={"ScheduleFreeAdamW": {}},
    states={"z": _always, "exp_avg_sq": _always, "max_exp_avg_sq": lambda h: h["ams_bound"]},
    scalars={"lr_max": -1.0, "weight_sum": 0.0},
    model=_schedulefree_model,
    # (its weight decay enters u, not g: l2_err is wd times p's bound, which u takes in)
    l2=lambda h: float(h["weight_decay"]),
    nonnegative=("exp_avg_sq", "max_exp_avg_sq"),
    lr_role="averaged",
    variants=(
        V("default"),
        V("betas", beta1=0.8, beta2=0.99),
        V("weight_decay", weight_decay=0.1),
        V("warmup", warmup_steps=20.0),
        V("r+power", r=0.5, weight_lr_power=1.0),
        V("decoupling_c", decoupling_c=50.0),
        V("ams_bound", ams_bound=True),
        V("maximize", maximize=True),
        V("all", lr=5e-3, beta1=0.85, beta2=0.99, weight_decay=0.05, warmup_steps=10.0,
          r=1.0, weight_lr_power=1.5, ams_bound=True, eps=1e-6, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=6.0,
        c_state=8.0,
        why="v: Adam's second moment; u one division (and the decay's product); y two "
            "updates a step (toward z by c, then by lr_t (beta1 (1 - c) - 1) u), z one. The "
            "scalars lr_t, c, lr_max and weight_sum are in double on both sides (compared "
            "exactly). Measured worst |err|/bound over all variants, sizes (1e6 included) and "
            "both dtypes: param 0.24 (float64; float32 0.08), state 0.19.",
    ),
    checked=dict(step=3, lr=0.01, weight_decay=0.01, ams_bound=True),
    checked_ranges={"exp_avg_sq": (0.1, 2.0), "max_exp_avg_sq": (0.0, 1e-3)},
    sample={"r": (0.0, 2.0), "weight_lr_power": (0.0, 3.0), "warmup_steps": (0.0, 50.0),
            "decoupling_c": (0.0, 100.0), "lr_max": (0.0, 1.0), "weight_sum": (0.0, 10.0)},
    training={"ScheduleFreeAdamW": {"lr": 1e-2}},
)

SOPHIA = Case(
    name="sophia",
    op="sophia_",
    # (the class refreshes the average only on steps given an estimate, or Hutchinson's:
    # its groups hold update_hessian=False, the ops' default is True)
    classes={"SophiaH": {"update_hessian": False}},
    states={"momentum": _always, "hessian_moment": _always},
    extra_inputs=("hessian",),
    input_values=_sophia_hessian,
    model=_sophia_model,
    l2=_coupled_unless_weight_decouple,
    variants=(
        V("default"),  # decoupled weight decay (weight_decouple=True), none given
        V("betas", beta1=0.9, beta2=0.999),
        V("p=1", p=1.0),  # most elements unclamped
        V("weight_decay", weight_decay=0.1),
        V("coupled", weight_decay=0.1, weight_decouple=False, p=1.0),
        V("fixed_decay", weight_decay=0.01, fixed_decay=True),
        V("no_update", update_hessian=False),  # the average stays 0: every step clamped
        V("maximize", maximize=True, p=1.0, eps=1e-3),
        V("all", lr=0.02, beta1=0.9, beta2=0.95, weight_decay=0.05, weight_decouple=False,
          p=0.5, eps=1e-6, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=4.0,
        c_state=6.0,
        why="Two EMAs (2-3 roundings a step each), one division and the clamp (1-Lipschitz, "
            "so no element is ambiguous); p one product with lr. Measured worst |err|/bound "
            "over all variants, sizes (1e6 included) and both dtypes: param 0.24 (float32; "
            "float64 0.11), state 0.24.",
    ),
    checked=dict(step=3, lr=0.01, weight_decay=0.01, weight_decouple=False, p=10.0),
    # (NumPy's class without estimates: steps of lr * p along the momentum's sign)
    training={"SophiaH": {"lr": 1.0, "update_hessian": False}},
)

LAMB = Case(
    name="lamb",
    op="lamb_",
    classes={"Lamb": {}},
    states={"exp_avg": _always, "exp_avg_sq": _always},
    model=_lamb_model,
    l2=_no_l2,  # (its L2 term joins the update d, not the gradient)
    nonnegative=("exp_avg_sq",),
    per_tensor=True,
    variants=(
        V("default"),  # decoupled weight decay (weight_decouple=True), none given
        V("betas", beta1=0.8, beta2=0.99),
        V("weight_decay", weight_decay=0.1),
        V("coupled", weight_decay=0.1, weight_decouple=False),
        V("fixed_decay", weight_decay=0.01, fixed_decay=True),
        V("grad_averaging", grad_averaging=False),
        V("adam", adam=True),
        V("rectify", rectify=True),  # no update before rho_t reaches the threshold
        V("degenerated_to_sgd", rectify=True, degenerated_to_sgd=True, n_sma_threshold=8.0),
        V("maximize", maximize=True, eps=1e-3),
        V("all", lr=2e-3, beta1=0.85, beta2=0.99, weight_decay=0.05, weight_decouple=False,
          grad_averaging=False, eps=1e-4, maximize=True),
    ),
    large_variants=("all",),
    tolerance=Tolerance(
        c_param=4.0,
        c_state=6.0,
        why="Adam's moments (2-3 roundings a step each), one division for d, the trust "
            "ratio's norms (in double on both sides) and one product and subtraction for p. "
            "Measured worst |err|/bound over all variants, sizes (1e6 included) and both "
            "dtypes: 0.26 (float64 at 1e6; float32 0.25).",
    ),
    checked=dict(step=3, lr=0.01, weight_decay=0.01),
    checked_ranges={"exp_avg_sq": (0.1, 2.0)},
    sample={"n_sma_threshold": (0.0, 10.0)},
    training={"Lamb": {"lr": 1e-2}},
)

CASES: Tuple[Case, ...] = (SGD, ADAM, LION, RMSPROP, ADAGRAD, ADADELTA, ADAMAX, NADAM, RADAM,
                           ASGD, RPROP, ADAN, ADEMAMIX, SCHEDULEFREE_ADAMW, SOPHIA, LAMB)
CASES_BY_NAME: Dict[str, Case] = {c.name: c for c in CASES}
# class name -> its case (AdamW -> ADAM)
CLASSES: Dict[str, Case] = {cls: c for c in CASES for cls in c.classes}
