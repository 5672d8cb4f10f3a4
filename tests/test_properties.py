"""Properties of gdfast.ops, checked with hypothesis over optimizers, options, dtypes, sizes,
ISA levels and thread counts:

* the update of a prefix equals the prefix of the full update (bitwise);
* the result at an index depends neither on where the arrays start (offset views into a
  bigger buffer) nor on the thread count (bitwise), nor on the ISA level (bitwise up to
  NaN sign and payload);
* a list-form call equals one call per tensor (bitwise);
* lr=0 with weight_decay=0 leaves param unchanged while the states still update;
* a rejected call leaves every array unchanged (bitwise).

Arrays come from a NumPy generator seeded by hypothesis (shrinking still works on sizes,
offsets and options); some examples salt them with special values (0, -0, subnormals, huge,
inf, nan) that must flow through bit-identically too.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import gdfast
from gdfast import ops

SUPPORTED_ISAS = gdfast.isa_info()["supported"]
PROPERTY_SETTINGS = settings(max_examples=50, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])

# A thread gets at least 2**14 elements, so only sizes past 2 * 2**14 exercise the split.
SMALL = st.integers(0, 70)
LARGE = st.integers(33_000, 70_000)
SIZES = st.one_of(SMALL, SMALL, SMALL, LARGE)

SPECIALS = np.array([0.0, -0.0, 1e-40, -1e-40, 5e-324, 3e38, -3e38, np.inf, -np.inf, np.nan])

unit = st.floats(0.0, 1.0, allow_nan=False)
lr_values = st.one_of(st.just(0.0), st.floats(1e-6, 1.0), st.sampled_from([1e-3, 0.1]))
wd_values = st.one_of(st.just(0.0), st.floats(0.0, 0.5))


@dataclass(frozen=True)
class Op:
    name: str
    fn: Callable[..., None]
    states: Tuple[str, ...]

    @property
    def tensors(self) -> Tuple[str, ...]:
        return ("param", "grad") + self.states

    @property
    def written(self) -> Tuple[str, ...]:
        return ("param",) + self.states


SGD = Op("sgd", ops.sgd_, ("momentum_buffer",))
ADAM = Op("adam", ops.adam_, ("exp_avg", "exp_avg_sq", "max_exp_avg_sq"))
LION = Op("lion", ops.lion_, ("exp_avg",))


@st.composite
def sgd_hyper(draw: Any) -> Dict[str, Any]:
    momentum = draw(st.one_of(st.just(0.0), unit, st.sampled_from([0.9, 0.99])))
    dampening = draw(st.one_of(st.just(0.0), unit))
    nesterov = momentum > 0 and dampening == 0 and draw(st.booleans())
    return dict(step=draw(st.integers(1, 3)), lr=draw(lr_values), momentum=momentum,
                dampening=dampening, nesterov=nesterov, weight_decay=draw(wd_values),
                maximize=draw(st.booleans()))


@st.composite
def adam_hyper(draw: Any) -> Dict[str, Any]:
    return dict(step=draw(st.one_of(st.integers(1, 20), st.integers(1, 10**7))),
                lr=draw(lr_values), beta1=draw(st.floats(0.0, 0.999)),
                beta2=draw(st.floats(0.0, 0.99999)),
                eps=draw(st.sampled_from([1e-8, 1e-12, 1e-3, 1e-30])),
                weight_decay=draw(wd_values), decoupled_weight_decay=draw(st.booleans()),
                amsgrad=draw(st.booleans()), maximize=draw(st.booleans()))


@st.composite
def lion_hyper(draw: Any) -> Dict[str, Any]:
    return dict(lr=draw(lr_values), beta1=draw(unit), beta2=draw(unit),
                weight_decay=draw(wd_values), maximize=draw(st.booleans()))


OP_HYPERS = [(SGD, sgd_hyper()), (ADAM, adam_hyper()), (LION, lion_hyper())]
op_and_hyper = st.one_of(*[st.tuples(st.just(op), h) for op, h in OP_HYPERS])
dtypes = st.sampled_from([np.float32, np.float64])


def active_tensors(op: Op, hyper: Dict[str, Any]) -> Tuple[str, ...]:
    """The tensor arguments this call uses (momentum_buffer / max_exp_avg_sq are options)."""
    if op is SGD and hyper["momentum"] == 0:
        return ("param", "grad")
    if op is ADAM and not hyper["amsgrad"]:
        return ("param", "grad", "exp_avg", "exp_avg_sq")
    return op.tensors


def make_values(rng: np.random.Generator, name: str, n: int, dtype: Any,
                specials: bool) -> np.ndarray:
    x = rng.standard_normal(n) * (2.0 ** rng.integers(-4, 4))
    if name in ("exp_avg_sq", "max_exp_avg_sq"):
        x = np.abs(x) * 0.1
    if specials and n:
        where = rng.integers(0, n, size=max(1, n // 8))
        x[where] = rng.choice(SPECIALS, size=where.size)
        if name in ("exp_avg_sq", "max_exp_avg_sq"):
            x = np.abs(x)
    with np.errstate(over="ignore"):
        return x.astype(dtype)


def make_arrays(op: Op, hyper: Dict[str, Any], n: int, dtype: Any, seed: int,
                specials: bool = False) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {name: make_values(rng, name, n, dtype, specials)
            for name in active_tensors(op, hyper)}


def call(op: Op, hyper: Dict[str, Any], arrays: Dict[str, Any]) -> None:
    kwargs = dict(hyper)
    # The optional state goes in whenever it was made, so that a call whose hyperparameters
    # were corrupted after the arrays were made (momentum 0 -> -1) still reaches the op.
    if op is ADAM:
        kwargs["max_exp_avg_sq"] = arrays.get("max_exp_avg_sq")
        tensors = [arrays[k] for k in ("param", "grad", "exp_avg", "exp_avg_sq")]
    elif op is SGD:
        tensors = [arrays["param"], arrays["grad"], arrays.get("momentum_buffer")]
    else:
        tensors = [arrays[k] for k in op.tensors]
    with np.errstate(all="ignore"):
        op.fn(*tensors, **kwargs)


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


@PROPERTY_SETTINGS
@given(oh=op_and_hyper, dtype=dtypes, n=SIZES, data=st.data(), seed=seeds,
       specials=st.booleans(), level=levels)
def test_prefix_update_equals_prefix_of_full_update(oh: Any, dtype: Any, n: int, data: Any,
                                                    seed: int, specials: bool,
                                                    level: Tuple[str, int]) -> None:
    op, hyper = oh
    k = data.draw(st.integers(0, n), label="k")
    full = make_arrays(op, hyper, n, dtype, seed, specials)
    prefix = {name: a[:k].copy() for name, a in full.items()}
    with on_level(*level):
        call(op, hyper, full)
        call(op, hyper, prefix)
    assert_bitwise(prefix, {name: a[:k] for name, a in full.items()})


@PROPERTY_SETTINGS
@given(oh=op_and_hyper, dtype=dtypes, n=SIZES, seed=seeds, specials=st.booleans(),
       offsets=st.lists(st.integers(0, 17), min_size=5, max_size=5), level=levels)
def test_result_does_not_depend_on_alignment(oh: Any, dtype: Any, n: int, seed: int,
                                             specials: bool, offsets: List[int],
                                             level: Tuple[str, int]) -> None:
    """Each array a view starting `offset` elements into a bigger buffer (so its address
    mod the vector width varies), against plain freshly allocated arrays."""
    op, hyper = oh
    plain = make_arrays(op, hyper, n, dtype, seed, specials)
    shifted = {}
    for (name, a), off in zip(plain.items(), offsets):
        buf = np.full(n + off + 19, 7.0, dtype)
        view = buf[off:off + n]
        view[...] = a
        shifted[name] = (buf, view)
    with on_level(*level):
        call(op, hyper, plain)
        call(op, hyper, {name: view for name, (_, view) in shifted.items()})
    assert_bitwise({name: view for name, (_, view) in shifted.items()}, plain)
    for name, (buf, _) in shifted.items():
        off = offsets[list(shifted).index(name)]
        outside = np.concatenate([buf[:off], buf[off + n:]])
        assert np.all(outside == 7.0), f"{name}: wrote outside its view"


@PROPERTY_SETTINGS
@given(oh=op_and_hyper, dtype=dtypes, n=SIZES, seed=seeds, specials=st.booleans(),
       isa=st.sampled_from(SUPPORTED_ISAS), threads=st.integers(2, 4))
def test_thread_count_does_not_change_results(oh: Any, dtype: Any, n: int, seed: int,
                                              specials: bool, isa: str, threads: int) -> None:
    op, hyper = oh
    reference = make_arrays(op, hyper, n, dtype, seed, specials)
    other = copy_arrays(reference)
    with on_level(isa, 1):
        call(op, hyper, reference)
    with on_level(isa, threads):
        call(op, hyper, other)
    assert_bitwise(other, reference, f"{threads} threads: ")


@PROPERTY_SETTINGS
@given(oh=op_and_hyper, dtype=dtypes, n=SIZES, seed=seeds, specials=st.booleans(),
       level=levels)
def test_isa_level_does_not_change_results(oh: Any, dtype: Any, n: int, seed: int,
                                           specials: bool, level: Tuple[str, int]) -> None:
    """Every ISA level gives the scalar level's bits, except that a NaN's sign and payload
    may differ (which of two NaN operands propagates depends on the instruction sequence:
    e.g. Adam with beta2=0, exp_avg_sq=inf, grad=nan gives 0x7fc00000 on scalar/baseline and
    0xffc00000 on avx2/avx512)."""
    op, hyper = oh
    reference = make_arrays(op, hyper, n, dtype, seed, specials)
    other = copy_arrays(reference)
    with on_level("scalar", 1):
        call(op, hyper, reference)
    with on_level(*level):
        call(op, hyper, other)
    for name in reference:
        a, e = other[name], reference[name]
        assert_bitwise({name: np.where(np.isnan(a), np.nan, a)},
                       {name: np.where(np.isnan(e), np.nan, e)}, f"{level}: ")


@PROPERTY_SETTINGS
@given(oh=op_and_hyper, dtype=dtypes,
       sizes=st.lists(st.one_of(SMALL, SMALL, SMALL, st.integers(0, 40_000)), min_size=1,
                      max_size=6),
       seed=seeds, specials=st.booleans(), level=levels)
def test_list_form_equals_one_call_per_tensor(oh: Any, dtype: Any, sizes: List[int],
                                              seed: int, specials: bool,
                                              level: Tuple[str, int]) -> None:
    op, hyper = oh
    tensors = [make_arrays(op, hyper, n, dtype, seed + i, specials)
               for i, n in enumerate(sizes)]
    one_by_one = [copy_arrays(t) for t in tensors]
    with on_level(*level):
        call(op, hyper, {name: [t[name] for t in tensors] for name in tensors[0]})
        for t in one_by_one:
            call(op, hyper, t)
    for i, (t, e) in enumerate(zip(tensors, one_by_one)):
        assert_bitwise(t, e, f"tensor {i}: ")


@PROPERTY_SETTINGS
@given(oh=op_and_hyper, dtype=dtypes, n=SIZES, seed=seeds, level=levels,
       other_lr=st.floats(1e-4, 1.0))
def test_lr_zero_leaves_param_unchanged_and_updates_states(oh: Any, dtype: Any, n: int,
                                                           seed: int, level: Tuple[str, int],
                                                           other_lr: float) -> None:
    """With lr=0 and weight_decay=0 the param is bitwise unchanged (finite data without
    zeros: see test_lr_zero_keeps_the_value_of_signed_zeros), and the states are exactly
    what the same call with another lr leaves (they do not depend on lr)."""
    op, hyper = oh
    hyper = dict(hyper, lr=0.0, weight_decay=0.0)
    arrays = make_arrays(op, hyper, n, dtype, seed)
    assume(all(np.all(a != 0) for a in arrays.values()))
    before = copy_arrays(arrays)
    with_lr = copy_arrays(arrays)
    with on_level(*level):
        call(op, hyper, arrays)
        call(op, dict(hyper, lr=other_lr), with_lr)
    assert_bitwise({"param": arrays["param"]}, {"param": before["param"]})
    assert_bitwise({"grad": arrays["grad"]}, {"grad": before["grad"]})
    states = [name for name in arrays if name not in ("param", "grad")]
    assert_bitwise({s: arrays[s] for s in states}, {s: with_lr[s] for s in states})


@pytest.mark.parametrize("op_name", ["sgd", "adam", "lion"])
def test_lr_zero_keeps_the_value_of_signed_zeros(op_name: str) -> None:
    """A zero param stays zero under lr=0, but -0.0 may come out as +0.0 when the update
    direction is negative (-0.0 + +0.0 is +0.0 in IEEE arithmetic; torch's p.add_(u,
    alpha=-0.0) does the same). Only the value is promised here."""
    p = np.array([-0.0, -0.0, -0.0, 0.0, 0.0, 0.0], np.float32)
    g = np.array([-1.0, 1.0, 0.0, -1.0, 1.0, 0.0], np.float32)
    m = np.zeros_like(p)
    if op_name == "sgd":
        ops.sgd_(p, g, step=1, lr=0.0)
    elif op_name == "adam":
        ops.adam_(p, g, m, np.zeros_like(p), step=1, lr=0.0)
    else:
        ops.lion_(p, g, m, lr=0.0)
    assert np.all(p == 0.0)


# --------------------------------------------------------------------------------------------
# Rejected calls leave every array unchanged
# --------------------------------------------------------------------------------------------


def _corrupt_dtype(a: np.ndarray, rng: Any) -> Any:
    options = [np.float16, np.int32, np.complex64, ">f4", ">f8"]
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

BAD_HYPER = {
    "sgd": [("lr", -0.5), ("lr", float("nan")), ("momentum", -1.0), ("dampening", 2.0),
            ("weight_decay", float("inf")), ("step", 0), ("step", 1.0)],
    "adam": [("lr", float("inf")), ("beta1", 1.0), ("beta2", -0.5), ("eps", 0.0),
             ("weight_decay", -1.0), ("step", -2), ("step", 2.5)],
    "lion": [("lr", -1e-9), ("beta1", 1.5), ("beta2", float("nan")), ("weight_decay", -0.1)],
}


@PROPERTY_SETTINGS
@given(oh=op_and_hyper, dtype=dtypes,
       sizes=st.lists(st.integers(2, 60), min_size=1, max_size=5), seed=seeds,
       corruption=st.sampled_from(sorted(CORRUPTIONS) + ["hyper"]), data=st.data())
def test_rejected_calls_leave_arrays_unchanged(oh: Any, dtype: Any, sizes: List[int],
                                               seed: int, corruption: str, data: Any) -> None:
    op, hyper = oh
    rng = np.random.default_rng(seed)
    tensors = [make_arrays(op, hyper, n, dtype, seed + i) for i, n in enumerate(sizes)]
    names = list(tensors[0])
    t = data.draw(st.integers(0, len(sizes) - 1), label="tensor")
    if corruption == "hyper":
        name, value = data.draw(st.sampled_from(BAD_HYPER[op.name]), label="hyper")
        hyper = dict(hyper, **{name: value})
        expected_names = [name]
    else:
        make, applies = CORRUPTIONS[corruption]
        candidates = [n for n in names if applies == "any" or n != "grad"]
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
        call(op, hyper, arguments)
    message = str(info.value)
    assert any(message.startswith(n) for n in expected_names) or " and " in message, message
    assert all(a.tobytes() == saved for a, saved in snapshot), "a rejected call wrote"
