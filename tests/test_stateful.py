"""The stateful optimizers gdfast.<Name> (every class of gdfast.optimizers(), from cases.py):
torch.optim's constructors, defaults, param groups and state layout, step(grads) with None
skipping, state_dict round trips, and bitwise equality with calling gdfast.ops directly with
the right step counts, starts and scalar states.

The tests under "rejected steps" pin defects found and fixed: a rejected step must leave
params, states, step counts and scalar states as they were, in every group.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple, Type

import numpy as np
import pytest

import gdfast
from gdfast._spec import RULES
from gdfast._stepping import CONSTRUCTORS, GDFAST_OPTIONS

import cases
import reference
from cases import Case
from conftest import ORACLE_ONLY_STATE, oracle_class

SHAPES = [(7,), (3, 5), (1,), (40, 3), (130,)]
STEPS = 5
# (Muon, a matrix method with its own class, has tests/test_muon.py)
CLASSES = {name: getattr(gdfast, name) for name in gdfast.optimizers() if name != "Muon"}


def make_params(shapes: Sequence[tuple] = SHAPES, dtype: Any = np.float32, seed: int = 0,
                dtypes: Optional[Sequence[Any]] = None) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    dtypes = dtypes or [dtype] * len(shapes)
    return [rng.standard_normal(s).astype(d) for s, d in zip(shapes, dtypes)]


def make_grads(params: Sequence[np.ndarray], seed: int) -> List[np.ndarray]:
    rng = np.random.default_rng(1000 + seed)
    return [rng.standard_normal(p.shape).astype(p.dtype) for p in params]


def grad_sequence(params: Sequence[np.ndarray], steps: int = STEPS) -> List[List[np.ndarray]]:
    return [make_grads(params, s) for s in range(steps)]


def copies(arrays: Sequence[np.ndarray]) -> List[np.ndarray]:
    return [a.copy() for a in arrays]


def assert_bitwise(actual: Sequence[np.ndarray], expected: Sequence[np.ndarray],
                   what: str = "") -> None:
    assert len(actual) == len(expected)
    for i, (a, e) in enumerate(zip(actual, expected)):
        assert a.dtype == e.dtype and a.shape == e.shape, f"{what}[{i}]"
        assert a.tobytes() == e.tobytes(), f"{what}[{i}] differs: max |diff| " \
                                           f"{np.max(np.abs(a.astype(float) - e)):.3g}"


def case_of(cls: Type[gdfast.Optimizer]) -> Case:
    return cases.CLASSES[cls.__name__]


# --------------------------------------------------------------------------------------------
# A reference built from gdfast.ops: one call per parameter, step counts kept by hand
# --------------------------------------------------------------------------------------------


def ops_hyper(case: Case, group: Dict[str, Any]) -> Dict[str, Any]:
    """A param group's values as gdfast.ops keyword arguments (pairs unpacked)."""
    out = {}
    for name in case.defaults:
        if name in group:
            out[name] = group[name]
    for key, names in cases.tuple_arguments(case.defaults).items():
        if key in group:
            out.update(zip(names, group[key]))
    return out


class OpsReference:
    """What a stateful optimizer must do, spelled out with gdfast.ops calls, reading each
    group's hyperparameters at every step (so edits between steps are followed): states made
    when a step first uses them (zeros, or a hyperparameter's value: Adagrad's sum, Rprop's
    step_size), torch's step count, scalar states passed in and stored back."""

    def __init__(self, case: Case, params: List[np.ndarray]) -> None:
        self.case = case
        self.params = params
        self.state: List[Dict[str, Any]] = [{} for _ in params]

    def step(self, groups: List[Dict[str, Any]], grads: Sequence[Optional[np.ndarray]]) -> None:
        index = 0
        for group in groups:
            for _ in group["params"]:
                if grads[index] is not None:
                    self._one(group, index, grads[index])
                index += 1

    def _one(self, group: Dict[str, Any], i: int, g: np.ndarray) -> None:
        case, p, st = self.case, self.params[i], self.state[i]
        hyper = ops_hyper(case, group)
        names = case.state_names(hyper)
        made = False
        for name in names:
            if name not in st:
                st[name] = np.full_like(p, case.start(name, hyper))
                made = True
        kwargs = {name: st[name] for name in names}
        if case.step == "counted":
            st["step"] = st.get("step", 0) + 1
            kwargs["step"] = st["step"]
        elif case.step == "first_call":  # 1 on the call that makes the buffer
            kwargs["step"] = 1 if made else 2
        scalars = {name: st[name] for name in case.scalars if name in st}
        # (a class stepped without an estimate does not read one: Sophia's update_hessian is
        # False; the gradient stands in for the inputs the op requires)
        inputs = {name: g for name in case.extra_inputs}
        result = getattr(gdfast.ops, case.op)(p, g, **inputs, **kwargs, **hyper, **scalars)
        if result is not None:
            st.update(result)


def assert_state_equal(opt: gdfast.Optimizer, ref: OpsReference) -> None:
    for i, expected in enumerate(ref.state):
        actual = opt.state.get(i, {})
        assert set(actual) == set(expected), f"state[{i}] keys"
        for key, value in expected.items():
            if isinstance(value, np.ndarray):
                assert_bitwise([actual[key]], [value], f"state[{i}][{key!r}]")
            else:
                assert actual[key] == value and type(actual[key]) is type(value), key


def _configs() -> Dict[str, Tuple[Type[gdfast.Optimizer], Dict[str, Any]]]:
    """Per class: its defaults ("<Class>"), and each of its case's large variants (those that
    switch every option on) that the class can take ("<Class>-<variant>")."""
    out: Dict[str, Tuple[Type[gdfast.Optimizer], Dict[str, Any]]] = {}
    for name, cls in CLASSES.items():
        case = case_of(cls)
        out[name] = (cls, {})
        for variant_name in case.large_variants:
            hyper = case.full(case.hyper(case.variant(variant_name)))
            if all(hyper[k] == v for k, v in case.classes[name].items()):
                out[f"{name}-{variant_name}"] = (
                    cls, cases.constructor_kwargs(case, case.hyper(case.variant(variant_name)),
                                                  name))
    return out


CONFIGS = _configs()
CONFIG_IDS = list(CONFIGS)
# configs whose steps keep some state (all but plain SGD)
STATEFUL_IDS = [c for c in CONFIG_IDS if c != "SGD"]


# --------------------------------------------------------------------------------------------
# Constructors and defaults: those of torch.optim 2.13 (and lion-pytorch for Lion)
# --------------------------------------------------------------------------------------------

# torch's implementation switches (foreach, fused, capturable, differentiable) are stored too,
# as torch.optim stores them: a group's keys are the constructor's arguments.
EXPECTED_DEFAULTS = {
    "SGD": dict(lr=1e-3, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False,
                maximize=False, foreach=None, differentiable=False, fused=None),
    "Adam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, amsgrad=False,
                 maximize=False, decoupled_weight_decay=False, foreach=None,
                 capturable=False, differentiable=False, fused=None),
    "AdamW": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                  amsgrad=False, maximize=False, decoupled_weight_decay=True, foreach=None,
                  capturable=False, differentiable=False, fused=None),
    "Lion": dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0, maximize=False),
    "RMSprop": dict(lr=1e-2, momentum=0.0, alpha=0.99, eps=1e-8, centered=False,
                    weight_decay=0.0, capturable=False, foreach=None, maximize=False,
                    differentiable=False),
    "Adagrad": dict(lr=1e-2, lr_decay=0.0, eps=1e-10, weight_decay=0.0,
                    initial_accumulator_value=0.0, foreach=None, maximize=False,
                    differentiable=False, fused=None),
    "Adadelta": dict(lr=1.0, rho=0.9, eps=1e-6, weight_decay=0.0, maximize=False,
                     capturable=False, foreach=None, differentiable=False),
    "Adamax": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, foreach=None,
                   maximize=False, differentiable=False, capturable=False),
    "NAdam": dict(lr=2e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                  momentum_decay=4e-3, decoupled_weight_decay=False, maximize=False,
                  foreach=None, capturable=False, differentiable=False),
    "RAdam": dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, maximize=False,
                  foreach=None, capturable=False, decoupled_weight_decay=False,
                  differentiable=False),
    "ASGD": dict(lr=1e-2, lambd=1e-4, alpha=0.75, t0=1e6, weight_decay=0.0, foreach=None,
                 maximize=False, differentiable=False, capturable=False),
    "Rprop": dict(lr=1e-2, etas=(0.5, 1.2), step_sizes=(1e-6, 50.0), foreach=None,
                  maximize=False, differentiable=False, capturable=False),
    "Adan": dict(lr=1e-3, betas=(0.98, 0.92, 0.99), weight_decay=0.0, weight_decouple=False,
                 foreach=None, eps=1e-8, maximize=False),  # max_grad_norm=0: None, below
    "AdEMAMix": dict(lr=1e-3, betas=(0.9, 0.999, 0.9999), weight_decay=0.0,
                     weight_decouple=False, fixed_decay=False, alpha=5.0, t_alpha_beta3=0.0,
                     eps=1e-8, maximize=False, foreach=None),
    "ScheduleFreeAdamW": dict(lr=2.5e-3, betas=(0.9, 0.999), weight_decay=0.0, r=0.0,
                              weight_lr_power=2.0, warmup_steps=0, decoupling_c=0,
                              ams_bound=False, eps=1e-8, maximize=False, foreach=None,
                              train_mode=True),
    "SophiaH": dict(lr=6e-2, betas=(0.96, 0.99), weight_decay=0.0, weight_decouple=True,
                    fixed_decay=False, p=1e-2, update_period=10, num_samples=1,
                    hessian_distribution="gaussian", eps=1e-12, maximize=False, foreach=None,
                    update_hessian=False),
    "Lamb": dict(lr=1e-3, betas=(0.9, 0.999), weight_decay=0.0, weight_decouple=True,
                 fixed_decay=False, rectify=False, degenerated_to_sgd=False, n_sma_threshold=5,
                 grad_averaging=True, adam=False, pre_norm=False, eps=1e-6, foreach=None,
                 maximize=False),  # max_grad_norm=1.0 without pre_norm: None, below
}
for _defaults in EXPECTED_DEFAULTS.values():  # gdfast's own options (issues 12, 13), every class
    _defaults.update(state_dtype=None, master_weights=False, stochastic_rounding=False,
                     seed=None, optim_bits=32, min_8bit_size=4096, max_grad_norm=None,
                     clip_per_group=False, max_grad_value=None, monitor=False)


def test_every_class_has_expected_defaults() -> None:
    assert sorted(EXPECTED_DEFAULTS) == sorted(CLASSES)


@pytest.mark.parametrize("name", sorted(EXPECTED_DEFAULTS))
def test_defaults(name: str) -> None:
    opt = CLASSES[name]([np.zeros(3, np.float32)])
    assert opt.defaults == EXPECTED_DEFAULTS[name]
    group = opt.param_groups[0]
    assert {k: v for k, v in group.items() if k != "params"} == EXPECTED_DEFAULTS[name]


TORCH_NAMES = sorted(n for n in CLASSES if n != "Lion")  # (their oracles' signatures)


def _signature_parts(fn: Any) -> tuple:
    sig = inspect.signature(fn)
    positional = [(n, p.default) for n, p in sig.parameters.items()
                  if p.kind is p.POSITIONAL_OR_KEYWORD and n != "self"]
    keyword = {n: p.default for n, p in sig.parameters.items() if p.kind is p.KEYWORD_ONLY}
    return positional, keyword


# Where a group's entries differ from pytorch_optimizer's (which keeps maximize outside them).
KNOWN_DEFAULTS_DIFFERENCES = {
    "Adan": {"max_grad_norm": "0 (no clipping) is stored as None, as gdfast's clipping takes it",
             "maximize": "an entry, as in torch.optim"},
    "AdEMAMix": {"t_alpha_beta3": "None (no warmup) is stored as 0, the kernel's number",
                 "maximize": "an entry, as in torch.optim"},
    "ScheduleFreeAdamW": {"lr_max": "a scalar state of each param", "weight_sum": "the same",
                          "use_palm": "not supported (a keyword of pytorch_optimizer's)",
                          "maximize": "an entry, as in torch.optim"},
    "Lamb": {"max_grad_norm": "without pre_norm it clips nothing, and is stored as None (the "
                              "group's clipping option)",
             **{name: "an entry (pytorch_optimizer keeps it as an attribute)"
                for name in ("pre_norm", "degenerated_to_sgd", "n_sma_threshold")},
             "maximize": "an entry, as in torch.optim"},
    "SophiaH": {name: "an entry (pytorch_optimizer keeps it as an attribute)"
                for name in ("update_period", "num_samples", "hessian_distribution", "maximize")}
    | {"update_hessian": "the class's steps without an estimate (each step sets its own)"},
}


@pytest.mark.parametrize("name", TORCH_NAMES)
def test_constructor_matches_torch(name: str) -> None:
    """Same positional order and defaults as torch.optim (or the class's oracle package), and
    keyword-only options a subset of torch's with the same defaults; the defaults dicts
    agree but for KNOWN_DEFAULTS_DIFFERENCES."""
    torch = pytest.importorskip("torch")
    cls, torch_cls = CLASSES[name], oracle_class(name)
    ours_pos, ours_kw = _signature_parts(cls.__init__)
    theirs_pos, theirs_kw = _signature_parts(torch_cls.__init__)
    assert [n for n, _ in ours_pos] == [n for n, _ in theirs_pos]
    for (arg, ours), (_, theirs) in zip(ours_pos, theirs_pos):
        assert ours == theirs and type(ours) in (type(theirs), float), arg
    for arg, default in ours_kw.items():
        # (besides gdfast's own precision options, which torch's constructors lack)
        assert arg in theirs_kw and theirs_kw[arg] == default or arg in GDFAST_OPTIONS, arg

    known = KNOWN_DEFAULTS_DIFFERENCES.get(name, {})
    theirs = {k: v for k, v in torch_cls([torch.zeros(3, requires_grad=True)]).defaults.items()
              if k not in known}
    ours = {k: v for k, v in cls([np.zeros(3, np.float32)]).defaults.items()
            if k not in GDFAST_OPTIONS and k not in known}
    assert ours == {k: theirs[k] for k in ours}
    assert set(ours) == set(theirs)


def test_lion_defaults_match_lion_pytorch() -> None:
    torch = pytest.importorskip("torch")
    lion_pytorch = pytest.importorskip("lion_pytorch")
    theirs = lion_pytorch.Lion([torch.zeros(3, requires_grad=True)]).defaults
    ours = gdfast.Lion([np.zeros(3, np.float32)]).defaults
    for key in ("lr", "betas", "weight_decay"):
        assert ours[key] == theirs[key], key


@pytest.mark.parametrize("name", sorted(CLASSES))
def test_positional_arguments_in_torch_order(name: str) -> None:
    """Every argument before the first keyword-only one is taken positionally, in order."""
    cls = CLASSES[name]
    params = inspect.signature(cls.__init__).parameters
    positional = [n for n, p in params.items()
                  if p.kind is p.POSITIONAL_OR_KEYWORD and n not in ("self", "params")]
    defaults = cls([np.zeros(3, np.float32)]).defaults
    values = [defaults[n] for n in positional]
    opt = cls([np.zeros(3, np.float32)], *values)
    assert [opt.defaults[n] for n in positional] == values
    if "lr" in positional:  # a changed first argument lands in lr
        changed = cls([np.zeros(3, np.float32)], 0.5, *values[1:])
        assert positional[0] == "lr" and changed.defaults["lr"] == 0.5


def test_positional_arguments_of_the_first_classes() -> None:
    p = [np.zeros(3, np.float32)]
    sgd = gdfast.SGD(p, 0.5, 0.9, 0.1, 0.01, False)
    assert (sgd.defaults["lr"], sgd.defaults["momentum"], sgd.defaults["dampening"],
            sgd.defaults["weight_decay"], sgd.defaults["nesterov"]) == (0.5, 0.9, 0.1, 0.01, False)
    adam = gdfast.Adam(copies(p), 0.5, (0.8, 0.9), 1e-6, 0.01, True)
    assert (adam.defaults["lr"], adam.defaults["betas"], adam.defaults["eps"],
            adam.defaults["weight_decay"], adam.defaults["amsgrad"]) == (0.5, (0.8, 0.9), 1e-6,
                                                                         0.01, True)
    lion = gdfast.Lion(copies(p), 0.5, (0.8, 0.9), 0.1)
    assert (lion.defaults["lr"], lion.defaults["betas"], lion.defaults["weight_decay"]) == (
        0.5, (0.8, 0.9), 0.1)


@pytest.mark.parametrize("name", sorted(n for n, c in CLASSES.items() if any(
    key in inspect.signature(c.__init__).parameters for key in cases.TUPLES)))
def test_pairs_given_as_lists_are_stored(name: str) -> None:
    """A pair given as a list steps like the tuple; Adam's and AdamW's betas are stored as a
    tuple, as torch stores them (torch keeps the other classes' lists as given)."""
    cls = CLASSES[name]
    defaults = cls([np.zeros(3, np.float32)]).defaults
    for key in cases.TUPLES:
        if key in defaults:
            opt = cls([np.zeros(3, np.float32)], **{key: list(defaults[key])})
            stored = opt.param_groups[0][key]
            assert tuple(stored) == defaults[key]
            if name in ("Adam", "AdamW"):
                assert type(stored) is tuple
            opt.step([np.ones(3, np.float32)])


# --------------------------------------------------------------------------------------------
# Param groups
# --------------------------------------------------------------------------------------------


def test_list_of_arrays_makes_one_group_of_the_same_objects() -> None:
    params = make_params()
    opt = gdfast.Adam(params, lr=0.01)
    assert len(opt.param_groups) == 1
    assert all(a is b for a, b in zip(opt.param_groups[0]["params"], params))
    assert opt.param_groups[0]["lr"] == 0.01


def test_param_group_dicts_with_overrides() -> None:
    params = make_params()
    opt = gdfast.Adam([{"params": params[:2]},
                       {"params": params[2:], "lr": 0.5, "betas": (0.5, 0.6), "amsgrad": True}],
                      lr=0.01, eps=1e-6)
    g0, g1 = opt.param_groups
    assert g0["lr"] == 0.01 and g0["betas"] == (0.9, 0.999) and g0["amsgrad"] is False
    assert g1["lr"] == 0.5 and g1["betas"] == (0.5, 0.6) and g1["amsgrad"] is True
    assert g0["eps"] == g1["eps"] == 1e-6  # the constructor's value is every group's default
    assert all(a is b for a, b in zip(g0["params"] + g1["params"], params))


def test_a_group_given_a_single_array() -> None:
    p = np.ones(4, np.float32)
    opt = gdfast.SGD([{"params": p}], lr=0.5)
    opt.step([np.ones(4, np.float32)])
    assert np.array_equal(p, np.full(4, 0.5, np.float32))


# Another valid value for each constructor argument a group may override.
OVERRIDES: Dict[str, Any] = {
    "lr": 0.003, "weight_decay": 0.2, "betas": (0.7, 0.95, 0.98), "etas": (0.4, 1.3),
    "step_sizes": (1e-5, 10.0), "momentum": 0.5, "alpha": 0.9, "rho": 0.8, "eps": 1e-6,
    "lr_decay": 0.1, "initial_accumulator_value": 0.2, "momentum_decay": 5e-3, "lambd": 1e-3,
    "t0": 3.0,
}


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_per_group_overrides_step_like_ops(config: str) -> None:
    """The second group overrides every hyperparameter its class has (momentum only where the
    config uses it: SGD's nesterov needs it)."""
    cls, kwargs = CONFIGS[config]
    params = make_params()
    defaults = cls([np.zeros(1, np.float32)], **kwargs).defaults
    override = {k: v[:len(defaults[k])] if isinstance(v, tuple) else v
                for k, v in OVERRIDES.items() if k in defaults}
    if cls is gdfast.SGD and not kwargs.get("momentum"):
        del override["momentum"]
    opt = cls([{"params": params[:2]}, {"params": params[2:], **override}], **kwargs)
    ref = OpsReference(case_of(cls), copies(params))
    for grads in grad_sequence(params):
        opt.step(grads)
        ref.step(opt.param_groups, grads)
    assert_bitwise(params, ref.params, "param")
    assert_state_equal(opt, ref)


def test_add_param_group() -> None:
    params = make_params()
    opt = gdfast.Lion(params[:3], lr=0.01)
    opt.add_param_group({"params": params[3:], "lr": 0.1})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["betas"] == (0.9, 0.99)
    ref = OpsReference(cases.LION, copies(params))
    for grads in grad_sequence(params):
        opt.step(grads)
        ref.step(opt.param_groups, grads)
    assert_bitwise(params, ref.params, "param")


# --------------------------------------------------------------------------------------------
# Stateful == gdfast.ops with the right step counts (bitwise)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_stateful_equals_ops(config: str, dtype: Any) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params(dtype=dtype)
    opt = cls(params, **kwargs)
    ref = OpsReference(case_of(cls), copies(params))
    for grads in grad_sequence(params):
        opt.step(grads)
        ref.step(opt.param_groups, grads)
    assert_bitwise(params, ref.params, "param")
    assert_state_equal(opt, ref)


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_stateful_equals_ops_on_every_isa_and_thread_count(config: str, isa: str,
                                                            threads: int) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params(shapes=[(50_000,), (17,), (33_000,)])
    opt = cls(params, **kwargs)
    ref = OpsReference(case_of(cls), copies(params))
    for grads in grad_sequence(params, steps=3):
        opt.step(grads)
        ref.step(opt.param_groups, grads)
    assert_bitwise(params, ref.params, "param")


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_mixed_float32_float64_params_in_one_group(config: str) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params(dtypes=[np.float32, np.float64, np.float32, np.float64, np.float64])
    opt = cls(params, **kwargs)
    ref = OpsReference(case_of(cls), copies(params))
    for grads in grad_sequence(params):
        opt.step(grads)
        ref.step(opt.param_groups, grads)
    assert_bitwise(params, ref.params, "param")
    assert_state_equal(opt, ref)
    for i, p in enumerate(params):
        for value in opt.state.get(i, {}).values():
            if isinstance(value, np.ndarray):
                assert value.dtype == p.dtype and value.shape == p.shape


# --------------------------------------------------------------------------------------------
# None skips a parameter
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_none_grad_skips_the_param(config: str) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params()
    opt = cls(params, **kwargs)
    ref = OpsReference(case_of(cls), copies(params))
    # param 1 skips steps 0-2, param 3 skips step 1 only: step counts drift apart
    skip = {0: {1}, 1: {1, 3}, 2: {1}}
    for s, grads in enumerate(grad_sequence(params)):
        grads = [None if i in skip.get(s, ()) else g for i, g in enumerate(grads)]
        before = {i: params[i].tobytes() for i in skip.get(s, ())}
        state_before = copy.deepcopy(opt.state_dict()["state"])
        opt.step(grads)
        ref.step(opt.param_groups, grads)
        for i in skip.get(s, ()):
            assert params[i].tobytes() == before[i], f"skipped param {i} was written"
            if i in state_before:
                after = opt.state[i]
                assert set(after) == set(state_before[i])
                for key, value in state_before[i].items():
                    if isinstance(value, np.ndarray):
                        assert after[key].tobytes() == value.tobytes(), key
                    else:
                        assert after[key] == value, key  # the step count did not move
            else:
                assert i not in opt.state, f"skipped param {i} got state"
    assert_bitwise(params, ref.params, "param")
    assert_state_equal(opt, ref)
    if case_of(cls).step == "counted":
        assert [opt.state[i]["step"] for i in range(len(params))] == [5, 2, 5, 4, 5]


def test_all_none_is_a_no_op() -> None:
    params = make_params()
    saved = copies(params)
    opt = gdfast.Adam(params)
    opt.step([None] * len(params))
    assert_bitwise(params, saved, "param")
    assert opt.state == {}


def test_grads_may_be_a_tuple_or_generator() -> None:
    params = make_params()
    expected = copies(params)
    grads = make_grads(params, 0)
    gdfast.SGD(expected, lr=0.1).step(list(grads))
    gdfast.SGD(params[:2], lr=0.1).step(tuple(grads[:2]))
    opt = gdfast.SGD(params[2:], lr=0.1)
    opt.step(g for g in grads[2:])
    assert_bitwise(params, expected, "param")


# --------------------------------------------------------------------------------------------
# State layout (torch's names; ints for step)
# --------------------------------------------------------------------------------------------


def expected_keys(cls: Type[gdfast.Optimizer], kwargs: Dict[str, Any]) -> set:
    """torch's state keys after a step: the states the options use, "step" where torch counts
    steps, the scalar states."""
    case = case_of(cls)
    group = cls([np.zeros(1, np.float32)], **kwargs).param_groups[0]
    keys = set(case.state_names(ops_hyper(case, group))) | set(case.scalars)
    return keys | ({"step"} if case.step == "counted" else set())


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_state_layout(config: str) -> None:
    """torch's names; state arrays of the param's dtype and shape, the optimizer's own;
    "step" an int; scalar states (NAdam's mu_product, ASGD's eta and mu) Python floats."""
    cls, kwargs = CONFIGS[config]
    keys = expected_keys(cls, kwargs)
    params = make_params()
    opt = cls(params, **kwargs)
    assert opt.state == {}
    for grads in grad_sequence(params, steps=3):
        opt.step(grads)
    if not keys:  # plain SGD keeps nothing
        assert opt.state == {}
        return
    scalars = set(case_of(cls).scalars)
    assert sorted(opt.state) == list(range(len(params)))
    for i, p in enumerate(params):
        st = opt.state[i]
        assert set(st) == keys
        for key in keys - {"step"} - scalars:
            assert isinstance(st[key], np.ndarray)
            assert st[key].dtype == p.dtype and st[key].shape == p.shape
            assert st[key].flags.c_contiguous and st[key].flags.writeable
            assert not np.shares_memory(st[key], p)
        if "step" in keys:
            assert type(st["step"]) is int and st["step"] == 3
        for key in scalars:
            assert type(st[key]) is float and math.isfinite(st[key]), key


# (Lion: lion-pytorch's states are torch's; SophiaH: pytorch_optimizer's first step needs a
# graph of the gradients, test_sophia.py compares its state layout)
@pytest.mark.parametrize("config", [c for c in CONFIG_IDS
                                    if not c.startswith(("Lion", "SophiaH"))])
def test_state_layout_matches_torch(config: str) -> None:
    """The same constructor arguments in torch.optim give the same state keys."""
    torch = pytest.importorskip("torch")
    cls, kwargs = CONFIGS[config]
    params = [torch.zeros(4, requires_grad=True)]
    opt = oracle_class(cls.__name__)(params, foreach=False, **kwargs)
    for _ in range(2):
        params[0].grad = torch.ones(4)
        opt.step()
    theirs = set(opt.state[params[0]])
    # pytorch_optimizer keeps the count and scalar states per group; gdfast per param
    theirs |= {key for key in ("step", *CONSTRUCTORS[cls.__name__].scalar_names)
               if key in opt.param_groups[0]}
    theirs -= ORACLE_ONLY_STATE.get(cls.__name__, frozenset())
    assert theirs == expected_keys(cls, kwargs)


def test_state_is_indexed_across_groups() -> None:
    params = make_params()
    opt = gdfast.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.1}])
    grads: List[Optional[np.ndarray]] = list(make_grads(params, 0))
    grads[0] = None
    opt.step(grads)
    assert sorted(opt.state) == [1, 2, 3, 4]
    assert opt.state[2]["exp_avg"].shape == params[2].shape


def test_state_arrays_are_the_optimizers_working_arrays() -> None:
    """opt.state holds the live arrays (as torch's does): editing one affects the next step."""
    params = make_params()
    opt = gdfast.SGD(params, lr=0.1, momentum=0.9)
    grads = grad_sequence(params, steps=2)
    opt.step(grads[0])
    opt.state[0]["momentum_buffer"][...] = 0
    ref = OpsReference(cases.SGD, copies(params))
    ref.state = [{"momentum_buffer": opt.state[i]["momentum_buffer"].copy()}
                 for i in range(len(params))]
    opt.step(grads[1])
    ref.step(opt.param_groups, grads[1])
    assert_bitwise(params, ref.params, "param")


# --------------------------------------------------------------------------------------------
# state_dict / load_state_dict
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_state_dict_round_trip_continues_bitwise(config: str) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params(dtypes=[np.float32, np.float64, np.float32, np.float32, np.float64])
    opt = cls([{"params": params[:3]}, {"params": params[3:], "lr": 0.02}], **kwargs)
    seq = grad_sequence(params, steps=6)
    for s, grads in enumerate(seq[:3]):
        opt.step([None if (s == 0 and i == 4) else g for i, g in enumerate(grads)])

    sd = opt.state_dict()
    twins = copies(params)
    fresh = cls([{"params": twins[:3]}, {"params": twins[3:]}])  # default hyperparameters
    fresh.load_state_dict(sd)
    assert fresh.param_groups[1]["lr"] == 0.02
    assert {k: v for k, v in fresh.param_groups[0].items() if k != "params"} == \
        {k: v for k, v in opt.param_groups[0].items() if k != "params"}
    assert all(a is b for a, b in zip(fresh.param_groups[0]["params"], twins[:3]))
    _assert_state_dicts_equal(fresh.state_dict(), sd)

    for grads in seq[3:]:
        opt.step(grads)
        fresh.step(copies(grads))
    assert_bitwise(twins, params, "param")
    _assert_state_dicts_equal(fresh.state_dict(), opt.state_dict())


def _assert_state_dicts_equal(a: Dict[str, Any], b: Dict[str, Any]) -> None:
    assert a["param_groups"] == b["param_groups"]
    _assert_states_equal(a["state"], b["state"])


def _assert_states_equal(a: Dict[int, Any], b: Dict[int, Any]) -> None:
    assert set(a) == set(b)
    for i in a:
        assert set(a[i]) == set(b[i]), i
        for key, value in a[i].items():
            other = b[i][key]
            if isinstance(value, np.ndarray):
                assert value.dtype == other.dtype and value.tobytes() == other.tobytes()
            else:
                assert value == other and type(value) is type(other)


def test_state_dict_layout() -> None:
    params = make_params()
    opt = gdfast.Adam([{"params": params[:2]}, {"params": params[2:], "lr": 0.1}])
    opt.step(make_grads(params, 0))
    sd = opt.state_dict()
    assert set(sd) == {"state", "param_groups"}
    assert sd["param_groups"][0]["params"] == [0, 1]
    assert sd["param_groups"][1]["params"] == [2, 3, 4]
    assert sd["param_groups"][1]["lr"] == 0.1
    assert set(sd["state"]) == {0, 1, 2, 3, 4}
    assert set(sd["state"][3]) == {"exp_avg", "exp_avg_sq", "step"}


@pytest.mark.parametrize("config", STATEFUL_IDS)
def test_state_dict_arrays_are_copies(config: str) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params()
    opt = cls(params, **kwargs)
    twin = cls(copies(params), **kwargs)
    seq = grad_sequence(params, steps=4)
    for grads in seq[:2]:
        opt.step(grads)
        twin.step(grads)

    # mutating a state_dict taken from the optimizer does not reach the optimizer
    sd = opt.state_dict()
    for st in sd["state"].values():
        for key, value in st.items():
            if isinstance(value, np.ndarray):
                assert not any(np.shares_memory(value, a) for s in opt.state.values()
                               for a in s.values() if isinstance(a, np.ndarray))
                value[...] = 123.0
            else:
                st[key] = 99
    sd["param_groups"][0]["lr"] = 7.0
    assert opt.param_groups[0]["lr"] == kwargs.get("lr", opt.defaults["lr"])

    # nor does mutating the state_dict after it was loaded
    loaded_params = copies(twin.param_groups[0]["params"])
    loaded = cls(loaded_params, **kwargs)
    sd2 = twin.state_dict()
    loaded.load_state_dict(sd2)
    for st in sd2["state"].values():
        for value in st.values():
            if isinstance(value, np.ndarray):
                value[...] = -5.0
    sd2["param_groups"][0]["lr"] = 7.0
    if "betas" in sd2["param_groups"][0]:
        sd2["param_groups"][0]["betas"] = (0.1, 0.2)

    for grads in seq[2:]:
        opt.step(grads)
        twin.step(grads)
        loaded.step(grads)
    assert_bitwise(params, twin.param_groups[0]["params"], "param")
    assert_bitwise(loaded_params, twin.param_groups[0]["params"], "param")


def test_load_state_dict_converts_to_the_params_dtype() -> None:
    p32 = make_params(dtype=np.float32)
    opt = gdfast.Adam(p32)
    opt.step(make_grads(p32, 0))
    p64 = make_params(dtype=np.float64)
    other = gdfast.Adam(p64)
    other.load_state_dict(opt.state_dict())
    for i, p in enumerate(p64):
        assert other.state[i]["exp_avg"].dtype == np.float64
        assert np.array_equal(other.state[i]["exp_avg"], opt.state[i]["exp_avg"])
    other.step(make_grads(p64, 1))


def test_load_state_dict_with_wrong_groups_or_shapes_changes_nothing() -> None:
    params = make_params()
    opt = gdfast.Adam(params)
    opt.step(make_grads(params, 0))
    sd = opt.state_dict()

    target = gdfast.Adam(copies(params), lr=0.5)
    target.step(make_grads(params, 1))
    before = target.state_dict()

    two_groups = copy.deepcopy(sd)
    two_groups["param_groups"] = [dict(sd["param_groups"][0], params=[0, 1]),
                                  dict(sd["param_groups"][0], params=[2, 3, 4])]
    with pytest.raises(ValueError, match=r"^state_dict: has 2 param groups, optimizer has 1"):
        target.load_state_dict(two_groups)

    short = copy.deepcopy(sd)
    short["param_groups"][0]["params"] = [0, 1, 2]
    with pytest.raises(ValueError, match=r"^state_dict: param group 0 has 3 params, "
                                         r"optimizer's has 5"):
        target.load_state_dict(short)

    bad_shape = copy.deepcopy(sd)
    bad_shape["state"][4]["exp_avg_sq"] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"^state_dict\['state'\]\[4\]\['exp_avg_sq'\]: shape "
                                         r"\(3,\) does not match its param's \(130,\)"):
        target.load_state_dict(bad_shape)

    bad_lr = copy.deepcopy(sd)
    bad_lr["param_groups"][0]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"^state_dict\['param_groups'\]\[0\]: lr: expected a "
                                         r"finite number >= 0, got -1\.0"):
        target.load_state_dict(bad_lr)

    _assert_state_dicts_equal(target.state_dict(), before)


# --------------------------------------------------------------------------------------------
# Editing param_groups between steps (an LR scheduler)
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("config", CONFIG_IDS)
def test_editing_param_groups_between_steps_takes_effect(config: str) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params()
    opt = cls([{"params": params[:2]}, {"params": params[2:]}], **kwargs)
    ref = OpsReference(case_of(cls), copies(params))
    for s, grads in enumerate(grad_sequence(params, steps=6)):
        for group in opt.param_groups:
            group["lr"] *= 0.5  # exponential decay, as torch's ExponentialLR does
        if s == 3:
            if "weight_decay" in opt.param_groups[1]:
                opt.param_groups[1]["weight_decay"] = 0.05
            if "betas" in opt.param_groups[1]:
                betas = opt.param_groups[1]["betas"]
                opt.param_groups[1]["betas"] = (0.5, 0.9, 0.95)[:len(betas)]
        opt.step(grads)
        ref.step(opt.param_groups, grads)
    assert_bitwise(params, ref.params, "param")
    assert_state_equal(opt, ref)


def test_lr_zero_after_edit_freezes_params() -> None:
    params = make_params()
    opt = gdfast.Adam(params, lr=0.1)
    opt.step(make_grads(params, 0))
    opt.param_groups[0]["lr"] = 0.0
    saved = copies(params)
    opt.step(make_grads(params, 1))
    assert_bitwise(params, saved, "param")
    assert opt.state[0]["step"] == 2


# --------------------------------------------------------------------------------------------
# Invalid construction and invalid steps
# --------------------------------------------------------------------------------------------

BAD_HYPER = [
    (gdfast.SGD, dict(lr=-0.1), ValueError, r"lr: expected a finite number >= 0, got -0\.1"),
    (gdfast.SGD, dict(lr=float("nan")), ValueError, "lr: expected a finite number >= 0"),
    (gdfast.SGD, dict(lr=True), (TypeError, ValueError), "lr: expected a finite number"),
    (gdfast.SGD, dict(lr=None), TypeError, "lr: expected a finite number >= 0, got None"),
    (gdfast.SGD, dict(momentum=-0.5), ValueError, "momentum: expected a finite number >= 0"),
    (gdfast.SGD, dict(momentum=0.9, dampening=1.5), ValueError,
     "dampening: expected a finite number >= 0 and <= 1"),
    (gdfast.SGD, dict(weight_decay=-1e-4), ValueError, "weight_decay: expected a finite"),
    (gdfast.SGD, dict(weight_decay=float("inf")), ValueError, "weight_decay: expected a finite"),
    (gdfast.Adam, dict(lr=float("inf")), ValueError, "lr: expected a finite number >= 0"),
    (gdfast.Adam, dict(betas=(1.0, 0.999)), ValueError,
     r"beta1: expected a finite number >= 0 and < 1, got 1\.0"),
    (gdfast.Adam, dict(betas=(0.9, -0.1)), ValueError, "beta2: expected a finite number >= 0"),
    (gdfast.Adam, dict(betas=(0.9, float("nan"))), ValueError, "beta2: expected a finite"),
    (gdfast.Adam, dict(eps=0.0), ValueError, r"eps: expected a finite number > 0, got 0\.0"),
    (gdfast.Adam, dict(eps=-1e-8), ValueError, "eps: expected a finite number > 0"),
    (gdfast.Adam, dict(weight_decay=-0.01), ValueError, "weight_decay: expected a finite"),
    (gdfast.AdamW, dict(weight_decay=float("nan")), ValueError, "weight_decay: expected"),
    (gdfast.AdamW, dict(betas=(0.9, 1.0)), ValueError, "beta2: expected a finite number"),
    (gdfast.Lion, dict(lr=-1e-4), ValueError, "lr: expected a finite number >= 0"),
    (gdfast.Lion, dict(betas=(1.5, 0.99)), ValueError,
     r"beta1: expected a finite number >= 0 and <= 1, got 1\.5"),
    (gdfast.Lion, dict(betas=(0.9, -0.01)), ValueError, "beta2: expected a finite number"),
    (gdfast.Lion, dict(weight_decay=-1.0), ValueError, "weight_decay: expected a finite"),
]


def _registry_bad_hyper() -> List[Any]:
    """For every class and hyperparameter: a value just out of its registry range, passed as
    the constructor takes it (a pair member inside its pair)."""
    out = []
    pair_of = {m: (key, i) for key, names in cases.TUPLES.items() for i, m in enumerate(names)}
    for name, cls in CLASSES.items():
        defaults = cls([np.zeros(1, np.float32)]).defaults
        for f in RULES[case_of(cls).name].options:
            if f.kind != "real" or f.name in case_of(cls).classes[name]:
                continue
            r = f.range
            values = [float("nan")] + ([r.lo - 0.5] if math.isfinite(r.lo) else []) + (
                [r.hi + 0.5] if math.isfinite(r.hi) else [])
            for value in values:
                if f.name in pair_of:
                    key, i = pair_of[f.name]
                    pair = list(defaults[key])
                    pair[i] = value
                    kwargs: Dict[str, Any] = {key: tuple(pair)}
                else:
                    kwargs = {f.name: value}
                what = (f"{f.name}: expected {re.escape(r.describe())}, "
                        f"got {re.escape(repr(value))}$")
                out.append((cls, kwargs, ValueError, what))
    return out


def _bad_hyper_params() -> List[Any]:
    out = []
    for cls, kwargs, exc, what in BAD_HYPER + _registry_bad_hyper():
        label = ",".join(f"{k}={v!r}" for k, v in kwargs.items())
        out.append(pytest.param(cls, kwargs, exc, what, id=f"{cls.__name__}-{label}"))
    return out


@pytest.mark.parametrize(("cls", "kwargs", "exc", "what"), _bad_hyper_params())
def test_invalid_hyperparameter_raises_at_construction(cls: Type[gdfast.Optimizer],
                                                       kwargs: Dict[str, Any], exc: Any,
                                                       what: str) -> None:
    with pytest.raises(exc, match=r"^param_groups\[0\]: " + what):
        cls([np.zeros(3, np.float32)], **kwargs)


@pytest.mark.parametrize(("cls", "kwargs", "exc", "what"), _bad_hyper_params())
def test_invalid_group_override_raises_at_construction(cls: Type[gdfast.Optimizer],
                                                       kwargs: Dict[str, Any], exc: Any,
                                                       what: str) -> None:
    params = make_params()
    with pytest.raises(exc, match=r"^param_groups\[1\]: " + what):
        cls([{"params": params[:2]}, {"params": params[2:], **kwargs}])


@pytest.mark.parametrize(("cls", "kwargs", "exc", "what"), _bad_hyper_params())
def test_group_edited_to_invalid_value_raises_at_step(cls: Type[gdfast.Optimizer],
                                                      kwargs: Dict[str, Any], exc: Any,
                                                      what: str) -> None:
    params = make_params()
    opt = cls(params)
    opt.step(make_grads(params, 0))
    saved, state = copies(params), copy.deepcopy(opt.state_dict())
    opt.param_groups[0].update(kwargs)
    with pytest.raises(exc, match=r"^param_groups\[0\]: " + what):
        opt.step(make_grads(params, 1))
    assert_bitwise(params, saved, "param")
    _assert_states_equal(opt.state_dict()["state"], state["state"])


@pytest.mark.parametrize("kwargs", [dict(nesterov=True, momentum=0.0),
                                    dict(nesterov=True, momentum=0.9, dampening=0.1)],
                         ids=["no-momentum", "dampening"])
def test_sgd_nesterov_needs_momentum_and_no_dampening(kwargs: Dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=r"nesterov: requires momentum > 0 and dampening == 0"):
        gdfast.SGD([np.zeros(3, np.float32)], **kwargs)
    params = make_params()
    opt = gdfast.SGD(params, lr=0.1, momentum=0.9)
    opt.param_groups[0].update(kwargs)
    saved = copies(params)
    with pytest.raises(ValueError, match=r"nesterov: requires momentum > 0 and dampening == 0"):
        opt.step(make_grads(params, 0))
    assert_bitwise(params, saved, "param")


@pytest.mark.parametrize(("cls", "override"), [
    pytest.param(gdfast.SGD, dict(nesterov=True, momentum=0.9, dampening=0.5), id="nesterov"),
    pytest.param(gdfast.Adam, dict(betas=(0.9, 0.99, 0.999)), id="three-betas"),
])
def test_group_structure_errors_name_the_group(cls: Type[gdfast.Optimizer],
                                               override: Dict[str, Any]) -> None:
    params = make_params()
    with pytest.raises(ValueError, match=r"^param_groups\[1\]: "):
        cls([{"params": params[:2]}, {"params": params[2:], **override}], lr=0.1)


def _pair_params() -> List[Any]:
    return [pytest.param(name, key, value, id=f"{name}-{key}-{len(value)}")
            for name, cls in CLASSES.items() for key in cases.TUPLES
            if key in inspect.signature(cls.__init__).parameters
            for value in [(0.9,), (0.9, 0.99, 0.999, 0.9999)]]


@pytest.mark.parametrize(("name", "key", "value"), _pair_params())
def test_tuples_must_have_their_length(name: str, key: str, value: tuple) -> None:
    names = cases.tuple_arguments(case_of(CLASSES[name]).defaults)[key]
    size = "a pair" if len(names) == 2 else "a triple"
    with pytest.raises(ValueError, match=rf"{key}: expected {size} \({', '.join(names)}\), "
                                         r"got \(0\.9"):
        CLASSES[name]([np.zeros(3, np.float32)], **{key: value})


def test_scalar_betas_is_rejected_with_a_clear_message() -> None:
    with pytest.raises((TypeError, ValueError), match=r"betas: expected a pair"):
        gdfast.Adam([np.zeros(3, np.float32)], betas=0.9)  # type: ignore[arg-type]


def test_empty_params_raises() -> None:
    for cls in CLASSES.values():
        with pytest.raises(ValueError, match=r"^params: optimizer got an empty parameter list"):
            cls([])


def test_same_array_twice_raises() -> None:
    p = np.zeros(3, np.float32)
    q = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\['params'\]\[2\]: appears in more "
                                         r"than one place"):
        gdfast.Adam([p, q, p])
    with pytest.raises(ValueError, match=r"^param_groups\[1\]\['params'\]\[0\]: appears in more "
                                         r"than one place"):
        gdfast.Adam([{"params": [p, q]}, {"params": [p]}])
    opt = gdfast.Adam([p])
    with pytest.raises(ValueError, match=r"^param_groups\[1\]\['params'\]\[0\]: appears"):
        opt.add_param_group({"params": [p]})
    assert len(opt.param_groups) == 1


def test_two_views_of_one_array_are_rejected_at_construction() -> None:
    """Distinct objects, same memory: not caught by identity, but by comparing their memory
    (tests/test_bad_input_stateful.py: across groups and in add_param_group too)."""
    p = np.ones(6, np.float32)
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\['params'\]\[1\]: shares memory "
                                         r"with param_groups\[0\]\['params'\]\[0\]"):
        gdfast.SGD([p, p[:]], lr=0.1)


@pytest.mark.parametrize(("param", "exc", "what"), [
    pytest.param([1.0, 2.0], TypeError, r"expected a numpy\.ndarray, got list", id="list"),
    pytest.param(np.zeros(3, np.complex64), TypeError,
                 r"expected float32 or float64 \(or bfloat16, float16\), got complex64",
                 id="complex64"),
    pytest.param(np.zeros(3, np.int64), TypeError,
                 r"expected float32 or float64 \(or bfloat16, float16\), got int64", id="int64"),
    pytest.param(np.zeros(3, ">f4"), TypeError,
                 r"expected float32 or float64 \(or bfloat16, float16\), got >f4",
                 id="big-endian"),
    pytest.param(np.zeros((4, 4), np.float32).T[:2], ValueError, "must be C-contiguous",
                 id="non-contiguous"),
    pytest.param(np.zeros(6, np.float32)[::2], ValueError, "must be C-contiguous", id="strided"),
])
def test_bad_param_raises_at_construction(param: Any, exc: Any, what: str) -> None:
    good = np.zeros(3, np.float32)
    with pytest.raises(exc, match=r"^param_groups\[0\]\['params'\]\[1\]: " + what):
        gdfast.SGD([good, param])


def test_read_only_param_raises_at_construction() -> None:
    p = np.zeros(3, np.float32)
    p.flags.writeable = False
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\['params'\]\[0\]: is read-only"):
        gdfast.Lion([p])


@pytest.mark.parametrize("count", [0, 4, 6])
def test_wrong_number_of_grads_raises(count: int) -> None:
    params = make_params()
    opt = gdfast.Adam(params)
    saved = copies(params)
    grads = (make_grads(params, 0) * 2)[:count]
    with pytest.raises(ValueError, match=rf"^grads: expected 5 entries \(one per param\), "
                                         rf"got {count}$"):
        opt.step(grads)
    assert_bitwise(params, saved, "param")
    assert opt.state == {}


@pytest.mark.parametrize("config", sorted(CLASSES))
def test_bad_grad_raises_naming_the_problem(config: str) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params()
    opt = cls(params, **kwargs)
    saved = copies(params)
    grads = make_grads(params, 0)
    grads[0] = grads[0].astype(np.float64)
    with pytest.raises(TypeError, match=r"grads\[0\]: expected float32 like its param, "
                                        r"got float64"):
        opt.step(grads)
    assert_bitwise(params, saved, "param")


# --- rejected steps -------------------------------------------------------------------------


@pytest.mark.parametrize("problem", ["invalid-lr", "bad-grad-shape"])
def test_rejected_step_writes_no_group(problem: str) -> None:
    params = make_params()
    opt = gdfast.SGD([{"params": params[:2]}, {"params": params[2:]}], lr=0.1)
    saved = copies(params)
    grads = make_grads(params, 0)
    if problem == "invalid-lr":
        opt.param_groups[1]["lr"] = -1.0
        exc, match = ValueError, r"param_groups\[1\]: lr"
    else:
        grads[3] = np.zeros(7, np.float32)
        exc, match = ValueError, "does not match"
    with pytest.raises(exc, match=match):
        opt.step(grads)
    assert_bitwise(params, saved, "param")


def test_bad_grad_error_names_its_index_in_grads() -> None:
    params = make_params()
    opt = gdfast.SGD(params, lr=0.1)
    grads: List[Optional[np.ndarray]] = list(make_grads(params, 0))
    grads[1] = None
    grads[2] = np.zeros(4, np.float32)  # params[2] has shape (1,)
    with pytest.raises(ValueError, match=r"grads?\[2\]"):
        opt.step(grads)


def test_sgd_after_a_rejected_step_equals_a_fresh_first_step() -> None:
    kwargs = dict(lr=0.1, momentum=0.9, dampening=0.5)
    p = np.ones(1000, np.float32)
    opt = gdfast.SGD([p], **kwargs)
    with pytest.raises(ValueError, match="does not match"):
        opt.step([np.ones(999, np.float32)])
    g = np.ones(1000, np.float32)
    opt.step([g])
    expected = np.ones(1000, np.float32)
    gdfast.SGD([expected], **kwargs).step([g])
    assert_bitwise([p], [expected], "param")


@pytest.mark.parametrize("config", STATEFUL_IDS)
def test_after_a_rejected_step_training_continues_as_if_it_never_happened(config: str) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params()
    twins = copies(params)
    opt, twin = cls(params, **kwargs), cls(twins, **kwargs)
    seq = grad_sequence(params, steps=3)
    opt.step(seq[0])
    twin.step(seq[0])
    bad = list(seq[1])
    bad[-1] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="does not match"):
        opt.step(bad)
    for grads in seq[1:]:
        opt.step(grads)
        twin.step(grads)
    assert_bitwise(params, twins, "param")


@pytest.mark.parametrize("config", STATEFUL_IDS)
def test_rejected_first_step_leaves_no_state(config: str) -> None:
    cls, kwargs = CONFIGS[config]
    params = make_params()
    opt = cls(params, **kwargs)
    grads = make_grads(params, 0)
    grads[-1] = np.zeros(3, np.float32)
    with pytest.raises(ValueError, match="does not match"):
        opt.step(grads)
    assert opt.state == {}


def test_repr_lists_groups() -> None:
    opt = gdfast.AdamW([np.zeros(3, np.float32)], lr=0.5)
    text = repr(opt)
    assert text.startswith("AdamW (") and "Parameter Group 0" in text and "lr: 0.5" in text


def _rejection_params() -> List[Any]:
    out = []
    for config in CONFIG_IDS:
        case = case_of(CONFIGS[config][0])
        problems = ["invalid-lr", "bad-grad"] + [f"invalid-combination-{k}"
                                                 for k in range(len(case.invalid))]
        out += [pytest.param(config, problem, id=f"{config}-{problem}") for problem in problems]
    return out


@pytest.mark.parametrize(("config", "problem"), _rejection_params())
def test_rejected_step_changes_no_group(config: str, problem: str) -> None:
    """All or nothing: an invalid hyperparameter (or option combination) in the LAST group,
    or a bad gradient of its last param, leaves every group's params and states (arrays,
    step counts, scalar states) bitwise as they were; once repaired, training goes on as if
    the rejected step had never been tried."""
    cls, kwargs = CONFIGS[config]
    case = case_of(cls)
    params = make_params()
    twins = copies(params)
    opt = cls([{"params": params[:2]}, {"params": params[2:]}], **kwargs)
    twin = cls([{"params": twins[:2]}, {"params": twins[2:]}], **kwargs)
    seq = grad_sequence(params, steps=4)
    for grads in seq[:2]:  # states, counts and scalar states exist
        opt.step(grads)
        twin.step(copies(grads))
    saved_params, saved = copies(params), copy.deepcopy(opt.state_dict())
    last = opt.param_groups[1]
    restore = {k: v for k, v in last.items() if k != "params"}
    grads = list(seq[2])
    if problem == "invalid-lr":
        last["lr"] = -1.0
        match = r"^param_groups\[1\]: lr: "
    elif problem == "bad-grad":
        grads[-1] = np.zeros(3, np.float32)
        match = r"^grads\[4\]: shape \(3,\) does not match"
    else:
        values, message = case.invalid[int(problem.rsplit("-", 1)[1])]
        last.update(cases.constructor_kwargs(case, values))
        match = r"^param_groups\[1\]: " + re.escape(message)
    with pytest.raises(ValueError, match=match):
        opt.step(grads)
    assert_bitwise(params, saved_params, "param")
    _assert_states_equal(opt.state_dict()["state"], saved["state"])
    last.update(restore)
    for grads in seq[2:]:
        opt.step(grads)
        twin.step(copies(grads))
    assert_bitwise(params, twins, "param")
    _assert_states_equal(opt.state_dict()["state"], twin.state_dict()["state"])


@pytest.mark.parametrize("config", [c for c in CONFIG_IDS if case_of(CONFIGS[c][0]).scalars])
def test_scalar_states_advance_and_are_restored(config: str) -> None:
    """NAdam's mu_product and ASGD's eta and mu: Python floats per param, advanced each step
    in double exactly as the reference advances them (the same formula), carried by
    state_dict and restored by load_state_dict; training continues bitwise."""
    cls, kwargs = CONFIGS[config]
    case = case_of(cls)
    params = make_params(dtypes=[np.float32, np.float64, np.float32, np.float32, np.float64])
    opt = cls(params, **kwargs)
    seq = grad_sequence(params, steps=6)
    for grads in seq[:3]:
        opt.step(grads)
    expected: Dict[str, Any] = {}
    p = np.zeros(1)
    for _ in range(3):
        p = reference.STEPS[case.name](p, np.ones(1), expected,
                                       **case.full(ops_hyper(case, opt.param_groups[0])))
    for i in range(len(params)):
        for name in case.scalars:
            value = opt.state[i][name]
            assert type(value) is float and value == expected[name], (i, name)
            assert expected[name] != case.start(name, ops_hyper(case, opt.param_groups[0])) \
                or name == "mu", f"{name} did not advance"

    sd = opt.state_dict()
    twins = copies(params)
    fresh = cls(twins)
    fresh.load_state_dict(sd)
    for i in range(len(params)):
        for name in case.scalars:
            value = fresh.state[i][name]
            assert type(value) is float and value == expected[name], (i, name)
    for grads in seq[3:]:
        opt.step(grads)
        fresh.step(copies(grads))
    assert_bitwise(twins, params, "param")
    _assert_state_dicts_equal(fresh.state_dict(), opt.state_dict())
