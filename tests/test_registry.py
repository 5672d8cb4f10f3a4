"""The registry (``gdfast._spec.RULES``, read from the compiled rules) is consistent with the
Python built on it and with the tests' own description of each optimizer (cases.py):

* every rule has an op of the one regular signature, with the rule's defaults;
* every rule has a torch-signature constructor, whose arguments are rule fields, pairs of
  fields or torch's implementation switches;
* each state's ``when`` text says exactly when ``plan`` uses it;
* cases.py describes the same rules (states, starts, scalar states, step counting, defaults);
* ranges print as the messages say, and agree with torch's own constructor checks;
* gdfast.optimizers() lists every class of both front ends.
"""

from __future__ import annotations

import inspect
import math
import re
import warnings
from typing import Any, Dict, List

import numpy as np
import pytest

import gdfast
from gdfast import ops
from gdfast._spec import RULES, Range, Rule
from gdfast._stepping import CONSTRUCTORS, TUPLES, tuple_arguments

import cases
from cases import CASES, Case
from conftest import oracle_class

RULE_IDS = sorted(RULES)
# torch's switches that only pick an implementation (or need CUDA / autograd through the step)
IMPLEMENTATION_SWITCHES = {"foreach", "fused", "capturable", "differentiable",
                           # gdfast's own options, on every class: precision (issue 12)
                           # clipping and monitoring (issue 13)
                           "state_dtype", "master_weights", "stochastic_rounding", "seed",
                           "optim_bits", "min_8bit_size", "max_grad_norm", "clip_per_group",
                           "max_grad_value", "monitor"}


def _rule_params() -> List[Any]:
    return [pytest.param(RULES[name], id=name) for name in RULE_IDS]


def _case_params() -> List[Any]:
    return [pytest.param(case, id=case.name) for case in CASES]


# -- the ops --------------------------------------------------------------------------------------
PRECISION = ("master_param", "stochastic_rounding", "seed", "param_index", "absmax")


@pytest.mark.parametrize("rule", _rule_params())
def test_every_rule_has_an_op_of_the_regular_signature(rule: Rule) -> None:
    """(param, grad, <states>, *, step, <hyperparameters>, <scalar states>, grad_scale,
    found_inf, <precision options>, max_grad_norm, max_grad_value, monitor), states positional or
    keyword with default
    None, the rest keyword-only."""
    op = getattr(ops, f"{rule.name}_")
    assert f"{rule.name}_" in ops.__all__
    params = list(inspect.signature(op).parameters.values())
    positional = [p for p in params if p.kind is p.POSITIONAL_OR_KEYWORD]
    keyword = [p for p in params if p.kind is p.KEYWORD_ONLY]
    assert len(positional) + len(keyword) == len(params), "no *args / **kwargs"
    assert [p.name for p in positional] == ["param", *rule.inputs, *rule.state_names]
    assert all(p.default is p.empty for p in positional[:1 + len(rule.inputs)])
    assert all(p.default is None for p in positional[1 + len(rule.inputs):])
    # the classes' tuple arguments (betas=...) as aliases of the fields they hold
    aliases = [key for key, _ in tuple_arguments(rule.reals)]
    assert [p.name for p in keyword] == ["step", *(f.name for f in rule.fields), *aliases,
                                        "grad_scale", "found_inf", *PRECISION,
                                        "max_grad_norm", "max_grad_value", "monitor"]
    assert all(p.default is None for p in keyword if p.name in aliases)
    step = keyword[0]
    # counted and first_call rules need the count; Lion's is accepted and ignored
    assert step.default is (None if rule.step == "none" else step.empty)
    defaults = {p.name: p.default for p in keyword}
    assert defaults["grad_scale"] == 1.0 and defaults["found_inf"] is None
    assert [defaults[name] for name in PRECISION] == [None, False, 0, None, None]


@pytest.mark.parametrize("rule", _rule_params())
def test_op_defaults_are_the_rules_defaults(rule: Rule) -> None:
    sig = inspect.signature(getattr(ops, f"{rule.name}_"))
    for f in rule.options:
        default = sig.parameters[f.name].default
        assert default == f.default and type(default) is type(f.default), f.name
        assert (f.kind == "flag") == isinstance(f.default, bool), f.name
    for f in rule.scalar_states:
        # a scalar state starting at a hyperparameter's value defaults to None (meaning that)
        expected = None if f.start_from else f.default
        assert sig.parameters[f.name].default == expected, f.name


@pytest.mark.parametrize("case", _case_params())
def test_reference_defaults_are_the_rules_defaults(case: Case) -> None:
    """The reference's keyword defaults (cases.Case.full fills them in) are the registry's."""
    rule = RULES[case.name]
    assert case.defaults == {f.name: f.default for f in rule.options}


# -- the constructors ------------------------------------------------------------------------------
def test_every_rule_has_a_constructor() -> None:
    assert {c.rule.name for c in CONSTRUCTORS.values()} == set(RULES)


def test_tuples_are_the_cases_tuples() -> None:
    assert TUPLES == cases.TUPLES
    for rule in RULES.values():
        assert dict(tuple_arguments(rule.reals)) == cases.tuple_arguments(rule.reals)


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_constructor_arguments_are_fields_pairs_or_switches(name: str) -> None:
    """Every argument is a hyperparameter of the rule (a field, or a pair of fields), or one of
    torch's implementation switches; every hyperparameter is an argument or fixed by the
    class (AdamW's decoupled_weight_decay)."""
    ctor = CONSTRUCTORS[name]
    options = {f.name: f for f in ctor.rule.options}
    reached = set(ctor.fixed)
    for arg, param in ctor.signature.parameters.items():
        assert param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY), arg
        if arg in IMPLEMENTATION_SWITCHES or arg in getattr(ctor.mixin, "front_options", ()):
            continue  # (front_options: the class's own, e.g. when Sophia estimates the Hessian)
        if (name, arg) == ("Lamb", "pre_norm"):
            continue  # (whether max_grad_norm clips, by gdfast's clipping option)
        if arg in TUPLES:
            names = dict(tuple_arguments(options))[arg]
            assert isinstance(param.default, tuple) and len(param.default) == len(names), arg
            reached |= set(names)
        else:
            assert arg in options, f"{name}({arg}=...): not a field of {ctor.rule.name}"
            reached.add(arg)
    assert reached == set(options), f"{name}: unreachable {set(options) - reached}"
    assert set(ctor.fixed) <= set(options)


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_constructor_defaults_are_the_rules_except_where_torch_differs(name: str) -> None:
    """A constructor's default for a hyperparameter is the rule's, but for AdamW's
    weight_decay (torch's AdamW default 1e-2; the rule's default is Adam's 0)."""
    ctor = CONSTRUCTORS[name]
    options = {f.name: f.default for f in ctor.rule.options}
    defaults = ctor.defaults((), {})
    for key, names in tuple_arguments(options):
        if key in defaults:
            defaults.update(zip(names, defaults.pop(key)))
    own = {n: defaults[n] for n in options if defaults[n] != options[n] and n not in ctor.fixed}
    assert own == ({"weight_decay": 1e-2} if name == "AdamW" else {})


@pytest.mark.parametrize("case", _case_params())
def test_cases_name_the_constructors_and_what_they_fix(case: Case) -> None:
    for cls, fixed in case.classes.items():
        assert CONSTRUCTORS[cls].rule.name == case.name
        assert dict(CONSTRUCTORS[cls].fixed) == dict(fixed)
    assert {c for c, ctor in CONSTRUCTORS.items() if ctor.rule.name == case.name} == \
        set(case.classes)


# -- states and plan ---------------------------------------------------------------------------
def test_cases_cover_every_rule() -> None:
    assert [c.name for c in CASES] == list(RULES)
    assert all(c.op == f"{c.name}_" for c in CASES)


@pytest.mark.parametrize("case", _case_params())
def test_cases_describe_the_rules_states(case: Case) -> None:
    """The tests' independent description (cases.py) agrees with the registry: state names in
    the kernel's order, how each starts, scalar states and their starts, step counting."""
    rule = RULES[case.name]
    assert tuple(case.states) == rule.state_names
    assert case.starts == {s.name: s.fill_from for s in rule.states if s.init == "fill"}
    assert set(case.written_first) == {s.name for s in rule.states if s.init == "unset"}
    assert all(s.init in ("zeros", "fill", "unset") for s in rule.states)
    assert all((s.fill_from is not None) == (s.init == "fill") for s in rule.states)
    assert {f.name: f.start_from or f.default for f in rule.scalar_states} == dict(case.scalars)
    assert case.step == rule.step
    assert rule.inputs == ("grad", *case.extra_inputs)


@pytest.mark.parametrize("case", _case_params())
def test_plan_uses_the_states_the_cases_say(case: Case) -> None:
    """For every variant of the case, plan (the kernel's choice) and cases.py agree."""
    rule = RULES[case.name]
    for variant in case.variants:
        hyper = case.full(case.hyper(variant))
        assert rule.used_states(hyper) == case.state_names(hyper), variant.name


WHEN = re.compile(r"^(\w+)(=True| != 0| > 0)$")


def _switched(when: str, on: bool) -> Dict[str, Any]:
    """The option of a ``when`` text set on or off (``amsgrad=True``, ``momentum != 0``)."""
    match = WHEN.match(when)
    assert match, f"unparsed when text {when!r}"
    name, test = match.groups()
    if test == "=True":
        return {name: on}
    return {name: 0.5 if on else 0.0}


def _when_params() -> List[Any]:
    return [pytest.param(rule, state, id=f"{rule.name}-{state.name}")
            for rule in RULES.values() for state in rule.states]


@pytest.mark.parametrize(("rule", "state"), _when_params())
def test_when_text_matches_plan(rule: Rule, state: Any) -> None:
    """A state with a ``when`` is used exactly when its option is on (whatever the others);
    one without is always used."""
    if not state.when:
        assert state.name in rule.used_states({})
        return
    others = [s for s in rule.states if s.when and s is not state]
    for on in (False, True):
        for with_others in (False, True):
            values = _switched(state.when, on)
            for other in others if with_others else []:
                values.update(_switched(other.when, True))
            assert (state.name in rule.used_states(values)) == on, (on, values)


@pytest.mark.parametrize(("rule", "state"), [p for p in _when_params() if p.values[1].when])
def test_op_names_a_missing_state_with_the_when_text(rule: Rule, state: Any) -> None:
    """The op's message for a missing optional state is '<state>: required when <when>'."""
    n = 5
    values = _switched(state.when, True)
    arrays = {s.name: np.ones(n, np.float32) for s in rule.states if s is not state}
    with pytest.raises(ValueError, match=rf"^{state.name}: required when "
                                         rf"{re.escape(state.when)}$"):
        getattr(ops, f"{rule.name}_")(np.ones(n, np.float32), np.ones(n, np.float32),
                                      **arrays, step=2, **values)


@pytest.mark.parametrize("case", [pytest.param(c, id=c.name) for c in CASES if c.invalid])
def test_plan_rejects_the_combinations_the_cases_list(case: Case) -> None:
    rule = RULES[case.name]
    for values, message in case.invalid:
        with pytest.raises(ValueError, match="^" + re.escape(message)):
            rule.used_states(case.full(values))


# -- ranges --------------------------------------------------------------------------------------
def _describe(r: Range) -> str:
    """How a message names a range, written out independently of Range.describe."""
    parts = []
    if r.lo != -math.inf:
        parts.append(f"{'>' if r.lo_open else '>='} {r.lo:g}")
    if r.hi != math.inf:
        parts.append(f"{'<' if r.hi_open else '<='} {r.hi:g}")
    return "a finite number" + (" " + " and ".join(parts) if parts else "")


@pytest.mark.parametrize("rule", _rule_params())
def test_ranges_print_as_the_messages_say(rule: Rule) -> None:
    for f in rule.fields:
        if f.kind == "real":
            assert f.range.describe() == _describe(f.range), f.name
            assert not f.range.integer
            # every valid value is finite: an infinite bound means "any finite value"
            assert not f.range.contains(math.inf) and not f.range.contains(math.nan)
            assert f.range.contains(f.default), f"{f.name}: default out of range"


KNOWN_RANGE_DIFFERENCES = {
    ("SGD", "dampening"): "torch checks no range; gdfast: [0, 1]",
    ("Adam", "eps"): "torch allows eps = 0 (0/0 where v = 0); gdfast: eps > 0",
    ("AdamW", "eps"): "as Adam",
    **{(name, beta): "pytorch_optimizer accepts beta = 1, whose bias correction 1 - beta^t "
                     "is 0 (its step divides by it); gdfast: [0, 1)"
       for name, beta in (("Adan", "beta1"), ("Adan", "beta2"), ("Adan", "beta3"),
                          ("AdEMAMix", "beta1"), ("AdEMAMix", "beta2"),
                          ("ScheduleFreeAdamW", "beta2"), ("SophiaH", "beta1"),
                          ("SophiaH", "beta2"))},
    ("ScheduleFreeAdamW", "warmup_steps"): "pytorch_optimizer checks no range; gdfast: >= 0",
    ("Lamb", "n_sma_threshold"): "pytorch_optimizer checks no range; gdfast: >= 0",
}


def _edge_values(r: Range) -> List[float]:
    """Finite values at and just beyond each finite bound, and large finite values."""
    out = [-1e3, 1e3, 0.0, 1.0]
    for bound in (r.lo, r.hi):
        if math.isfinite(bound):
            out += [bound, math.nextafter(bound, -math.inf), math.nextafter(bound, math.inf),
                    bound - 1e-9 * max(1.0, abs(bound)), bound + 1e-9 * max(1.0, abs(bound))]
    return out


@pytest.mark.parametrize("name", sorted(n for n in CONSTRUCTORS if n != "Lion"))
def test_ranges_agree_with_torchs_constructor_checks(name: str) -> None:
    """At finite values around every bound, torch.optim.<Name> (or the oracle package's class)
    raises exactly where the registry's range (or plan, for Rprop's etas) rejects, except the
    differences listed in KNOWN_RANGE_DIFFERENCES. (Non-finite values are rejected by gdfast
    and partly accepted by torch: not compared.)"""
    torch = pytest.importorskip("torch")
    ctor = CONSTRUCTORS[name]
    torch_cls = oracle_class(name)
    # (pytorch_optimizer raises classes of its own, such as NegativeLRError(Exception))
    rejected = ValueError if torch_cls.__module__.startswith("torch.") else Exception
    defaults = ctor.defaults((), {})
    pair_of = {m: (key, i) for key, names in TUPLES.items() for i, m in enumerate(names)}
    for f in ctor.rule.options:
        if f.kind != "real" or (name, f.name) in KNOWN_RANGE_DIFFERENCES:
            continue
        for value in _edge_values(f.range):
            kwargs: Dict[str, Any] = {}
            if f.name in pair_of:
                key, i = pair_of[f.name]
                pair = list(defaults[key])
                pair[i] = value
                kwargs[key] = tuple(pair)
            else:
                kwargs[f.name] = value
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    torch_cls([torch.zeros(2, requires_grad=True)], **kwargs)
                torch_accepts = True
            except rejected:
                torch_accepts = False
            try:
                getattr(gdfast, name)([np.zeros(2, np.float32)], **kwargs)
                ours = True
            except ValueError:
                ours = False
            assert ours == torch_accepts, f"{name}({kwargs}): torch accepts: {torch_accepts}"


# -- the classes ---------------------------------------------------------------------------------
def test_optimizers_lists_every_class_of_both_front_ends() -> None:
    # (Muon, a matrix method, has its own classes: tests/test_muon.py)
    assert sorted(gdfast.optimizers()) == sorted([*CONSTRUCTORS, "Muon"])
    names = [n for n in gdfast.optimizers() if n != "Muon"]
    assert sorted(names) == sorted(CONSTRUCTORS) == sorted(cases.CLASSES)
    for name in names:
        cls = getattr(gdfast, name)
        assert issubclass(cls, gdfast.Optimizer) and cls.__name__ == name
        assert name in gdfast.__all__
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    for name in names:
        cls = getattr(gt, name)
        assert issubclass(cls, torch.optim.Optimizer) and cls.__name__ == name


@pytest.mark.parametrize("name", sorted(CONSTRUCTORS))
def test_class_signature_is_the_constructors(name: str) -> None:
    """help(gdfast.<Name>) shows (self, params, <the constructor's arguments>)."""
    sig = inspect.signature(getattr(gdfast, name).__init__)
    assert list(sig.parameters)[:2] == ["self", "params"]
    assert list(sig.parameters.values())[2:] == list(CONSTRUCTORS[name].signature.parameters
                                                     .values())


# -- the cases cover torch's optimizer database ---------------------------------------------------
# The eight rules added with issue 11 take their variants from torch 2.13's database (SGD's,
# Adam's and Lion's tables predate it and use other base learning rates).
TORCH_DB_CLASSES = ("RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam", "ASGD", "Rprop")


@pytest.mark.parametrize("name", TORCH_DB_CLASSES)
def test_cases_cover_torchs_optimizer_database(name: str) -> None:
    """Every CPU input of torch's optim_inputs_func_<name>, translated to gdfast.ops keywords
    (implementation switches dropped, a tensor lr as the number it was written as, pairs
    unpacked), is one of the case's variants."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("expecttest")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from torch.testing._internal.common_optimizers import optim_db
    info = next(i for i in optim_db if i.optim_cls.__name__ == name)
    case = cases.CLASSES[name]
    variants = [case.full(case.hyper(v)) for v in case.variants]
    inputs = info.optim_inputs_func(device="cpu")
    assert inputs
    for given in inputs:
        kwargs: Dict[str, Any] = {}
        for key, value in given.kwargs.items():
            if key in IMPLEMENTATION_SWITCHES:
                continue
            if isinstance(value, torch.Tensor):  # torch.tensor(0.001): float32-rounded
                value = float(f"{value.item():.7g}")
            if key in TUPLES:
                kwargs.update(zip(TUPLES[key], value))
            else:
                kwargs[key] = value
        assert case.full(kwargs) in variants, f"{given.desc}: {kwargs}"
