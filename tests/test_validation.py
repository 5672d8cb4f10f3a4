"""Bad input to gdfast.ops gets a clear Python exception, and leaves every array untouched.

Every rejected call below is made on freshly built arrays whose bytes are snapshotted first
and compared bitwise afterwards: all arrays of the call (params, grads and states of every
tensor in a list, the bad one included) must be exactly as they were. In the list form the
bad entry is always the LAST one, so "nothing written" also covers the earlier, valid entries
that a kernel would otherwise have updated first.

Every optimizer of cases.py is checked, through its checked call (``Case.checked``: every
state in use, every element of every written array changed); hyperparameter ranges, the
states an option needs (and the message naming that option) come from the registry.

Each message must start with the argument's name (``"exp_avg[3]: ..."``) and say what is
wrong. Tests that pin a known library defect are marked ``xfail(strict=True)`` with the
defect in the reason: they start failing (XPASS) once it is fixed, and the marker goes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np
import pytest

import gdfast
from gdfast import ops
from gdfast._spec import RULES, Range

from cases import CASES, Case

# Shapes of the tensors of a list-form call (2-D with no unit dimension, so a transpose or a
# Fortran-ordered copy is really non-contiguous), and of a single-array call.
LIST_SHAPES = [(3, 5), (4, 7), (2, 3), (5, 2)]
SINGLE_SHAPE = (4, 6)
LAST = len(LIST_SHAPES) - 1
FORMS = ["single", "list"]


@dataclass(frozen=True)
class Op:
    """A case's op with its checked call (cases.Case.checked): every state of the rule in use
    and every element of every written array changed by a valid call."""

    case: Case
    fn: Callable[..., Any]
    tensors: Tuple[str, ...]  # keyword names of the tensor arguments, param and grad first
    hyper: Mapping[str, Any]  # a valid call's keyword arguments
    ranges: Mapping[str, Tuple[float, float]]  # uniform ranges of some arrays (others N(0.5, 1))

    @property
    def name(self) -> str:
        return self.case.name

    @property
    def inputs(self) -> Tuple[str, ...]:
        """The read-only arrays: the gradient and the rule's other inputs."""
        return ("grad", *self.case.extra_inputs)

    @property
    def written(self) -> Tuple[str, ...]:
        return tuple(name for name in self.tensors if name not in self.inputs)

    @property
    def states(self) -> Tuple[str, ...]:
        return self.tensors[len(self.inputs) + 1:]


OPS = {case.name: Op(case, getattr(ops, case.op),
                     case.tensor_names(case.checked), dict(case.checked),
                     dict(case.checked_ranges))
       for case in CASES}
OP_NAMES = list(OPS)


def _array(op: Op, rng: np.random.Generator, name: str, shape: Tuple[int, ...],
           dtype: Any) -> np.ndarray:
    if name in op.ranges:
        x = rng.uniform(*op.ranges[name], size=shape)
    else:
        x = rng.standard_normal(shape) + 0.5
    return np.ascontiguousarray(x, dtype=dtype)


def make_tensors(op: Op, form: str, dtype: Any = np.float32, seed: int = 0) -> Dict[str, Any]:
    """A valid set of tensor arguments: one array per name, or a list of len(LIST_SHAPES)."""
    rng = np.random.default_rng(seed)
    if form == "single":
        return {name: _array(op, rng, name, SINGLE_SHAPE, dtype) for name in op.tensors}
    return {name: [_array(op, rng, name, s, dtype) for s in LIST_SHAPES] for name in op.tensors}


def call(op: Op, tensors: Dict[str, Any], **overrides: Any) -> None:
    op.fn(**tensors, **{**op.hyper, **overrides})


def arrays_in(obj: Any) -> List[np.ndarray]:
    """Every ndarray in a call's arguments (dict values, lists, tuples), in order."""
    if isinstance(obj, np.ndarray):
        return [obj]
    if isinstance(obj, dict):
        return [a for v in obj.values() for a in arrays_in(v)]
    if isinstance(obj, (list, tuple)):
        return [a for v in obj for a in arrays_in(v)]
    return []


class Snapshot:
    """The bytes of every array of a call, to check bitwise that nothing was written."""

    def __init__(self, tensors: Dict[str, Any]) -> None:
        self.items = [(a, a.tobytes()) for a in arrays_in(tensors)]
        assert self.items, "nothing to snapshot"

    def assert_untouched(self) -> None:
        changed = [i for i, (a, saved) in enumerate(self.items) if a.tobytes() != saved]
        assert not changed, f"rejected call wrote to array(s) #{changed} of the call"


def who(name: str, form: str, index: int = LAST) -> str:
    """How a message names an argument: ``exp_avg`` or ``exp_avg[3]``."""
    return name if form == "single" else f"{name}[{index}]"


def starts_with(name: str) -> str:
    """Regex: the message starts with ``name: ``."""
    return "^" + re.escape(name) + ": "


def share_regex(a: str, b: str) -> str:
    """Regex for the aliasing message naming both arrays (in either order)."""
    a, b = re.escape(a), re.escape(b)
    return f"^({a} and {b}|{b} and {a}) share memory"


def replace_entry(tensors: Dict[str, Any], name: str, form: str, value: Any) -> Dict[str, Any]:
    """A copy of the argument dict with `name` (its last entry, in the list form) replaced."""
    out = dict(tensors)
    if form == "single":
        out[name] = value
    else:
        out[name] = list(tensors[name])
        out[name][LAST] = value
    return out


def entry(tensors: Dict[str, Any], name: str, form: str) -> np.ndarray:
    return tensors[name] if form == "single" else tensors[name][LAST]


def expect_rejected(op: Op, tensors: Dict[str, Any], exc: Any, match: str,
                    **overrides: Any) -> None:
    snap = Snapshot(tensors)
    with pytest.raises(exc, match=match):
        call(op, tensors, **overrides)
    snap.assert_untouched()



# --------------------------------------------------------------------------------------------
# The valid base call really writes, so 'untouched' below is not vacuous
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("op_name", OP_NAMES)
def test_valid_call_writes_every_written_array(op_name: str, form: str) -> None:
    op = OPS[op_name]
    tensors = make_tensors(op, form)
    before = {name: [a.copy() for a in arrays_in(tensors[name])] for name in op.tensors}
    call(op, tensors)
    for name in op.tensors:
        for old, new in zip(before[name], arrays_in(tensors[name])):
            if name in op.inputs:
                assert np.array_equal(old, new), f"{name} was written"
            else:
                assert np.all(old != new), f"{name} was not updated everywhere"


# --------------------------------------------------------------------------------------------
# One bad array (the last entry, in the list form)
# --------------------------------------------------------------------------------------------


def _misaligned(a: np.ndarray) -> np.ndarray:
    """A writeable copy of `a` whose data starts one byte past an aligned address."""
    buf = bytearray(a.nbytes + 1)
    out = np.frombuffer(buf, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
    out[...] = a
    assert not out.flags.aligned and out.flags.c_contiguous and out.flags.writeable
    return out


def _strided(a: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], 2 * a.shape[1]), a.dtype)[:, ::2]
    out[...] = a
    return out


def _transposed(a: np.ndarray) -> np.ndarray:
    out = np.ascontiguousarray(a.T).T
    assert out.shape == a.shape and not out.flags.c_contiguous
    return out


def _read_only(a: np.ndarray) -> np.ndarray:
    out = a.copy()
    out.flags.writeable = False
    return out


def _big_endian(a: np.ndarray) -> np.ndarray:
    return a.astype(a.dtype.newbyteorder(">"))


# "expected a numpy.ndarray or a DLPack tensor (torch.Tensor, ...), got <type>"
NOT_AN_ARRAY = r"expected a numpy\.ndarray\b.*, got "
MISALIGNED = "must be (C-contiguous and )?aligned to its element size"

NOT_A_FLOAT = r"expected float32, float64, bfloat16 or float16 \(native byte order\), got "
# id -> (make the bad value from the good array, exception, regex after the name, which
# arguments it applies to: "all", "written" or "read")
ENTRY_CASES: Dict[str, Tuple[Callable[[np.ndarray], Any], Any, str, str]] = {
    "list-of-ints": (lambda a: [1, 2, 3], TypeError, NOT_AN_ARRAY + "list", "all"),
    "int": (lambda a: 3, TypeError, NOT_AN_ARRAY + "int", "all"),
    "int16": (lambda a: a.astype(np.int16), TypeError, NOT_A_FLOAT + "int16", "all"),
    "int32": (lambda a: a.astype(np.int32), TypeError, NOT_A_FLOAT + "int32", "all"),
    "int64": (lambda a: a.astype(np.int64), TypeError, NOT_A_FLOAT + "int64", "all"),
    "complex64": (lambda a: a.astype(np.complex64), TypeError, NOT_A_FLOAT + "complex64", "all"),
    "big-endian-f4": (_big_endian, TypeError, NOT_A_FLOAT + ">f4", "all"),
    "object": (lambda a: a.astype(object), TypeError, NOT_A_FLOAT + "object", "all"),
    "strided-slice": (_strided, ValueError, "must be C-contiguous", "all"),
    "transposed": (_transposed, ValueError, "must be C-contiguous", "all"),
    "fortran-order": (np.asfortranarray, ValueError, "must be C-contiguous", "all"),
    "misaligned": (_misaligned, ValueError, MISALIGNED, "all"),
    "read-only": (_read_only, ValueError, "is read-only, but it is updated in place",
                  "written"),
}


def _entry_params() -> List[Any]:
    params = []
    for op_name, op in OPS.items():
        for form in FORMS:
            for name in op.tensors:
                for case, (_, _, _, applies) in ENTRY_CASES.items():
                    if applies == "written" and name in op.inputs:
                        continue
                    if form == "single" and name == "param" and case == "list-of-ints":
                        continue  # see test_list_param_with_array_states_blames_param
                    params.append(pytest.param(op_name, form, name, case,
                                               id=f"{op_name}-{form}-{name}-{case}"))
    return params


@pytest.mark.parametrize(("op_name", "form", "name", "case"), _entry_params())
def test_bad_array_is_rejected_and_nothing_is_written(op_name: str, form: str, name: str,
                                                      case: str) -> None:
    op = OPS[op_name]
    make_bad, exc, what, _ = ENTRY_CASES[case]
    tensors = make_tensors(op, form)
    tensors = replace_entry(tensors, name, form, make_bad(entry(tensors, name, form)))
    expect_rejected(op, tensors, exc, starts_with(who(name, form)) + what)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("op_name", OP_NAMES)
def test_none_in_a_list_is_rejected(op_name: str, form: str) -> None:
    """None for one tensor of a list (the single form's None is tested per argument below)."""
    op = OPS[op_name]
    for name in op.tensors:
        tensors = make_tensors(op, "list")
        tensors = replace_entry(tensors, name, "list", None)
        expect_rejected(op, tensors, TypeError,
                        starts_with(who(name, "list")) + NOT_AN_ARRAY + "NoneType")


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_none_grad_is_rejected(op_name: str) -> None:
    op = OPS[op_name]
    tensors = replace_entry(make_tensors(op, "single"), "grad", "single", None)
    expect_rejected(op, tensors, TypeError, r"^grad: " + NOT_AN_ARRAY + "NoneType")


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_none_param_is_rejected(op_name: str) -> None:
    op = OPS[op_name]
    tensors = replace_entry(make_tensors(op, "single"), "param", "single", None)
    expect_rejected(op, tensors, TypeError, r"^param: " + NOT_AN_ARRAY + "NoneType")


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_misaligned_message_advice_works(op_name: str) -> None:
    """Following the message's advice (numpy.require(a, requirements='CA')) must give an
    accepted array."""
    op = OPS[op_name]
    tensors = make_tensors(op, "single")
    tensors["param"] = _misaligned(tensors["param"])
    with pytest.raises(ValueError, match=r"numpy\.require\(a, requirements='CA'\)"):
        call(op, tensors)
    tensors["param"] = np.require(tensors["param"], requirements="CA")
    call(op, tensors)


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("op_name", OP_NAMES)
def test_read_only_grad_is_accepted(op_name: str, form: str) -> None:
    op = OPS[op_name]
    expected = make_tensors(op, form)
    call(op, expected)
    tensors = make_tensors(op, form)
    grads = arrays_in(tensors["grad"])
    saved = [g.copy() for g in grads]
    for g in grads:
        g.flags.writeable = False
    call(op, tensors)
    for name in op.tensors:
        for a, b in zip(arrays_in(tensors[name]), arrays_in(expected[name])):
            assert a.tobytes() == b.tobytes(), name
    assert all(g.tobytes() == s.tobytes() for g, s in zip(grads, saved))


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_read_only_grad_from_bytes_is_accepted(op_name: str) -> None:
    """A grad that NumPy wraps around immutable memory (np.frombuffer on bytes)."""
    op = OPS[op_name]
    tensors = make_tensors(op, "single")
    g = tensors["grad"]
    tensors["grad"] = np.frombuffer(g.tobytes(), dtype=g.dtype).reshape(g.shape)
    assert not tensors["grad"].flags.writeable
    expected = make_tensors(op, "single")
    call(op, expected)
    call(op, tensors)
    assert tensors["param"].tobytes() == expected["param"].tobytes()


# --------------------------------------------------------------------------------------------
# Mixed dtypes and shapes: the message names the first array that disagrees with param
# --------------------------------------------------------------------------------------------


def _mismatch_params() -> List[Any]:
    return [pytest.param(op_name, form, name, id=f"{op_name}-{form}-{name}")
            for op_name, op in OPS.items() for form in FORMS for name in op.tensors]


@pytest.mark.parametrize(("base", "other"), [(np.float32, np.float64), (np.float64, np.float32)],
                         ids=["float32-call-one-float64", "float64-call-one-float32"])
@pytest.mark.parametrize(("op_name", "form", "name"), _mismatch_params())
def test_mixed_float32_float64_is_rejected(op_name: str, form: str, name: str, base: Any,
                                           other: Any) -> None:
    op = OPS[op_name]
    tensors = make_tensors(op, form, dtype=base)
    tensors = replace_entry(tensors, name, form, entry(tensors, name, form).astype(other))
    b, o = np.dtype(base).name, np.dtype(other).name
    # float64 goes only with float64; float32 with float32, bfloat16 or float16
    like = {"float64": "float64", "float32": "float32, bfloat16 or float16"}
    if name == "param" and form == "single":
        # param sets the call's dtype: the first array that disagrees with it is grad
        match = rf"^grad: expected {like[o]} like param, got {b}$"
    else:
        first = re.escape(who("param", form, 0))
        match = starts_with(who(name, form)) + rf"expected {like[b]} like {first}, got {o}$"
    expect_rejected(op, tensors, TypeError, match)


@pytest.mark.parametrize(("op_name", "form", "name"), _mismatch_params())
@pytest.mark.parametrize("kind", ["longer", "transposed-shape", "flattened"])
def test_shape_mismatch_is_rejected(op_name: str, form: str, name: str, kind: str) -> None:
    op = OPS[op_name]
    tensors = make_tensors(op, form)
    good = entry(tensors, name, form)
    bad = {"longer": np.ones((good.shape[0], good.shape[1] + 1), good.dtype),
           "transposed-shape": np.ascontiguousarray(good.T),
           "flattened": good.ravel().copy()}[kind]
    tensors = replace_entry(tensors, name, form, bad)
    # the first array whose shape disagrees with param's: grad, when param itself is changed
    culprit = "grad" if name == "param" else name
    shown = entry(tensors, culprit, form).shape
    param_shape = entry(tensors, "param", form).shape
    match = (starts_with(who(culprit, form)) + re.escape(f"shape {shown} does not match ")
             + re.escape(f"{who('param', form)} shape {param_shape}"))
    expect_rejected(op, tensors, ValueError, match)


# --------------------------------------------------------------------------------------------
# Aliasing: an array that is written must share no memory with any other array of the call
# --------------------------------------------------------------------------------------------


def _alias_pairs() -> List[Any]:
    params = []
    for op_name, op in OPS.items():
        for i, a in enumerate(op.tensors):
            for b in op.tensors[i + 1:]:
                if a in op.inputs and b in op.inputs:
                    continue  # (two read-only inputs may share memory)
                for form in FORMS:
                    params.append(pytest.param(op_name, form, a, b,
                                               id=f"{op_name}-{form}-{a}-is-{b}"))
    return params


@pytest.mark.parametrize(("op_name", "form", "a", "b"), _alias_pairs())
def test_same_array_for_two_arguments_is_rejected(op_name: str, form: str, a: str,
                                                  b: str) -> None:
    """param is grad, exp_avg is exp_avg_sq, ...: every pair includes a written array."""
    op = OPS[op_name]
    tensors = make_tensors(op, form)
    tensors = replace_entry(tensors, b, form, entry(tensors, a, form))
    expect_rejected(op, tensors, ValueError, share_regex(who(a, form), who(b, form)))


@pytest.mark.parametrize(("op_name", "form", "a", "b"), _alias_pairs())
def test_overlapping_views_are_rejected(op_name: str, form: str, a: str, b: str) -> None:
    """Two views of one buffer, the second starting in the middle of the first."""
    op = OPS[op_name]
    tensors = make_tensors(op, form)
    shape = entry(tensors, a, form).shape
    n = int(np.prod(shape))
    buf = np.random.default_rng(1).standard_normal(n + n // 2).astype(np.float32) + 2.0
    tensors = replace_entry(tensors, a, form, buf[:n].reshape(shape))
    tensors = replace_entry(tensors, b, form, buf[n // 2:n // 2 + n].reshape(shape))
    expect_rejected(op, tensors, ValueError, share_regex(who(a, form), who(b, form)))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("op_name", OP_NAMES)
def test_one_element_overlap_is_rejected(op_name: str, form: str) -> None:
    """param's last element is the state's first: the smallest overlap there is."""
    op = OPS[op_name]
    tensors = make_tensors(op, form)
    shape = entry(tensors, "param", form).shape
    n = int(np.prod(shape))
    buf = np.ones(2 * n - 1, np.float32)
    state = op.states[0]
    tensors = replace_entry(tensors, "param", form, buf[:n].reshape(shape))
    tensors = replace_entry(tensors, state, form, buf[n - 1:].reshape(shape))
    expect_rejected(op, tensors, ValueError, share_regex(who("param", form), who(state, form)))


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("op_name", OP_NAMES)
def test_adjacent_views_of_one_buffer_are_accepted(op_name: str, form: str) -> None:
    """Views that touch but do not overlap are distinct arrays: same result as separate ones."""
    op = OPS[op_name]
    expected = make_tensors(op, form)
    tensors = make_tensors(op, form)
    pieces = [entry(tensors, name, form) for name in op.tensors]
    buf = np.concatenate([p.ravel() for p in pieces])
    start = 0
    for name, p in zip(op.tensors, pieces):
        tensors = replace_entry(tensors, name, form, buf[start:start + p.size].reshape(p.shape))
        start += p.size
    call(op, expected)
    call(op, tensors)
    for name in op.tensors:
        assert entry(tensors, name, form).tobytes() == entry(expected, name, form).tobytes()


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_same_param_twice_in_a_list_is_rejected(op_name: str) -> None:
    op = OPS[op_name]
    tensors = make_tensors(op, "list")
    tensors["param"][LAST] = tensors["param"][0]
    for name in op.tensors[1:]:
        tensors[name][LAST] = np.ones_like(tensors["param"][0])
    expect_rejected(op, tensors, ValueError, share_regex("param[0]", f"param[{LAST}]"))


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_state_shared_by_two_tensors_is_rejected(op_name: str) -> None:
    op = OPS[op_name]
    tensors = make_tensors(op, "list")
    state = op.states[-1]
    tensors["param"][LAST] = np.ones(LIST_SHAPES[0], np.float32)
    for name in (*op.inputs, *op.states):
        tensors[name][LAST] = np.ones(LIST_SHAPES[0], np.float32)
    tensors[state][LAST] = tensors[state][0]
    expect_rejected(op, tensors, ValueError, share_regex(f"{state}[0]", f"{state}[{LAST}]"))


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_state_overlapping_another_tensors_param_is_rejected(op_name: str) -> None:
    """The clash is across tensors and arguments: exp_avg[3] is a view into param[0]."""
    op = OPS[op_name]
    tensors = make_tensors(op, "list")
    state = op.states[0]
    shape = LIST_SHAPES[LAST]
    n = int(np.prod(shape))
    big = np.ones(4 * n, np.float32)
    tensors["param"][0] = big.reshape(4, n)
    for name in op.tensors[1:]:
        tensors[name][0] = np.ones((4, n), np.float32)
    tensors[state][LAST] = big[n:2 * n].reshape(shape)
    expect_rejected(op, tensors, ValueError, share_regex("param[0]", f"{state}[{LAST}]"))


@pytest.mark.parametrize("op_name", OP_NAMES)
@pytest.mark.parametrize("writeable", [False, True], ids=["read-only", "writeable"])
def test_grad_shared_by_two_tensors_is_accepted(op_name: str, writeable: bool) -> None:
    """grad is only read, so one gradient array may serve several tensors (e.g. tied
    weights); the result equals passing separate copies."""
    op = OPS[op_name]
    shape = LIST_SHAPES[0]
    tensors = make_tensors(op, "list")
    expected = make_tensors(op, "list")
    for t in (tensors, expected):
        for name in op.tensors:
            t[name][LAST] = t[name][0].copy()  # tensor LAST is tensor 0's twin
    shared = np.abs(tensors["grad"][0]) + 0.25
    shared.flags.writeable = writeable
    tensors["grad"][0] = tensors["grad"][LAST] = shared
    expected["grad"][0], expected["grad"][LAST] = shared.copy(), shared.copy()
    assert tensors["param"][0].shape == shape
    call(op, expected)
    call(op, tensors)
    for name in op.tensors:
        for a, b in zip(tensors[name], expected[name]):
            assert a.tobytes() == b.tobytes(), name


# --------------------------------------------------------------------------------------------
# List structure
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("op_name", "name"),
                         [pytest.param(o, n, id=f"{o}-{n}") for o in OPS for n in OPS[o].tensors])
def test_list_length_mismatch_is_rejected(op_name: str, name: str) -> None:
    op = OPS[op_name]
    tensors = make_tensors(op, "list")
    tensors[name] = tensors[name][:-1]
    n = len(LIST_SHAPES)
    if name == "param":
        match = rf"^grad: has {n} entries but param has {n - 1}$"
    else:
        match = rf"^{name}: has {n - 1} entries but param has {n}$"
    expect_rejected(op, tensors, ValueError, match)


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_array_where_the_others_are_lists_is_rejected(op_name: str) -> None:
    op = OPS[op_name]
    tensors = make_tensors(op, "list")
    tensors["grad"] = tensors["grad"][0]
    expect_rejected(op, tensors, TypeError, r"^grad: expected a list or tuple of arrays "
                                            r"\(as param is\), got (numpy\.)?ndarray")


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_list_where_the_others_are_arrays_is_rejected(op_name: str) -> None:
    op = OPS[op_name]
    tensors = make_tensors(op, "single")
    state = op.states[-1]
    tensors[state] = [tensors[state]]
    expect_rejected(op, tensors, TypeError, rf"^{state}: " + NOT_AN_ARRAY + "list")


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_list_param_with_array_states_blames_param(op_name: str) -> None:
    op = OPS[op_name]
    tensors = make_tensors(op, "single")
    tensors["param"] = [1.0, 2.0]
    expect_rejected(op, tensors, TypeError, r"^param\b")


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_tuples_work_like_lists(op_name: str) -> None:
    op = OPS[op_name]
    expected = make_tensors(op, "list")
    tensors = make_tensors(op, "list")
    tensors = {name: (tuple(v) if i % 2 else v) for i, (name, v) in enumerate(tensors.items())}
    call(op, expected)
    call(op, tensors)
    for name in op.tensors:
        for a, b in zip(tensors[name], expected[name]):
            assert a.tobytes() == b.tobytes()


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_bad_last_entry_of_a_long_threaded_list_writes_nothing(op_name: str,
                                                                threads: int) -> None:
    """Many tensors, big enough to be split over threads: a bad last one stops them all."""
    op = OPS[op_name]
    rng = np.random.default_rng(7)
    sizes = [40_000] * 5 + [17, 3]
    tensors = {name: [_array(op, rng, name, (n,), np.float32) for n in sizes]
               for name in op.tensors}
    tensors["grad"][-1] = np.ones(4, np.float32)
    expect_rejected(op, tensors, ValueError,
                    rf"^grad\[{len(sizes) - 1}\]: shape \(4,\) does not match "
                    rf"param\[{len(sizes) - 1}\] shape \(3,\)")


# --------------------------------------------------------------------------------------------
# Options that need an extra array or rule out others
# --------------------------------------------------------------------------------------------


def _optional_state_params() -> List[Any]:
    """(op, form, state) for every state the registry switches on by an option."""
    return [pytest.param(op_name, form, s.name, s.when, id=f"{op_name}-{form}-{s.name}")
            for op_name in OP_NAMES for s in RULES[op_name].states if s.when
            for form in FORMS]


@pytest.mark.parametrize(("op_name", "form", "state", "when"), _optional_state_params())
def test_missing_optional_state_is_rejected(op_name: str, form: str, state: str,
                                            when: str) -> None:
    """The checked call switches every state on; leaving one out is '<state>: required when
    <the option that needs it>' (the registry's when text)."""
    op = OPS[op_name]
    tensors = make_tensors(op, form)
    del tensors[state]
    expect_rejected(op, tensors, ValueError, rf"^{state}: required when {re.escape(when)}$")


def _always_state_params() -> List[Any]:
    return [pytest.param(op_name, form, s.name, id=f"{op_name}-{form}-{s.name}")
            for op_name in OP_NAMES for s in RULES[op_name].states if not s.when
            for form in FORMS]


@pytest.mark.parametrize(("op_name", "form", "state"), _always_state_params())
def test_missing_state_is_rejected(op_name: str, form: str, state: str) -> None:
    """A state every step uses may not be left out: it is an array argument like any other."""
    op = OPS[op_name]
    tensors = make_tensors(op, form)
    del tensors[state]
    expect_rejected(op, tensors, TypeError, rf"^{state}: expected a ")


def _invalid_params() -> List[Any]:
    return [pytest.param(op_name, form, dict(values), message,
                         id=f"{op_name}-{form}-" + ",".join(f"{k}={v}" for k, v in values.items()))
            for op_name in OP_NAMES for values, message in OPS[op_name].case.invalid
            for form in FORMS]


@pytest.mark.parametrize(("op_name", "form", "values", "message"), _invalid_params())
def test_invalid_option_combination_is_rejected(op_name: str, form: str,
                                                values: Dict[str, Any], message: str) -> None:
    """Combinations the rule rules out beyond single ranges (cases.Case.invalid): SGD's
    nesterov without momentum or with dampening, Rprop's etas outside 0 < etaminus < 1 <
    etaplus."""
    op = OPS[op_name]
    expect_rejected(op, make_tensors(op, form), ValueError, "^" + re.escape(message),
                    **values)


def _unused_state_params() -> List[Any]:
    """(op, state, the option value that switches it off) for each optional state."""
    out = []
    for op_name in OP_NAMES:
        for s in RULES[op_name].states:
            if s.when:
                name = re.match(r"^(\w+)", s.when).group(1)  # type: ignore[union-attr]
                off = False if s.when.endswith("=True") else 0.0
                out.append(pytest.param(op_name, s.name, {name: off}, id=f"{op_name}-{s.name}"))
    return out


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize(("op_name", "state", "off"), _unused_state_params())
def test_unused_state_is_ignored(op_name: str, state: str, off: Dict[str, Any],
                                 form: str) -> None:
    """With its option off a state is not an input: even a read-only one is left alone."""
    op = OPS[op_name]
    tensors = make_tensors(op, form)
    for b in arrays_in(tensors[state]):
        b.flags.writeable = False
    saved = [b.copy() for b in arrays_in(tensors[state])]
    overrides = dict(off)
    if op_name == "sgd":
        overrides["dampening"] = 0.0
    call(op, tensors, **overrides)
    for b, s in zip(arrays_in(tensors[state]), saved):
        assert b.tobytes() == s.tobytes()


# --------------------------------------------------------------------------------------------
# Hyperparameters: ranges from the registry (test_registry checks how they print)
# --------------------------------------------------------------------------------------------


NAN, INF = float("nan"), float("inf")
STEP = [(0, ValueError, "expected an int >= 1 and <= 2\\*\\*53, got 0"),
        (-3, ValueError, "expected an int >= 1 and <= 2\\*\\*53, got -3"),
        (2.0, TypeError, r"expected an int >= 1 and <= 2\*\*53, got 2\.0"),
        (1.5, TypeError, r"expected an int >= 1 and <= 2\*\*53, got 1\.5"),
        (np.float64(2.0), TypeError,
         r"expected an int >= 1 and <= 2\*\*53, got (np\.float64\()?2\.0"),
        (None, TypeError, "expected an int >= 1 and <= 2\\*\\*53, got None"),
        ("1", TypeError, "expected an int >= 1 and <= 2\\*\\*53, got '1'"),
        # a bool is not a count; ValueError or TypeError, as long as it is rejected and named
        (True, (TypeError, ValueError), "expected an int >= 1 and <= 2\\*\\*53, got True")]
# Wrong types, tried in the single form only (the list form checks them the same way)
NUMBER_TYPES = [(True, (TypeError, ValueError), "expected a finite number"),
                (False, (TypeError, ValueError), "expected a finite number"),
                (None, TypeError, "expected a finite number"),
                ("0.1", TypeError, "expected a finite number")]
GRAD_SCALE = Range(0.0, lo_open=True)  # grad_scale: a finite number > 0, for every rule


def out_of_range(r: Range) -> List[Tuple[Any, Any, str]]:
    """(value, exception, message after "name: ") for values just outside the range, far
    outside, and not finite (every range holds finite numbers only)."""
    values = [NAN, INF, -INF]
    if math.isfinite(r.lo):
        values += [r.lo] if r.lo_open else []
        values += [r.lo - 1e-3 * max(1.0, abs(r.lo)), r.lo - 1e-8, r.lo - 1e3]
    if math.isfinite(r.hi):
        values += [r.hi] if r.hi_open else []
        values += [r.hi + 0.5 * max(1.0, abs(r.hi)), math.nextafter(r.hi, INF)]
    return [(v, ValueError, f"expected {re.escape(r.describe())}, got {re.escape(repr(v))}$")
            for v in values]


def _value_id(v: Any) -> str:
    return f"np.float64({float(v)!r})" if isinstance(v, np.floating) else repr(v)


def _hyper_params() -> List[Any]:
    params = []
    for op_name in OP_NAMES:
        rule = RULES[op_name]
        checks: Dict[str, List[Tuple[Any, Any, str]]] = {}
        if rule.step != "none":
            checks["step"] = STEP + [(2**63, ValueError, r"expected an int >= 1 and <= 2\*\*53, "
                                                         r"got")]
        for f in rule.fields:
            if f.kind == "real":
                checks[f.name] = out_of_range(f.range) + NUMBER_TYPES
        checks["grad_scale"] = out_of_range(GRAD_SCALE) + NUMBER_TYPES
        for name, values in checks.items():
            for value, exc, what in values:
                # Wrong types are checked the same way in both forms: one form is enough.
                wrong_type = isinstance(value, (bool, str, type(None))) or value == 2**63
                for form in ["single"] if wrong_type else FORMS:
                    params.append(pytest.param(
                        op_name, form, name, value, exc, what,
                        id=f"{op_name}-{form}-{name}={_value_id(value)}"))
    return params


@pytest.mark.parametrize(("op_name", "form", "name", "value", "exc", "what"), _hyper_params())
def test_bad_hyperparameter_is_rejected(op_name: str, form: str, name: str, value: Any,
                                        exc: Any, what: str) -> None:
    op = OPS[op_name]
    expect_rejected(op, make_tensors(op, form), exc, starts_with(name) + what,
                    **{name: value})


def _scalar_state_params() -> List[Any]:
    return [pytest.param(op_name, f.name, value, id=f"{op_name}-{f.name}={value!r}")
            for op_name in OP_NAMES for f in RULES[op_name].scalar_states
            for value in ("0.5", [0.5])]


@pytest.mark.parametrize(("op_name", "name", "value"), _scalar_state_params())
def test_scalar_state_of_a_wrong_type_is_rejected(op_name: str, name: str, value: Any) -> None:
    """Scalar states (NAdam's mu_product, ASGD's eta and mu) are finite numbers (NaN and
    infinities are refused too: one would poison every later step); as state, not
    hyperparameters, they have no narrower range (torch checks none)."""
    op = OPS[op_name]
    expect_rejected(op, make_tensors(op, "list"), TypeError,
                    starts_with(name) + "expected a finite number", **{name: value})


def inside_edges(r: Range) -> List[float]:
    """The values of a range closest to its finite bounds."""
    out = []
    if math.isfinite(r.lo):
        out.append(math.nextafter(r.lo, INF) if r.lo_open else r.lo)
    if math.isfinite(r.hi):
        out.append(math.nextafter(r.hi, -INF) if r.hi_open else r.hi)
    return out


def _edge_params() -> List[Any]:
    params = []
    for op_name in OP_NAMES:
        rule = RULES[op_name]
        lower: Dict[str, Any] = {}
        for f in rule.fields:
            if f.kind != "real":
                continue
            for value in inside_edges(f.range):
                params.append(pytest.param(op_name, {f.name: value},
                                           id=f"{op_name}-{f.name}={value!r}"))
            if math.isfinite(f.range.lo):
                lower[f.name] = inside_edges(f.range)[0]
        params.append(pytest.param(op_name, lower, id=f"{op_name}-all-at-lower-edges"))
        if rule.step != "none":
            params.append(pytest.param(op_name, {"step": 2**53}, id=f"{op_name}-step=2**53"))
    return params + [
        pytest.param("sgd", dict(step=np.int64(5)), id="sgd-step=np.int64"),
        pytest.param("sgd", dict(lr=np.float32(0.5)), id="sgd-lr=np.float32"),
        pytest.param("adam", dict(grad_scale=65536.0), id="adam-grad_scale=2**16"),
        pytest.param("adam", dict(step=10**6), id="adam-step=1e6"),
        pytest.param("rprop", dict(etaminus=math.nextafter(0.0, 1.0),
                                   etaplus=math.nextafter(1.0, 2.0)), id="rprop-etas-at-edges"),
        pytest.param("asgd", dict(lambd=-1e3, alpha=-2.0, t0=-1e300), id="asgd-negative"),
    ]


@pytest.mark.parametrize(("op_name", "hyper"), _edge_params())
def test_edge_of_range_hyperparameters_are_accepted(op_name: str, hyper: Dict[str, Any]) -> None:
    op = OPS[op_name]
    with np.errstate(all="ignore"):
        call(op, make_tensors(op, "list"), **hyper)


# --------------------------------------------------------------------------------------------
# Zero-size arrays and empty lists
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(0,), (0, 3), (3, 0)], ids=str)
@pytest.mark.parametrize("op_name", OP_NAMES)
def test_zero_size_arrays_are_a_no_op(op_name: str, shape: Tuple[int, ...], dtype: Any) -> None:
    op = OPS[op_name]
    tensors = {name: np.zeros(shape, dtype) for name in op.tensors}
    call(op, tensors)
    assert all(a.shape == shape and a.dtype == dtype for a in tensors.values())


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_zero_size_arrays_may_share_memory(op_name: str) -> None:
    """An empty array holds no element that could be written, so aliasing it is harmless."""
    op = OPS[op_name]
    z = np.zeros(0, np.float32)
    call(op, {name: z for name in op.tensors})


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_zero_size_tensors_in_a_list_leave_the_others_as_without_them(op_name: str) -> None:
    op = OPS[op_name]
    expected = make_tensors(op, "list")
    tensors = make_tensors(op, "list")
    for name in op.tensors:
        tensors[name] = ([np.zeros((0, 4), np.float32)] + tensors[name][:2]
                         + [np.zeros((2, 0), np.float32)] + tensors[name][2:]
                         + [np.zeros((0,), np.float32)])
    call(op, expected)
    call(op, tensors)
    for name in op.tensors:
        nonempty = [a for a in tensors[name] if a.size]
        assert [a.tobytes() for a in nonempty] == [b.tobytes() for b in expected[name]]


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_empty_lists_are_a_no_op(op_name: str) -> None:
    op = OPS[op_name]
    call(op, {name: [] for name in op.tensors})
    call(op, {name: () for name in op.tensors})


@pytest.mark.parametrize("op_name", OP_NAMES)
def test_zero_size_arrays_are_still_checked(op_name: str) -> None:
    """No-op or not, a wrong dtype or shape is still an error."""
    op = OPS[op_name]
    tensors = {name: np.zeros(0, np.float32) for name in op.tensors}
    tensors["grad"] = np.zeros(0, np.int16)
    with pytest.raises(TypeError, match=r"^grad: expected float32, float64, bfloat16 or float16"):
        call(op, tensors)
    tensors["grad"] = np.zeros((0, 2), np.float32)
    with pytest.raises(ValueError, match=r"^grad: shape \(0, 2\) does not match param shape"):
        call(op, tensors)


def test_isa_and_threads_do_not_change_validation(isa: str, threads: int) -> None:
    """Checks run in the bindings, before any kernel: same error on every ISA and thread
    count, and still nothing written."""
    op = OPS["adam"]
    tensors = make_tensors(op, "list")
    tensors["exp_avg_sq"][LAST] = _misaligned(tensors["exp_avg_sq"][LAST])
    expect_rejected(op, tensors, ValueError, rf"^exp_avg_sq\[{LAST}\]: " + MISALIGNED)
    assert gdfast.isa_info()["active"] == isa
