"""Properties of gdfast.ops, checked with hypothesis for every optimizer of cases.py, over
options, dtypes, sizes, ISA levels and thread counts:

* the update of a prefix equals the prefix of the full update;
* the result at an index depends neither on where the arrays start (offset views into a
  bigger buffer) nor on the thread count, nor on the ISA level;
* a list-form call equals one call per tensor;
(all bitwise up to a NaN's sign and payload: see without_nan_bits)
* lr enters as the rule says (cases.Case.lr_role): lr=0 with weight_decay=0 leaves param
  unchanged while the states update as with any lr; ASGD's lr only enters through eta (the
  step with a given eta does not depend on lr); Rprop's only sets where step_size starts (the
  op ignores it); Schedule-Free's also weights the average (lr_max): with none seen yet, lr=0
  leaves param unchanged;
* a rejected call leaves every array unchanged (bitwise).

Hyperparameters are drawn from their registry ranges (cases.Case.sample for the unbounded
ones), option combinations the rule rejects are dropped. Arrays come from a NumPy generator
seeded by hypothesis (shrinking still works on sizes, offsets and options); states that are
non-negative in real runs (cases.Case.nonnegative) are drawn so; some examples salt the arrays
with special values (0, -0, subnormals, huge, inf, nan) that must flow through bit-identically
too.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gdfast
from gdfast._spec import RULES, Field, Rule

from cases import CASES, Case

SUPPORTED_ISAS = gdfast.isa_info()["supported"]
# Every property runs per case: 20 examples each, 220 per property over all optimizers.
PROPERTY_SETTINGS = settings(max_examples=20, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow,
                                                    HealthCheck.filter_too_much])
EVERY_CASE = pytest.mark.parametrize("case", CASES, ids=str)

# A thread gets at least 2**14 elements, so only sizes past 2 * 2**14 exercise the split.
SMALL = st.integers(0, 70)
LARGE = st.integers(33_000, 70_000)
SIZES = st.one_of(SMALL, SMALL, SMALL, LARGE)

SPECIALS = np.array([0.0, -0.0, 1e-40, -1e-40, 5e-324, 3e38, -3e38, np.inf, -np.inf, np.nan])


def real_strategy(case: Case, f: Field) -> st.SearchStrategy:
    """Typical values of a hyperparameter from its registry range."""
    if f.name in case.sample:
        return st.floats(*case.sample[f.name])
    r = f.range
    if r.lo == 0 and r.lo_open and r.hi == math.inf:  # eps > 0
        return st.one_of(st.sampled_from([1e-8, 1e-12, 1e-3, 1e-30]), st.floats(1e-12, 1.0))
    if r.lo == 0 and r.hi == math.inf:  # lr, weight_decay, momentum, eps >= 0, ...
        return st.one_of(st.just(0.0), st.floats(0.0, 1.0), st.sampled_from([1e-3, 0.1]))
    if r.lo == 0 and r.hi == 1:  # betas, rho, dampening
        return st.floats(1e-5 if r.lo_open else 0.0, 0.99999 if r.hi_open else 1.0)
    assert not (math.isfinite(r.lo) or math.isfinite(r.hi)), f"{case.name}.{f.name}: {r}"
    return st.floats(-1.0, 1.0)


def step_strategy(rule: Rule) -> st.SearchStrategy:
    if rule.step == "first_call":  # 1: the call that makes the buffer
        return st.integers(1, 3)
    return st.one_of(st.integers(1, 20), st.integers(1, 10**7))


def plan_accepts(rule: Rule, hyper: Dict[str, Any]) -> bool:
    try:
        rule.plan(rule.hyper(hyper, hyper.get("step", 1)))
    except ValueError:
        return False
    return True


@st.composite
def hypers(draw: Any, case: Case) -> Dict[str, Any]:
    """gdfast.ops keyword arguments of a valid call: hyperparameters, step, scalar states."""
    rule = RULES[case.name]
    out: Dict[str, Any] = {}
    if rule.step != "none":
        out["step"] = draw(step_strategy(rule), label="step")
    for f in rule.options:
        strategy = st.booleans() if f.kind == "flag" else real_strategy(case, f)
        out[f.name] = draw(strategy, label=f.name)
    for f in rule.scalar_states:  # the op's default (a start), or a value in its sample range
        default = None if f.start_from else f.default
        out[f.name] = draw(st.one_of(st.just(default), st.floats(*case.sample[f.name])),
                           label=f.name)
    if not plan_accepts(rule, out):  # e.g. nesterov without momentum: drop the flags
        out.update({f.name: False for f in rule.options if f.kind == "flag"})
    assume(plan_accepts(rule, out))
    return out


dtypes = st.sampled_from([np.float32, np.float64])


def active_tensors(case: Case, hyper: Dict[str, Any]) -> Tuple[str, ...]:
    """The tensor arguments this call uses (optional states only with their options)."""
    return case.tensor_names(hyper)


def make_values(case: Case, rng: np.random.Generator, name: str, n: int, dtype: Any,
                specials: bool) -> np.ndarray:
    x = rng.standard_normal(n) * (2.0 ** rng.integers(-4, 4))
    nonnegative = name in case.nonnegative
    if nonnegative:
        x = np.abs(x) * 0.1
    if specials and n:
        where = rng.integers(0, n, size=max(1, n // 8))
        x[where] = rng.choice(SPECIALS, size=where.size)
        if nonnegative:
            x = np.abs(x)
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def make_arrays(case: Case, hyper: Dict[str, Any], n: int, dtype: Any, seed: int,
                specials: bool = False) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: make_values(case, rng, name, n, dtype, specials)
            for name in active_tensors(case, hyper)}


def call(case: Case, hyper: Dict[str, Any], arrays: Dict[str, Any]) -> Any:
    """The op on these arrays: every state that was made goes in, so that a call whose
    hyperparameters were corrupted after the arrays were made (momentum 0 -> -1) still
    reaches the op."""
    states = {k: v for k, v in arrays.items() if k not in ("param", "grad")}
    with np.errstate(all="ignore"):
        return getattr(gdfast.ops, case.op)(arrays["param"], arrays["grad"], **states, **hyper)


def copy_arrays(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    return {k: v.copy() for k, v in arrays.items()}


def assert_bitwise(actual: Dict[str, Any], expected: Dict[str, Any], what: str = "") -> None:
    for name in expected:
        a, e = np.asarray(actual[name]), np.asarray(expected[name])
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what}{name}"
        if a.tobytes() != e.tobytes():
            bits = f"u{a.itemsize}"
            bad = np.flatnonzero(a.ravel().view(bits) != e.ravel().view(bits))
            raise AssertionError(f"{what}{name} differs at {bad[:8].tolist()} "
                                 f"({bad.size} of {a.size}): {a[bad[:4]]} vs {e[bad[:4]]}")


def without_nan_bits(arrays: Dict[str, np.ndarray]) -> Dict[str, np.ndarray]:
    """Every NaN as the one default NaN. gdfast promises NaN where NaN is due, not its sign
    and payload: where two NaNs meet in a commutative operation, which one propagates depends
    on the machine code, which differs between ISA levels and, within one level, between
    the unrolled loop body and the tail (RMSprop, centered, momentum, on baseline: a NaN
    momentum_buffer plus the default NaN of sqrt(v - g_avg^2 < 0) comes out 0x7fc00000 in
    the first 4 elements of 8 and 0xffc00000 in the others), so also with an element's
    position, the thread split and the list layout."""
    return {k: np.where(np.isnan(a), np.nan, a).astype(a.dtype) for k, a in arrays.items()}


class on_level:
    """Run under one ISA level and thread count, restoring both afterwards."""

    def __init__(self, isa: str, threads: int) -> None:
        self.isa, self.threads = isa, threads

    def __enter__(self) -> None:
        self._threads = gdfast.get_num_threads()
        self._isa = gdfast.isa_info()["active"]
        gdfast.set_isa(self.isa)
        gdfast.set_num_threads(self.threads)

    def __exit__(self, *exc: Any) -> None:
        gdfast.set_num_threads(self._threads)
        gdfast.set_isa(self._isa)


levels = st.tuples(st.sampled_from(SUPPORTED_ISAS), st.integers(1, 3))
seeds = st.integers(0, 2**32 - 1)


# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if not c.per_tensor], ids=str)
@PROPERTY_SETTINGS
@given(dtype=dtypes, n=SIZES, data=st.data(), seed=seeds, specials=st.booleans(), level=levels)
def test_prefix_update_equals_prefix_of_full_update(case: Case, dtype: Any, n: int, data: Any,
                                                    seed: int, specials: bool,
                                                    level: Tuple[str, int]) -> None:
    hyper = data.draw(hypers(case), label="hyper")
    k = data.draw(st.integers(0, n), label="k")
    full = make_arrays(case, hyper, n, dtype, seed, specials)
    prefix = {name: a[:k].copy() for name, a in full.items()}
    with on_level(*level):
        full_scalars = call(case, hyper, full)
        prefix_scalars = call(case, hyper, prefix)
    assert_bitwise(without_nan_bits(prefix),
                   without_nan_bits({name: a[:k] for name, a in full.items()}))
    assert prefix_scalars == full_scalars


@EVERY_CASE
@PROPERTY_SETTINGS
@given(dtype=dtypes, n=SIZES, data=st.data(), seed=seeds, specials=st.booleans(),
       offsets=st.lists(st.integers(0, 17), min_size=8, max_size=8), level=levels)
def test_result_does_not_depend_on_alignment(case: Case, dtype: Any, n: int, data: Any,
                                             seed: int, specials: bool, offsets: List[int],
                                             level: Tuple[str, int]) -> None:
    """Each array a view starting `offset` elements into a bigger buffer (so its address
    mod the vector width varies), against plain freshly allocated arrays."""
    hyper = data.draw(hypers(case), label="hyper")
    plain = make_arrays(case, hyper, n, dtype, seed, specials)
    shifted = {}
    for (name, a), off in zip(plain.items(), offsets):
        buf = np.full(n + off + 19, 7.0, dtype)
        view = buf[off:off + n]
        view[...] = a
        shifted[name] = (off, buf, view)
    with on_level(*level):
        call(case, hyper, plain)
        call(case, hyper, {name: view for name, (_, _, view) in shifted.items()})
    assert_bitwise(without_nan_bits({name: view for name, (_, _, view) in shifted.items()}),
                   without_nan_bits(plain))
    for name, (off, buf, _) in shifted.items():
        outside = np.concatenate([buf[:off], buf[off + n:]])
        assert np.all(outside == 7.0), f"{name}: wrote outside its view"


@EVERY_CASE
@PROPERTY_SETTINGS
@given(dtype=dtypes, n=SIZES, data=st.data(), seed=seeds, specials=st.booleans(),
       isa=st.sampled_from(SUPPORTED_ISAS), threads=st.integers(2, 4))
def test_thread_count_does_not_change_results(case: Case, dtype: Any, n: int, data: Any,
                                              seed: int, specials: bool, isa: str,
                                              threads: int) -> None:
    hyper = data.draw(hypers(case), label="hyper")
    reference = make_arrays(case, hyper, n, dtype, seed, specials)
    other = copy_arrays(reference)
    with on_level(isa, 1):
        call(case, hyper, reference)
    with on_level(isa, threads):
        call(case, hyper, other)
    assert_bitwise(without_nan_bits(other), without_nan_bits(reference), f"{threads} threads: ")


@EVERY_CASE
@PROPERTY_SETTINGS
@given(dtype=dtypes, n=SIZES, data=st.data(), seed=seeds, specials=st.booleans(),
       level=levels)
def test_isa_level_does_not_change_results(case: Case, dtype: Any, n: int, data: Any,
                                           seed: int, specials: bool,
                                           level: Tuple[str, int]) -> None:
    """Every ISA level gives the scalar level's bits, except that a NaN's sign and payload
    may differ (which of two NaN operands propagates depends on the instruction sequence:
    e.g. Adam with beta2=0, exp_avg_sq=inf, grad=nan gives 0x7fc00000 on scalar/baseline and
    0xffc00000 on avx2/avx512)."""
    hyper = data.draw(hypers(case), label="hyper")
    reference = make_arrays(case, hyper, n, dtype, seed, specials)
    other = copy_arrays(reference)
    with on_level("scalar", 1):
        call(case, hyper, reference)
    with on_level(*level):
        call(case, hyper, other)
    assert_bitwise(without_nan_bits(other), without_nan_bits(reference), f"{level}: ")


@EVERY_CASE
@PROPERTY_SETTINGS
@given(dtype=dtypes,
       sizes=st.lists(st.one_of(SMALL, SMALL, SMALL, st.integers(0, 40_000)), min_size=1,
                      max_size=6),
       data=st.data(), seed=seeds, specials=st.booleans(), level=levels)
def test_list_form_equals_one_call_per_tensor(case: Case, dtype: Any, sizes: List[int],
                                              data: Any, seed: int, specials: bool,
                                              level: Tuple[str, int]) -> None:
    hyper = data.draw(hypers(case), label="hyper")
    tensors = [make_arrays(case, hyper, n, dtype, seed + i, specials)
               for i, n in enumerate(sizes)]
    one_by_one = [copy_arrays(t) for t in tensors]
    with on_level(*level):
        together = call(case, hyper, {name: [t[name] for t in tensors] for name in tensors[0]})
        apart = [call(case, hyper, t) for t in one_by_one]
    for i, (t, e) in enumerate(zip(tensors, one_by_one)):
        assert_bitwise(without_nan_bits(t), without_nan_bits(e), f"tensor {i}: ")
    assert all(scalars == together for scalars in apart), "scalar states"


@EVERY_CASE
@PROPERTY_SETTINGS
@given(dtype=dtypes, n=SIZES, data=st.data(), seed=seeds, level=levels,
       other_lr=st.floats(1e-4, 1.0))
def test_lr_enters_as_the_rule_says(case: Case, dtype: Any, n: int, data: Any, seed: int,
                                    level: Tuple[str, int], other_lr: float) -> None:
    """"scales": with lr=0 and weight_decay=0 the param is bitwise unchanged (finite data
    without zeros, see test_lr_zero_keeps_the_value_of_signed_zeros, and a finite update
    direction: lr * inf is NaN), and the states are
    exactly what the same call with another lr leaves (they do not depend on lr). "eta"
    (ASGD): given eta, the step does not depend on lr at all (lr only sets the next eta);
    with eta from lr = 0 the param is unchanged. "start" (Rprop): the step does not depend
    on lr at all (it only sets where a new step_size starts)."""
    hyper = dict(data.draw(hypers(case), label="hyper"), lr=0.0)
    if "weight_decay" in hyper:
        hyper["weight_decay"] = 0.0
    if case.lr_role == "eta":
        hyper["eta"] = data.draw(st.one_of(st.none(), st.floats(1e-4, 1.0)), label="eta")
    if case.lr_role == "averaged":  # no lr seen yet: the average's weight is 0
        hyper.update(lr_max=-1.0, weight_lr_power=2.0)
    arrays = make_arrays(case, hyper, n, dtype, seed)
    assume(all(np.all(a != 0) for a in arrays.values()))
    before = copy_arrays(arrays)
    with_lr = copy_arrays(arrays)
    with on_level(*level):
        call(case, hyper, arrays)
        call(case, dict(hyper, lr=other_lr), with_lr)
    assert_bitwise({"grad": arrays["grad"]}, {"grad": before["grad"]})
    lr_free = case.lr_role == "start" or (case.lr_role == "eta" and hyper["eta"] is not None)
    if lr_free:
        assert_bitwise(arrays, with_lr, "lr changed the step: ")
        return
    # lr * direction is 0 only for a finite direction (eps = 0 can make it 0/0 or x/0)
    assume(np.all(np.isfinite(with_lr["param"])))
    assert_bitwise({"param": arrays["param"]}, {"param": before["param"]})
    if case.lr_role == "scales":
        states = [name for name in arrays if name not in ("param", "grad")]
        assert_bitwise({s: arrays[s] for s in states}, {s: with_lr[s] for s in states})


@pytest.mark.parametrize("case", [c for c in CASES if c.lr_role in ("scales", "eta")], ids=str)
def test_lr_zero_keeps_the_value_of_signed_zeros(case: Case) -> None:
    """A zero param stays zero under lr=0, but -0.0 may come out as +0.0 when the update
    direction is negative (-0.0 + +0.0 is +0.0 in IEEE arithmetic; torch's p.add_(u,
    alpha=-0.0) does the same). Only the value is promised here."""
    p = np.array([-0.0, -0.0, -0.0, 0.0, 0.0, 0.0], np.float32)
    g = np.array([-1.0, 1.0, 0.0, -1.0, 1.0, 0.0], np.float32)
    hyper = case.full({"lr": 0.0})
    states = {name: np.full_like(p, case.start(name, hyper))
              for name in case.state_names(hyper)}
    step = {} if case.step == "none" else {"step": 1}
    inputs = {name: g for name in case.extra_inputs}
    getattr(gdfast.ops, case.op)(p, g, **inputs, **states, **step, lr=0.0)
    assert np.all(p == 0.0)


# --------------------------------------------------------------------------------------------
# Rejected calls leave every array unchanged
# --------------------------------------------------------------------------------------------


def _corrupt_dtype(a: np.ndarray, rng: Any) -> Any:
    options = [np.int16, np.int32, np.complex64, ">f4", ">f8"]
    return a.astype(options[rng.integers(len(options))])


def _corrupt_other_float(a: np.ndarray, rng: Any) -> Any:
    return a.astype(np.float64 if a.dtype == np.float32 else np.float32)


def _corrupt_shape(a: np.ndarray, rng: Any) -> Any:
    return np.ones(a.size + 1, a.dtype)


def _corrupt_strided(a: np.ndarray, rng: Any) -> Any:
    out = np.zeros(2 * a.size + 2, a.dtype)[::2][:a.size]  # size >= 2 ensured by caller
    out[...] = a
    return out


def _corrupt_read_only(a: np.ndarray, rng: Any) -> Any:
    out = a.copy()
    out.flags.writeable = False
    return out


def _corrupt_misaligned(a: np.ndarray, rng: Any) -> Any:
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1)
    out[...] = a
    return out


def _corrupt_not_array(a: np.ndarray, rng: Any) -> Any:
    return a.tolist()


CORRUPTIONS = {
    "dtype": (_corrupt_dtype, "any"),
    "other-float": (_corrupt_other_float, "any"),
    "shape": (_corrupt_shape, "any"),
    "strided": (_corrupt_strided, "any"),
    "misaligned": (_corrupt_misaligned, "any"),
    "not-an-array": (_corrupt_not_array, "any"),
    "read-only": (_corrupt_read_only, "written"),
    "alias-grad": (None, "written"),  # the entry becomes the same tensor's grad
    "alias-previous": (None, "written"),  # the entry becomes a view of another tensor's param
}

def bad_hypers(case: Case) -> List[Tuple[Dict[str, Any], str]]:
    """(overrides, the name the message starts with): a value out of each hyperparameter's
    registry range (and step's), and the combinations the rule rejects (cases.Case.invalid)."""
    rule = RULES[case.name]
    out: List[Tuple[Dict[str, Any], str]] = []
    if rule.step != "none":
        out += [({"step": 0}, "step"), ({"step": 2.5}, "step"), ({"step": -2}, "step")]
    for f in rule.options:
        if f.kind != "real":
            continue
        out.append(({f.name: float("nan")}, f.name))
        if math.isfinite(f.range.lo):
            out.append(({f.name: f.range.lo - 0.5}, f.name))
        if math.isfinite(f.range.hi):
            out.append(({f.name: f.range.hi + 0.5}, f.name))
        out.append(({f.name: float("inf")}, f.name))
    for values, message in case.invalid:
        out.append((dict(values), message.split(":")[0]))
    return out


@EVERY_CASE
@PROPERTY_SETTINGS
@given(dtype=dtypes, sizes=st.lists(st.integers(2, 60), min_size=1, max_size=5), seed=seeds,
       corruption=st.sampled_from(sorted(CORRUPTIONS) + ["hyper"]), data=st.data())
def test_rejected_calls_leave_arrays_unchanged(case: Case, dtype: Any, sizes: List[int],
                                               seed: int, corruption: str, data: Any) -> None:
    hyper = data.draw(hypers(case), label="hyper")
    rng = np.random.default_rng(seed)
    tensors = [make_arrays(case, hyper, n, dtype, seed + i) for i, n in enumerate(sizes)]
    names = list(tensors[0])
    t = data.draw(st.integers(0, len(sizes) - 1), label="tensor")
    if corruption == "hyper":
        overrides, first = data.draw(st.sampled_from(bad_hypers(case)), label="bad")
        hyper = dict(hyper, **overrides)
        expected_names = [first]
    else:
        make, applies = CORRUPTIONS[corruption]
        candidates = [n for n in names
                      if applies == "any" or n not in ("grad", *case.extra_inputs)]
        name = data.draw(st.sampled_from(candidates), label="argument")
        good = tensors[t][name]
        if corruption == "alias-grad":
            bad: Any = tensors[t]["grad"]
        elif corruption == "alias-previous":
            assume(len(sizes) > 1)
            other = (t + 1) % len(sizes)
            # a view into the other tensor's param (a shape error if that one is too short)
            bad = tensors[other]["param"][:sizes[t]]
        else:
            bad = make(good, rng)
        tensors[t][name] = bad
        expected_names = [name, "grad", "param"]  # aliasing messages name both arrays

    snapshot = [(a, a.tobytes()) for tensor in tensors for a in tensor.values()
                if isinstance(a, np.ndarray)]
    as_list = data.draw(st.booleans(), label="list form") or len(sizes) > 1
    arguments = ({name: [tensor[name] for tensor in tensors] for name in names} if as_list
                 else tensors[0])
    with pytest.raises((TypeError, ValueError)) as info:
        call(case, hyper, arguments)
    message = str(info.value)
    assert any(message.startswith(n) for n in expected_names) or " and " in message, message
    assert all(a.tobytes() == saved for a, saved in snapshot), "a rejected call wrote"
