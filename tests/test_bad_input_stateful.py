"""Bad input to the stateful optimizers, gdfast.<Name> and gdfast.torch.<Name> (issue 15:
category 1 partial steps, 5 load_state_dict, 6 malformed constructor arguments; and
channels_last params).

Each bad input raises TypeError or ValueError (a sparse gradient: RuntimeError, as torch.optim
raises) whose message starts with the argument as the user wrote it, before anything changes:
the params, every state entry (arrays, step counts, scalar states) and the param groups are
compared before and after, bitwise. Where a step was refused, the bad input is then undone and
training goes on exactly (bitwise) as a twin optimizer's that never saw it.

Accepted here, and checked to step correctly: non-contiguous and expanded gradients (as
torch.optim accepts them), and params in any dense layout (channels_last, a transposed
matrix), stepped as flat views of their memory: bitwise as contiguous twins, and as
torch.optim (float64, bound below).
"""

from __future__ import annotations

import copy
import math
import re
import warnings
from typing import Any, Callable, Dict, List, Sequence, Tuple

import numpy as np
import pytest

import gdfast
from gdfast._stepping import CONSTRUCTORS, tuple_arguments

torch = pytest.importorskip("torch")
nn = torch.nn
import gdfast.torch as gt  # noqa: E402  (needs torch)

from conftest import ORACLE_ONLY_STATE, oracle_class  # noqa: E402

NAMES = sorted(n for n in gdfast.optimizers() if n != "Muon")  # (Muon: tests/test_muon.py)
# (lion-pytorch's Lion has no foreach; pytorch_optimizer's SophiaH estimates the Hessian on its
# first step, which needs a graph of the gradients: test_sophia.py compares it)
TORCH_OPTIM_NAMES = [n for n in NAMES if n not in ("Lion", "SophiaH")]
COUNTED = [n for n in NAMES if CONSTRUCTORS[n].rule.step == "counted"]
WITH_SCALAR_STATES = [n for n in NAMES if CONSTRUCTORS[n].rule.scalar_states]
PAIRED = [(n, key) for n in NAMES for key in ("betas", "etas", "step_sizes")
          if key in CONSTRUCTORS[n].signature.parameters]
SCALARS = ("step", *sorted({n for c in CONSTRUCTORS.values() for n in c.scalar_names}))
SCALAR_NAMES = "|".join(SCALARS[1:])  # (a regex alternative)
# Options that switch every state of a rule on, so that each state is exercised.
KWARGS: Dict[str, Dict[str, Any]] = {"SGD": {"momentum": 0.9},
                                     "RMSprop": {"momentum": 0.5, "centered": True},
                                     "Adam": {"amsgrad": True}, "AdamW": {"amsgrad": True},
                                     # (no Hutchinson estimate: these grads have no graph)
                                     "SophiaH": {"update_period": None}}


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Any:
    """Tiny tensors: torch's threads would only compete with gdfast's on a loaded machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# --------------------------------------------------------------------------------------------
# Snapshots: everything a rejected call must leave as it was
# --------------------------------------------------------------------------------------------


def _frozen_value(v: Any) -> Any:
    """A value as compared: tensors and arrays by dtype, shape, strides and bytes (NaN equal
    to itself, -0.0 differs from 0.0); anything else deep-copied."""
    if torch.is_tensor(v):
        t = v.detach()
        return ("tensor", t.dtype, tuple(t.shape), t.stride(), t.device,
                t.clone().contiguous().view(-1).view(torch.uint8).numpy().tobytes()
                if t.numel() else b"")
    if isinstance(v, np.ndarray):
        return ("array", v.dtype.str, v.shape, v.strides, v.tobytes())
    if isinstance(v, dict):
        return ("dict", {k: _frozen_value(x) for k, x in v.items()})
    if isinstance(v, (list, tuple)):
        return (type(v).__name__, [_frozen_value(x) for x in v])
    if isinstance(v, float) and math.isnan(v):
        return ("nan",)
    return ("value", type(v), copy.deepcopy(v))


def snapshot(opt: Any) -> Any:
    """Params (values and identities), every state entry and every param group entry."""
    groups = []
    for g in opt.param_groups:
        groups.append(({k: _frozen_value(v) for k, v in g.items() if k != "params"},
                       [id(p) for p in g["params"]], [_frozen_value(p) for p in g["params"]]))
    state = {(id(k) if torch.is_tensor(k) else k): _frozen_value(dict(s))
             for k, s in opt.state.items()}
    return groups, state


def assert_unchanged(opt: Any, before: Any) -> None:
    groups, state = snapshot(opt)
    assert len(groups) == len(before[0]), "a param group was added or removed"
    for i, (now, then) in enumerate(zip(groups, before[0])):
        assert now[0] == then[0], f"param_groups[{i}] entries changed"
        assert now[1] == then[1], f"param_groups[{i}]['params'] changed"
        assert now[2] == then[2], f"a param of param_groups[{i}] was written"
    assert state.keys() == before[1].keys(), "a param's state was created or dropped"
    for key, value in state.items():
        assert value == before[1][key], f"the state of param {key} changed"


def assert_same_run(opt: Any, twin: Any) -> None:
    """Params and states bitwise equal (torch: by position, keys differ)."""
    mine = [p for g in opt.param_groups for p in g["params"]]
    theirs = [p for g in twin.param_groups for p in g["params"]]
    for i, (p, q) in enumerate(zip(mine, theirs)):
        assert _frozen_value(p) == _frozen_value(q), f"param {i}"
        key_p, key_q = (p, q) if torch.is_tensor(p) else (i, i)
        assert _frozen_value(dict(opt.state.get(key_p, {}))) == \
            _frozen_value(dict(twin.state.get(key_q, {}))), f"state of param {i}"


# --------------------------------------------------------------------------------------------
# gdfast.torch: two groups, stepped twice, the third step's grads set
# --------------------------------------------------------------------------------------------


def torch_grads(a: Any, b: Any, t: int) -> None:
    gen = torch.Generator().manual_seed(100 + t)
    a.grad = torch.randn(a.shape, generator=gen)
    b.grad = torch.randn(b.shape, generator=gen)


def torch_two_groups(name: str, steps: int = 2) -> Tuple[Any, Any, Any]:
    gen = torch.Generator().manual_seed(0)
    a = nn.Parameter(torch.randn(5, generator=gen))
    b = nn.Parameter(torch.randn(4, 3, generator=gen))
    opt = getattr(gt, name)([{"params": [a]}, {"params": [b], "lr": 0.02}],
                            **KWARGS.get(name, {}))
    for t in range(steps):
        torch_grads(a, b, t)
        opt.step()
    torch_grads(a, b, steps)
    return opt, a, b


def _array_state(opt: Any, p: Any) -> str:
    return next(k for k in opt.state[p] if k not in SCALARS)


Undo = Callable[[], None]


def _replace_grad(b: Any, bad: Any) -> Undo:
    good = b.grad
    b.grad = bad
    return lambda: setattr(b, "grad", good)


def _replace_data(b: Any, bad: Any) -> Undo:
    good = b.data
    b.data = bad
    return lambda: setattr(b, "data", good)


def _replace_state(opt: Any, b: Any, key: str, bad: Any) -> Undo:
    good = opt.state[b][key]
    opt.state[b][key] = bad
    return lambda: opt.state[b].__setitem__(key, good)


def _load_with(opt: Any, edit: Callable[[Dict[str, Any]], None]) -> Undo:
    """torch.optim's load_state_dict (not gdfast's to check): the bad entry loads, and the
    step must refuse it."""
    good = opt.state_dict()
    bad = copy.deepcopy(good)
    edit(bad)
    opt.load_state_dict(bad)
    return lambda: opt.load_state_dict(good)


def _fill_in_place(t: Any, value: float) -> Undo:
    good = t.clone()
    t.fill_(value)
    return lambda: t.copy_(good)


G1P0 = r"^param_groups\[1\]\['params'\]\[0\]"  # the param of the second group
Problem = Tuple[Callable[[Any, Any, Any], Undo], Any, str]
TORCH_PROBLEMS: Dict[str, Problem] = {
    "sparse_grad": (lambda opt, a, b: _replace_grad(b, torch.zeros(b.shape).to_sparse()),
                    RuntimeError, G1P0 + r"\.grad: {name} does not support sparse gradients"),
    "grad_is_the_param": (lambda opt, a, b: _replace_grad(b, b.detach()), ValueError,
                          r"^param_groups\[1\]: param\[0\] and grad\[0\] share memory"),
    "param_with_gaps_via_data": (
        lambda opt, a, b: _replace_data(b, torch.randn(4, 6)[:, ::2]), ValueError,
        G1P0 + r": has gaps or overlaps in memory .* p\.data = p\.data\.contiguous\(\)"),
    # dense, same values, but laid out unlike its (contiguous) states: not stepped elementwise
    "param_transposed_via_data": (
        lambda opt, a, b: _replace_data(b, b.data.t().contiguous().t()), ValueError,
        G1P0 + r": state\['\w+'\]: strides \(3, 1\) differ from its param's \(1, 4\)"),
    "state_of_wrong_shape": (
        lambda opt, a, b: _replace_state(opt, b, _array_state(opt, b), torch.zeros(5)),
        ValueError, r"^param_groups\[1\]: \w+\[0\]: shape \(5,\) does not match param\[0\]"),
    "state_of_wrong_dtype": (
        lambda opt, a, b: _replace_state(opt, b, _array_state(opt, b),
                                         opt.state[b][_array_state(opt, b)].double()),
        TypeError, r"^param_groups\[1\]: \w+\[0\]: expected float32, bfloat16 or float16 like "
                   r"param\[0\], got float64"),
    "state_not_a_tensor": (
        lambda opt, a, b: _replace_state(opt, b, _array_state(opt, b),
                                         opt.state[b][_array_state(opt, b)].tolist()),
        TypeError, G1P0 + r": state\['\w+'\]: expected a tensor, got list"),
    "state_not_contiguous": (
        lambda opt, a, b: _replace_state(opt, b, _array_state(opt, b),
                                         opt.state[b][_array_state(opt, b)].t().contiguous().t()),
        ValueError, G1P0 + r": state\['\w+'\]: is not contiguous"),
    "loaded_state_of_wrong_shape": (
        lambda opt, a, b: _load_with(opt, lambda sd: sd["state"][1].__setitem__(
            next(k for k in sd["state"][1] if k not in SCALARS), torch.zeros(5))),
        ValueError, r"^param_groups\[1\]: \w+\[0\]: shape \(5,\) does not match param\[0\]"),
}
STEP_PROBLEMS: Dict[str, Problem] = {
    "step_negative": (lambda opt, a, b: _replace_state(opt, b, "step", torch.tensor(-5.0)),
                      ValueError, G1P0 + r": state\['step'\]: expected an int >= 0, got -5\.0"),
    "step_fractional": (lambda opt, a, b: _replace_state(opt, b, "step", torch.tensor(1.5)),
                        ValueError, G1P0 + r": state\['step'\]: expected an int >= 0, got 1\.5"),
    "step_nan": (lambda opt, a, b: _replace_state(opt, b, "step", torch.tensor(math.nan)),
                 ValueError, G1P0 + r": state\['step'\]: expected an int >= 0, got nan"),
    "step_none": (lambda opt, a, b: _replace_state(opt, b, "step", None),
                  TypeError, G1P0 + r": state\['step'\]: expected an int >= 0, got None"),
    "step_a_python_int": (lambda opt, a, b: _replace_state(opt, b, "step", 3), TypeError,
                          G1P0 + r": state\['step'\]: expected a 1-element real tensor .*got 3"),
    "step_two_elements": (lambda opt, a, b: _replace_state(opt, b, "step", torch.ones(2)),
                          TypeError, G1P0 + r": state\['step'\]: expected a 1-element real "
                                            r"tensor .*shape \(2,\)"),
    "step_edited_in_place": (lambda opt, a, b: _fill_in_place(opt.state[b]["step"], -5.0),
                             ValueError, G1P0 + r": state\['step'\]: expected an int >= 0"),
    "loaded_step_negative": (
        lambda opt, a, b: _load_with(opt, lambda sd: sd["state"][1].__setitem__(
            "step", torch.tensor(-5.0))),
        ValueError, G1P0 + r": state\['step'\]: expected an int >= 0, got -5\.0"),
    # torch.optim's load_state_dict turns "abc" into another string (its cast), and loads it
    "loaded_step_a_string": (
        lambda opt, a, b: _load_with(opt, lambda sd: sd["state"][1].__setitem__("step", "abc")),
        TypeError, G1P0 + r": state\['step'\]: expected a 1-element real tensor"),
    "loaded_step_fractional": (
        lambda opt, a, b: _load_with(opt, lambda sd: sd["state"][1].__setitem__(
            "step", torch.tensor(1.5))),
        ValueError, G1P0 + r": state\['step'\]: expected an int >= 0, got 1\.5"),
}


def _delete_step(opt: Any, a: Any, b: Any) -> Undo:
    good = opt.state[b].pop("step")
    return lambda: opt.state[b].__setitem__("step", good)


STEP_PROBLEMS["step_deleted"] = (_delete_step, ValueError,
                                 G1P0 + r": state has \[.*\] but no 'step'")


def _scalar_state_nan(opt: Any, a: Any, b: Any) -> Undo:
    name = next(k for k in opt.state[b] if k in SCALARS and k != "step")
    return _fill_in_place(opt.state[b][name], math.nan)


def _torch_problem_params() -> List[Any]:
    out = []
    for name in NAMES:
        problems = dict(TORCH_PROBLEMS)
        if name in COUNTED:
            problems.update(STEP_PROBLEMS)
        if name in WITH_SCALAR_STATES:
            problems["scalar_state_nan"] = (
                _scalar_state_nan, ValueError,
                G1P0 + rf": state\['({SCALAR_NAMES})'\]: expected a finite number, got nan")
        out += [pytest.param(name, key, *problem, id=f"{name}-{key}")
                for key, problem in problems.items()]
    return out


@pytest.mark.parametrize(("name", "problem", "make", "exc", "match"), _torch_problem_params())
def test_torch_problem_in_the_second_group_changes_nothing(name: str, problem: str,
                                                           make: Callable[..., Undo], exc: Any,
                                                           match: str) -> None:
    """Category 1 (gdfast.torch): the first group is fine and comes first; the second has
    the problem. Nothing changes; undone, the next step is the twin's."""
    opt, a, b = torch_two_groups(name)
    twin, ta, tb = torch_two_groups(name)
    undo = make(opt, a, b)
    before = snapshot(opt)
    with pytest.raises(exc, match=match.format(name=name)):
        opt.step()
    assert_unchanged(opt, before)
    undo()
    opt.step()
    twin.step()
    assert_same_run(opt, twin)


@pytest.mark.parametrize("form", ["transposed", "expanded", "sliced"])
@pytest.mark.parametrize("name", NAMES)
def test_torch_non_contiguous_grads_step_as_their_contiguous_copies(name: str,
                                                                    form: str) -> None:
    """torch.optim accepts any strided gradient; gdfast reads it from a contiguous copy:
    bitwise the step of a twin given contiguous grads of the same values."""
    opt, a, b = torch_two_groups(name)
    twin, ta, tb = torch_two_groups(name)
    for t in range(3, 6):
        torch_grads(ta, tb, t)
        g = tb.grad
        if form == "transposed":
            odd = g.t().contiguous().t()
        elif form == "expanded":  # stride 0: every element the same
            g = tb.grad = g[:1, :1].expand(4, 3).contiguous()
            odd = g[:1, :1].expand(4, 3)
        else:
            odd = torch.zeros(4, 6)[:, ::2]
            odd.copy_(g)
        assert not odd.is_contiguous() and torch.equal(odd, g)
        a.grad, b.grad = ta.grad.clone(), odd
        opt.step()
        twin.step()
        assert_same_run(opt, twin)


# --------------------------------------------------------------------------------------------
# gdfast.<Name> (NumPy): two groups, stepped twice
# --------------------------------------------------------------------------------------------


def np_grads(t: int, shapes: Sequence[Tuple[int, ...]] = ((4, 3), (4, 3))) -> List[np.ndarray]:
    rng = np.random.default_rng(100 + t)
    return [rng.standard_normal(s).astype(np.float32) for s in shapes]


def np_two_groups(name: str, steps: int = 2) -> Tuple[Any, List[np.ndarray]]:
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((4, 3)).astype(np.float32) for _ in range(2)]
    opt = getattr(gdfast, name)([{"params": [params[0]]}, {"params": [params[1]], "lr": 0.02}],
                                **KWARGS.get(name, {}))
    for t in range(steps):
        opt.step(np_grads(t))
    return opt, params


def _np_set(opt: Any, key: str, value: Any) -> Undo:
    good = opt.state[1][key]
    opt.state[1][key] = value
    return lambda: opt.state[1].__setitem__(key, good)


def _np_read_only(opt: Any, params: List[np.ndarray], grads: List[Any]) -> Undo:
    params[1].flags.writeable = False
    return lambda: setattr(params[1].flags, "writeable", True)


def _np_grad(k: int, make: Callable[[List[np.ndarray], List[Any]], Any]) -> Any:
    def edit(opt: Any, params: List[np.ndarray], grads: List[Any]) -> Undo:
        good = grads[k]
        grads[k] = make(params, grads)
        return lambda: grads.__setitem__(k, good)
    return edit


def _np_first_array_state(opt: Any) -> str:
    return next(k for k in opt.state[1] if k not in SCALARS)


NP_G1 = r"^param_groups\[1\]"
NP_PROBLEMS: Dict[str, Problem] = {
    "grad_is_its_param": (_np_grad(1, lambda ps, gs: ps[1]), ValueError,
                          r"^grads\[1\]: shares memory with its param"),
    "grad_is_a_view_of_the_first_groups_param": (
        _np_grad(1, lambda ps, gs: ps[0][:]), ValueError,
        r"^param_groups\[\d\]: (param|grad)\[0\] and param_groups\[\d\]: (param|grad)\[0\] "
        r"share memory"),
    "read_only_param": (_np_read_only, ValueError,
                        NP_G1 + r": param\[0\]: is read-only, but it is updated in place"),
    "state_is_the_first_groups_param": (
        lambda opt, ps, gs: _np_set(opt, _np_first_array_state(opt), ps[0]), ValueError,
        r"^param_groups\[\d\]: \w+\[0\] and param_groups\[\d\]: \w+\[0\] share memory"),
    "state_of_wrong_dtype": (
        lambda opt, ps, gs: _np_set(opt, _np_first_array_state(opt),
                                    opt.state[1][_np_first_array_state(opt)].astype(np.float64)),
        TypeError,
        NP_G1 + r": \w+\[0\]: expected float32, bfloat16 or float16 like param\[0\], got float64"),
    "state_complex": (
        lambda opt, ps, gs: _np_set(opt, _np_first_array_state(opt),
                                    np.zeros((4, 3), np.complex64)),
        TypeError,
        NP_G1 + r": \w+\[0\]: expected float32, float64, bfloat16 or float16 .*got complex64"),
}
NP_STEP_PROBLEMS: Dict[str, Problem] = {
    "step_negative": (lambda opt, ps, gs: _np_set(opt, "step", -5), ValueError,
                      NP_G1 + r"\['params'\]\[0\]: state\['step'\]: expected an int >= 0, "
                              r"got -5$"),
    "step_fractional": (lambda opt, ps, gs: _np_set(opt, "step", 1.5), ValueError,
                        NP_G1 + r"\['params'\]\[0\]: state\['step'\]: expected an int >= 0, "
                                r"got 1\.5$"),
    "step_a_string": (lambda opt, ps, gs: _np_set(opt, "step", "abc"), TypeError,
                      NP_G1 + r"\['params'\]\[0\]: state\['step'\]: expected an int >= 0, "
                              r"got 'abc'$"),
    "step_none": (lambda opt, ps, gs: _np_set(opt, "step", None), TypeError,
                  NP_G1 + r"\['params'\]\[0\]: state\['step'\]: expected an int >= 0, got None$"),
    "step_bool": (lambda opt, ps, gs: _np_set(opt, "step", True), TypeError,
                  NP_G1 + r"\['params'\]\[0\]: state\['step'\]: expected an int >= 0, got True$"),
    "step_an_array": (lambda opt, ps, gs: _np_set(opt, "step", np.array([2])), TypeError,
                      NP_G1 + r"\['params'\]\[0\]: state\['step'\]: expected an int >= 0"),
    "step_deleted": (lambda opt, ps, gs: _np_pop_step(opt), ValueError,
                     NP_G1 + r"\['params'\]\[0\]: state has \[.*\] but no 'step'"),
}


def _np_pop_step(opt: Any) -> Undo:
    good = opt.state[1].pop("step")
    return lambda: opt.state[1].__setitem__("step", good)


def _np_problem_params() -> List[Any]:
    out = []
    for name in NAMES:
        problems = dict(NP_PROBLEMS)
        if name in COUNTED:
            problems.update(NP_STEP_PROBLEMS)
        if name in WITH_SCALAR_STATES:
            problems["scalar_state_none"] = (
                lambda opt, ps, gs: _np_set(opt, next(k for k in opt.state[1] if k in SCALARS
                                                      and k != "step"), None),
                TypeError, NP_G1 + rf"\['params'\]\[0\]: state\['({SCALAR_NAMES})'\]: "
                                   r"expected a finite number, got None")
        out += [pytest.param(name, key, *problem, id=f"{name}-{key}")
                for key, problem in problems.items()]
    return out


@pytest.mark.parametrize(("name", "problem", "make", "exc", "match"), _np_problem_params())
def test_numpy_problem_in_the_second_group_changes_nothing(name: str, problem: str,
                                                           make: Callable[..., Undo], exc: Any,
                                                           match: str) -> None:
    """Category 1 (gdfast.<Name>): aliasing, a param made read-only after construction, a
    state or step count edited into the second group."""
    opt, params = np_two_groups(name)
    twin, _ = np_two_groups(name)
    grads = np_grads(2)
    undo = make(opt, params, grads)
    before = snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.step(grads)
    assert_unchanged(opt, before)
    undo()
    opt.step(np_grads(2))
    twin.step(np_grads(2))
    assert_same_run(opt, twin)


def _misaligned(shape: Tuple[int, ...]) -> np.ndarray:
    buf = np.zeros(int(np.prod(shape)) * 4 + 1, np.uint8)
    a = buf[1:].view(np.float32).reshape(shape)
    assert a.flags.c_contiguous and not a.flags.aligned
    return a


def test_numpy_misaligned_param_is_refused_at_construction() -> None:
    """Accepted before, and refused only by the step's checks; now where it is given."""
    good = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"^param_groups\[1\]\['params'\]\[0\]: must be "
                                         r"aligned to its element size"):
        gdfast.Adam([{"params": [good]}, {"params": [_misaligned((4, 3))]}])
    opt = gdfast.Adam([good])
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"^param_groups\[1\]\['params'\]\[0\]: must be aligned"):
        opt.add_param_group({"params": [_misaligned((2,))]})
    assert_unchanged(opt, before)


# --------------------------------------------------------------------------------------------
# Category 5: load_state_dict of the NumPy optimizers
# --------------------------------------------------------------------------------------------

ENTRY = r"^state_dict\['state'\]\[1\]"


def _set_state(key: str, value: Any) -> Callable[[Dict[str, Any]], None]:
    def edit(sd: Dict[str, Any]) -> None:
        if key == "<first array>":
            sd["state"][1][next(k for k in sd["state"][1] if k not in SCALARS)] = value
        else:
            sd["state"][1][key] = value
    return edit


def _array_match(what: str) -> str:
    return ENTRY + r"\['\w+'\]: " + what


LOAD_PROBLEMS: Dict[str, Tuple[Callable[[Dict[str, Any]], None], Any, str]] = {
    "complex_state": (_set_state("<first array>", np.ones((4, 3), np.complex64) * 1j),
                      TypeError, _array_match(r"expected a real floating-point array, got "
                                              r"complex64")),
    "complex_tensor_state": (_set_state("<first array>", torch.ones(4, 3, dtype=torch.complex64)),
                             TypeError, _array_match(r"expected a real floating-point array, "
                                                     r"got complex64")),
    "object_state": (_set_state("<first array>", np.full((4, 3), object())), TypeError,
                     _array_match(r"expected a real floating-point array, got object")),
    "int_state": (_set_state("<first array>", np.ones((4, 3), np.int32)), TypeError,
                  _array_match(r"expected a real floating-point array, got int32")),
    "string_state": (_set_state("<first array>", np.full((4, 3), "a")), TypeError,
                     _array_match(r"expected a real floating-point array, got <U1")),
    "list_state": (_set_state("<first array>", [[0.0] * 3] * 4), TypeError,
                   _array_match(r"expected an array, got list")),
    "state_of_wrong_shape": (_set_state("<first array>", np.zeros(5, np.float32)), ValueError,
                             _array_match(r"shape \(5,\) does not match its param's \(4, 3\)")),
    "unknown_entry": (_set_state("bogus", 1), ValueError,
                      ENTRY + r": unknown entry 'bogus' \(\w+ keeps .*\)"),
    "entry_not_a_dict": (lambda sd: sd["state"].__setitem__(1, 5), TypeError,
                         ENTRY + r": expected a dict, got int"),
    "no_state": (lambda sd: sd.pop("state"), ValueError, r"^state_dict: has no 'state' entry"),
    "groups_not_a_list": (lambda sd: sd.__setitem__("param_groups", 3), TypeError,
                          r"^state_dict\['param_groups'\]: expected a list, got int"),
    "unhashable_key": (lambda sd: sd["param_groups"][1].__setitem__("params", [[1]]),
                       TypeError, r"^state_dict\['param_groups'\]\[1\]\['params'\]\[0\]: "
                                  r"expected a state key \(an int\), got list"),
    "key_listed_twice": (lambda sd: sd["param_groups"][1].__setitem__("params", [0]),
                         ValueError, r"^state_dict\['param_groups'\]\[1\]\['params'\]\[0\]: "
                                     r"0 is listed twice \(also at state_dict\['param_groups'\]"
                                     r"\[0\]\['params'\]\[0\]\)"),
    "negative_lr": (lambda sd: sd["param_groups"][1].__setitem__("lr", -1.0), ValueError,
                    r"^state_dict\['param_groups'\]\[1\]: lr: expected a finite number >= 0"),
}
LOAD_STEP_PROBLEMS: Dict[str, Tuple[Callable[[Dict[str, Any]], None], Any, str]] = {
    f"step={value!r}": (_set_state("step", value), exc,
                        ENTRY + r"\['step'\]: expected an int >= 0, got " + re.escape(repr(value))
                        + "$")
    for value, exc in [(-5, ValueError), ("abc", TypeError), (1.5, ValueError),
                       (None, TypeError), (True, TypeError), (math.nan, ValueError),
                       (math.inf, ValueError), (2**53, ValueError), (10**400, ValueError),
                       (torch.tensor(-5.0), ValueError), (torch.tensor(1.5), ValueError)]
}
LOAD_STEP_PROBLEMS["step=array([1, 2])"] = (
    _set_state("step", np.array([1, 2])), TypeError,
    ENTRY + r"\['step'\]: expected a number or a 1-element real array, got an array of shape "
            r"\(2,\)")
LOAD_STEP_PROBLEMS["step=complex tensor"] = (
    _set_state("step", torch.tensor(1 + 0j)), TypeError,
    ENTRY + r"\['step'\]: expected a number or a 1-element real array")
LOAD_STEP_PROBLEMS["no step"] = (lambda sd: sd["state"][1].pop("step"), ValueError,
                                 ENTRY + r": has .* but no 'step'")


def _load_problem_params() -> List[Any]:
    out = []
    for name in NAMES:
        problems = dict(LOAD_PROBLEMS)
        if name in COUNTED:
            problems.update(LOAD_STEP_PROBLEMS)
        if name in WITH_SCALAR_STATES:
            for value in ("abc", None, math.nan):
                problems[f"scalar_state={value!r}"] = (
                    lambda sd, value=value: sd["state"][1].__setitem__(
                        next(k for k in sd["state"][1] if k in SCALARS and k != "step"), value),
                    ValueError if isinstance(value, float) else TypeError,
                    ENTRY + rf"\['({SCALAR_NAMES})'\]: expected a finite number, got "
                    + re.escape(repr(value)))
        out += [pytest.param(name, key, *problem, id=f"{name}-{key}")
                for key, problem in problems.items()]
    return out


@pytest.mark.parametrize(("name", "problem", "edit", "exc", "match"), _load_problem_params())
def test_rejected_checkpoint_changes_nothing(name: str, problem: str,
                                             edit: Callable[[Dict[str, Any]], None], exc: Any,
                                             match: str) -> None:
    """Category 5: complex or object states (the imaginary part dropped, NaN, before), step
    counts that are not counts (the next step failed, or restarted, before), every one named;
    the optimizer keeps its old state and goes on as a twin that never saw the checkpoint."""
    opt, params = np_two_groups(name)
    twin, _ = np_two_groups(name)
    checkpoint = copy.deepcopy(opt.state_dict())
    for t in (2, 3):  # the checkpoint is from an earlier step: loading it would change things
        opt.step(np_grads(t))
        twin.step(np_grads(t))
    edit(checkpoint)
    before = snapshot(opt)
    with pytest.raises(exc, match=match):
        opt.load_state_dict(checkpoint)
    assert_unchanged(opt, before)
    opt.step(np_grads(4))
    twin.step(np_grads(4))
    assert_same_run(opt, twin)


def test_load_state_dict_that_is_not_a_dict() -> None:
    opt, _ = np_two_groups("Adam")
    before = snapshot(opt)
    for bad in (None, [1, 2], "state"):
        with pytest.raises(TypeError, match=r"^state_dict: expected a dict"):
            opt.load_state_dict(bad)  # type: ignore[arg-type]
    assert_unchanged(opt, before)


@pytest.mark.parametrize("name", COUNTED)
def test_checkpoint_step_counts_in_every_number_form_load_as_ints(name: str) -> None:
    """What torch.optim saves (a float tensor) and NumPy ints and integral floats load, as an
    int; every other valid entry as before. The run then goes on as the saving optimizer's."""
    opt, params = np_two_groups(name)
    saved = opt.state_dict()
    for form in (torch.tensor(2.0), torch.tensor([2.0], dtype=torch.float64), np.int64(2),
                 np.array(2), 2.0, torch.tensor(2)):
        checkpoint = copy.deepcopy(saved)
        checkpoint["state"][1]["step"] = form
        other, others = np_two_groups(name, steps=0)
        for mine, theirs in zip(others, params):
            mine[...] = theirs
        other.load_state_dict(checkpoint)
        assert type(other.state[1]["step"]) is int and other.state[1]["step"] == 2, form
        other.step(np_grads(2))
        twin, _ = np_two_groups(name)
        twin.step(np_grads(2))
        assert_same_run(other, twin)


# --------------------------------------------------------------------------------------------
# Category 6: malformed constructor and step arguments
# --------------------------------------------------------------------------------------------

FRONTS = ["numpy", "torch"]


def make_params(front: str, n: int = 2) -> List[Any]:
    if front == "numpy":
        return [np.zeros(3, np.float32) for _ in range(n)]
    return [nn.Parameter(torch.zeros(3)) for _ in range(n)]


def cls_of(front: str, name: str) -> Any:
    return getattr(gdfast if front == "numpy" else gt, name)


def prefix(front: str, group: int = 0) -> str:
    """Constructor arguments: named as such by gdfast.torch (checked before any group, as
    torch.optim does); gdfast.<Name> names the group they went into."""
    return rf"^param_groups\[{group}\]: " if front == "numpy" else "^"


@pytest.mark.parametrize("bad", [None, 5, 1.5])
@pytest.mark.parametrize("front", FRONTS)
def test_params_that_are_not_iterable(front: str, bad: Any) -> None:
    for name in NAMES:
        with pytest.raises(TypeError, match=r"^params: expected .*, got "
                                            + type(bad).__name__ + "$"):
            cls_of(front, name)(bad)


@pytest.mark.parametrize("bad", [None, 5])
def test_numpy_step_grads_that_are_not_iterable(bad: Any) -> None:
    opt, _ = np_two_groups("Adam")
    before = snapshot(opt)
    with pytest.raises(TypeError, match=r"^grads: expected a list of arrays \(one per param, "
                                        r"None to skip one\), got " + type(bad).__name__):
        opt.step(bad)
    assert_unchanged(opt, before)


def test_torch_closure_that_is_not_callable() -> None:
    opt, a, b = torch_two_groups("Adam")
    before = snapshot(opt)
    with pytest.raises(TypeError, match=r"^closure: expected a callable or None, got int"):
        opt.step(5)  # type: ignore[arg-type]
    assert_unchanged(opt, before)


def _pair_problems() -> List[Any]:
    out = []
    for name, key in PAIRED:
        names = dict(tuple_arguments(CONSTRUCTORS[name].rule.reals))[key]
        a, b = names[:2]
        expected = (f"{key}: expected {'a pair' if len(names) == 2 else 'a triple'} "
                    rf"\({', '.join(names)}\), got")
        good = CONSTRUCTORS[name].signature.parameters[key].default
        cases = [
            (0.9, TypeError, rf"{expected} 0\.9$"),
            ((0.9,), ValueError, rf"{expected} \(0\.9,\)$"),
            ({0.5, 0.6}, TypeError, rf"{expected} \{{"),
            (("a", *good[1:]), TypeError, rf"{key}\[0\] \({a}\): expected .*, got 'a'$"),
            ((None, *good[1:]), TypeError, rf"{key}\[0\] \({a}\): expected .*, got None$"),
            ((True, *good[1:]), TypeError, rf"{key}\[0\] \({a}\): expected .*, got True$"),
            ((good[0], False, *good[2:]), TypeError,
             rf"{key}\[1\] \({b}\): expected .*, got False$"),
        ]
        out += [pytest.param(name, key, value, exc, match, id=f"{name}-{key}={value!r}")
                for value, exc, match in cases]
    return out


@pytest.mark.parametrize("front", FRONTS)
@pytest.mark.parametrize(("name", "key", "value", "exc", "match"), _pair_problems())
def test_malformed_pairs_name_the_pair_and_the_element(front: str, name: str, key: str,
                                                       value: Any, exc: Any, match: str) -> None:
    """betas=0.9, (0.9,), ("a", .999), (None, .999), (True, .999): torch's Adam said "betas
    must be either both floats or both Tensors" for the last three; bools are not numbers.
    Given to the constructor, as a group's entry, or edited into a group after construction
    (then the step refuses it and changes nothing)."""
    cls = cls_of(front, name)
    with pytest.raises(exc, match=prefix(front) + match):
        cls(make_params(front), **{key: value})
    with pytest.raises(exc, match=r"^param_groups\[1\]: " + match):
        cls([{"params": make_params(front)[:1]},
             {"params": make_params(front)[1:], key: value}])
    if front == "numpy":
        opt, _ = np_two_groups(name)
        step: Callable[[], None] = lambda: opt.step(np_grads(2))  # noqa: E731
    else:
        opt, _, _ = torch_two_groups(name)
        step = opt.step
    opt.param_groups[1][key] = value
    before = snapshot(opt)
    with pytest.raises(exc, match=r"^param_groups\[1\]: " + match):
        step()
    assert_unchanged(opt, before)


@pytest.mark.parametrize("front", FRONTS)
def test_adam_takes_int_betas_as_numbers(front: str) -> None:
    """torch.optim.Adam refuses betas=(0, 0.999) (not both floats); gdfast takes numbers."""
    opt = cls_of(front, "Adam")(make_params(front), betas=(0, 0.999))
    assert opt.param_groups[0]["betas"] == (0, 0.999)


def test_adam_mixed_tensor_and_float_betas_keep_torchs_message() -> None:
    """torch's test database matches these words (test_torch_optim_db)."""
    with pytest.raises(ValueError, match=r"^betas must be either both floats or both Tensors, "
                                         r"got Tensor and float"):
        gt.Adam(make_params("torch"), betas=(torch.tensor(0.9), 0.999))


def test_torch_two_element_lr() -> None:
    lr = torch.tensor([0.1, 0.2])
    for name in NAMES:
        with pytest.raises(ValueError, match=r"^lr: Tensor lr must be 1-element, got shape "
                                             r"\(2,\)"):
            getattr(gt, name)(make_params("torch"), lr=lr)
        with pytest.raises(ValueError, match=r"^param_groups\[1\]: lr: expected a number or a "
                                             r"1-element tensor, got shape \(2,\)"):
            getattr(gt, name)([{"params": make_params("torch")[:1]},
                               {"params": make_params("torch")[1:], "lr": lr}])
        opt, _, _ = torch_two_groups(name)
        opt.param_groups[1]["lr"] = lr
        before = snapshot(opt)
        with pytest.raises(ValueError, match=r"^param_groups\[1\]: lr: expected a number or a "
                                             r"1-element tensor"):
            opt.step()
        assert_unchanged(opt, before)


@pytest.mark.parametrize("front", FRONTS)
def test_string_momentum_with_nesterov(front: str) -> None:
    with pytest.raises(TypeError, match=prefix(front) + r"momentum: expected a finite number "
                                                        r">= 0, got '0\.9'$"):
        cls_of(front, "SGD")(make_params(front), momentum="0.9", nesterov=True)


@pytest.mark.parametrize("layout", ["coo", "csr"])
def test_torch_sparse_params_are_refused_at_construction(layout: str) -> None:
    """Accepted before, then refused by every step."""
    dense = torch.zeros(3, 2)
    with warnings.catch_warnings():  # (torch: "Sparse CSR tensor support is in beta state")
        warnings.simplefilter("ignore", UserWarning)
        sparse = dense.to_sparse() if layout == "coo" else dense.to_sparse_csr()
    for name in NAMES:
        with pytest.raises(ValueError, match=r"^params\[1\]: is a sparse tensor \(torch\.sparse_"
                                             + layout + r"\); gdfast steps dense tensors"):
            getattr(gt, name)([nn.Parameter(torch.zeros(2)), sparse])


def test_torch_param_with_gaps_is_refused_at_construction() -> None:
    """A view with gaps cannot be stepped in place as one block (torch.optim steps it)."""
    with pytest.raises(ValueError, match=r"^params\[0\]: has gaps or overlaps in memory"):
        gt.Adam([nn.Parameter(torch.zeros(4, 6)[:, ::2])])


@pytest.mark.parametrize(("first", "second", "names"), [
    pytest.param(slice(0, 6), slice(4, 10), ("[1]['params'][0]", "[0]['params'][0]"),
                 id="overlapping-groups"),
    pytest.param(slice(0, 6), slice(0, 6), ("[1]['params'][0]", "[0]['params'][0]"),
                 id="the-same-view-in-two-groups"),
    pytest.param(slice(2, 4), slice(0, 10), ("[1]['params'][0]", "[0]['params'][0]"),
                 id="one-inside-the-other"),
])
def test_numpy_views_sharing_memory_are_refused_at_construction(first: slice, second: slice,
                                                                names: Tuple[str, str]) -> None:
    """Two views of one array in two groups: stepped twice by one step before (now caught
    at the step too, by the kernel's aliasing check); refused where they are given, naming
    both."""
    base = np.ones(10, np.float32)
    match = (r"^param_groups" + re.escape(names[0]) + r": shares memory with param_groups"
             + re.escape(names[1]))
    with pytest.raises(ValueError, match=match):
        gdfast.SGD([{"params": [base[first]]}, {"params": [base[second]]}], lr=0.1)
    opt = gdfast.SGD([base[first]], lr=0.1)
    before = snapshot(opt)
    with pytest.raises(ValueError, match=match):
        opt.add_param_group({"params": [base[second]]})
    assert_unchanged(opt, before)


def test_numpy_adjacent_views_are_distinct_params() -> None:
    """Views that touch but do not overlap are two params, each stepped once."""
    base = np.ones(10, np.float32)
    opt = gdfast.SGD([{"params": [base[:5]]}, {"params": [base[5:]]}], lr=0.5)
    opt.step([np.ones(5, np.float32), np.ones(5, np.float32)])
    assert np.array_equal(base, np.full(10, 0.5, np.float32))


# --------------------------------------------------------------------------------------------
# channels_last (and any dense layout): stepped as flat views of their memory
# --------------------------------------------------------------------------------------------

LAYOUTS = {
    "channels_last": ((2, 3, 4, 5), lambda t: t.contiguous(memory_format=torch.channels_last)),
    "channels_last_3d": ((2, 3, 2, 3, 2),
                         lambda t: t.contiguous(memory_format=torch.channels_last_3d)),
    "transposed": ((6, 5), lambda t: t.t().contiguous().t()),
    "permuted_with_offset": ((3, 4, 5), lambda t: torch.zeros(1 + t.numel(), dtype=t.dtype).narrow(
        0, 1, t.numel()).view(5, 3, 4).permute(1, 2, 0).copy_(t)),
}


def _layout_run(name: str, dtype: Any, layout: str, steps: int, impl: Any = None,
                contiguous: bool = False, contiguous_grads: bool = False) -> Tuple[Any, Any]:
    """One param of the layout's shape, laid out so (or contiguous), stepped ``steps`` times
    with grads laid out as the param (or contiguous)."""
    shape, relayout = LAYOUTS[layout]
    gen = torch.Generator().manual_seed(0)
    wide = torch.complex128 if dtype.is_complex else torch.float64
    start = torch.randn(shape, dtype=wide, generator=gen).to(dtype)
    p = nn.Parameter(start.clone() if contiguous else relayout(start))
    opt = (impl or getattr(gt, name))([p], lr=0.01, **KWARGS.get(name, {}))
    for t in range(steps):
        gen = torch.Generator().manual_seed(10 + t)
        g = torch.randn(shape, dtype=wide, generator=gen).to(dtype)
        p.grad = g if contiguous or contiguous_grads else relayout(g)
        opt.step()
    return opt, p


@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("name", NAMES)
def test_dense_layouts_step_bitwise_as_contiguous_twins(name: str, layout: str) -> None:
    """The step is elementwise, so stepping the memory of param, grad and states in its own
    order gives the contiguous run's values exactly; states keep the param's layout (made
    with torch.zeros_like(p), as torch.optim's are)."""
    for dtype in (torch.float32, torch.complex64):
        opt, p = _layout_run(name, dtype, layout, steps=3)
        twin, q = _layout_run(name, dtype, layout, steps=3, contiguous=True)
        assert p.stride() != q.stride()
        assert torch.equal(p.detach(), q.detach())
        for key, value in twin.state[q].items():
            mine = opt.state[p][key]
            assert torch.equal(mine, value), key
            if key not in SCALARS:
                assert mine.stride() == p.stride(), f"{key} lost the param's layout"


@pytest.mark.parametrize("layout", ["channels_last", "transposed"])
@pytest.mark.parametrize("name", ["Adam", "SGD", "Rprop"])
def test_dense_layout_param_with_a_contiguous_grad(name: str, layout: str) -> None:
    """A grad laid out unlike its param is read from a copy in the param's layout."""
    _, p = _layout_run(name, torch.float32, layout, steps=3, contiguous_grads=True)
    _, q = _layout_run(name, torch.float32, layout, steps=3, contiguous=True)
    assert torch.equal(p.detach(), q.detach())


@pytest.fixture
def float64_default() -> Any:
    """torch.optim keeps step counts and scalar states in the default dtype: float64 on both
    sides, so that only the params' rounding differs (test_torch_optim_db's plain bound)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(previous)


def _within(what: str, actual: Any, expected: Any, steps: int, scale: float) -> float:
    """|actual - expected| <= 4 * steps * 2^-53 * (|expected| + scale), test_torch_optim_db's
    bound for float64 (torch and gdfast order a step's few roundings differently). Measured
    here: at most 0.10 of it (Adadelta's acc_delta; params <= 0.08, NAdam). A layout mix-up
    moves elements by O(1), ~1e15 times the bound. Returns the fraction of the bound used."""
    bound = 4 * steps * 2.0 ** -53 * (expected.abs() + scale)
    used = float(((actual - expected).abs() / bound.clamp_min(1e-300)).max())
    assert used <= 1.0, f"{what}: {used:.2f} of the bound"
    return used


@pytest.mark.usefixtures("float64_default")
@pytest.mark.parametrize("name", TORCH_OPTIM_NAMES)
def test_channels_last_matches_torch_optim(name: str) -> None:
    steps = 5
    opt, p = _layout_run(name, torch.float64, "channels_last", steps)
    ref, q = _layout_run(name, torch.float64, "channels_last", steps,
                         impl=lambda params, **kw: oracle_class(name)(params, foreach=False,
                                                                      **kw))
    assert q.is_contiguous(memory_format=torch.channels_last)
    _within("param", p.detach(), q.detach(), steps, float(q.detach().abs().max()))
    for key, value in ref.state[q].items():
        if key in ORACLE_ONLY_STATE.get(name, ()):
            continue
        if key == "step":
            assert float(opt.state[p][key]) == float(value)
        elif key in SCALARS:
            _within(key, opt.state[p][key], value, steps, 0.0)
        else:
            assert opt.state[p][key].stride() == value.stride(), key  # torch keeps it too
            _within(key, opt.state[p][key], value, steps, float(value.abs().max()))


def test_torch_optim_channels_last_checkpoint_continues_in_gdfast() -> None:
    """A state_dict of torch.optim on a channels_last model (its states channels_last too)
    loads into gdfast.torch and steps there."""
    ref, q = _layout_run("Adam", torch.float32, "channels_last", steps=2,
                         impl=lambda params, **kw: torch.optim.Adam(params, foreach=False, **kw))
    ours, p = _layout_run("Adam", torch.float32, "channels_last", steps=0)
    with torch.no_grad():
        p.copy_(q)
    ours.load_state_dict(ref.state_dict())
    assert ours.state[p]["exp_avg"].stride() == p.stride()
    before = p.detach().clone()
    p.grad = torch.ones_like(p)
    ours.step()
    assert not torch.equal(p.detach(), before)
    assert float(ours.state[p]["step"]) == 3.0


def test_state_in_another_layout_than_its_channels_last_param_changes_nothing() -> None:
    opt, p = _layout_run("Adam", torch.float32, "channels_last", steps=2)
    other = nn.Parameter(torch.randn(7))
    opt.add_param_group({"params": [other]})
    other.grad = torch.randn(7)
    opt.state[p]["exp_avg"] = opt.state[p]["exp_avg"].contiguous()
    p.grad = torch.randn(p.shape).contiguous(memory_format=torch.channels_last)
    before = snapshot(opt)
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\['params'\]\[0\]: "
                                         r"state\['exp_avg'\]: strides \(60, 20, 5, 1\) differ "
                                         r"from its param's \(60, 1, 15, 3\) \(a channels_last "
                                         r"tensor\)"):
        opt.step()
    assert_unchanged(opt, before)
