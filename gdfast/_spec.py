"""The optimizers' registry, read from the compiled rules (``_core.registry()``): for each rule
its states (torch's names, when each is used, how it starts), hyperparameter fields (defaults
and valid ranges), scalar states and step counting, all declared once in its header
(csrc/optim/<name>.h). Ops, the stateful front ends and the benchmark are built from it; range
checks live here and nowhere else."""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from . import _core


@dataclass(frozen=True)
class Range:
    """A closed or half-open interval of finite reals (or integers, if ``integer``)."""

    lo: float
    hi: float = math.inf
    lo_open: bool = False
    hi_open: bool = True  # hi=inf: any finite value
    integer: bool = False

    def describe(self) -> str:
        kind = "an int" if self.integer else "a finite number"
        parts = []
        if self.lo != -math.inf:
            parts.append(f"{'>' if self.lo_open else '>='} {self.lo:g}")
        if self.hi != math.inf:
            hi = "2**53" if self.hi == 2**53 else f"{self.hi:g}"
            parts.append(f"{'<' if self.hi_open else '<='} {hi}")
        return f"{kind} {' and '.join(parts)}" if parts else kind

    def expression(self, name: str) -> str:
        """A Python expression that is True exactly when `name` is in range (NaN fails)."""
        lo = f"{_literal(self.lo)} {'<' if self.lo_open else '<='} {name}"
        hi = f"{name} {'<' if self.hi_open else '<='} {_literal(self.hi)}"
        kinds = "_ints" if self.integer else "_reals"
        return f"(type({name}) in {kinds} and {lo} and {hi})"

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.integer:
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real):
            return False
        v: float | int
        if self.integer:  # exactly: 2**53 + 1 is not 2**53
            v = int(value)
        else:
            try:
                v = float(value)
            except OverflowError:  # an int beyond any double
                return False
            if not math.isfinite(v):
                return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below


def _literal(x: float) -> str:
    return "_inf" if x == math.inf else "-_inf" if x == -math.inf else repr(x)


STEP = Range(1, 2**53, hi_open=False, integer=True)  # 2**53: exact as a double
POSITIVE = Range(0.0, lo_open=True)


@dataclass(frozen=True)
class Field:
    name: str
    kind: str  # "real" | "flag" | "scalar_state"
    default: Any  # for a scalar state: the value it starts at (unless start_from is set)
    range: Range
    start_from: Optional[str] = None  # a scalar state starting at this hyperparameter's value


@dataclass(frozen=True)
class State:
    name: str  # torch's state name
    when: str  # "" if always used, else the options that switch it on ("amsgrad=True")
    init: str  # "zeros" | "unset" (the first step writes it) | "fill"
    fill_from: Optional[str]  # "fill": every element starts at this hyperparameter's value
    nonnegative: bool = False  # never negative: stored 8-bit, it takes the unsigned map
    iterate: bool = False  # a point in parameter space (Schedule-Free's z), rounded like p


@dataclass(frozen=True)
class Rule:
    """One update rule of the registry (csrc/optim/optimizers.def)."""

    id: int
    name: str
    summary: str
    inputs: Tuple[str, ...]  # read-only arrays beside param: ("grad",)
    states: Tuple[State, ...]  # every state the rule may use, in the kernel's order
    fields: Tuple[Field, ...]  # in the kernel's order: options, then scalar states
    step: str  # "counted" (state["step"], as torch), "first_call" (SGD) or "none" (Lion)
    # Sums over each whole tensor the update needs first (LAMB's norms: 2), so it runs in two
    # passes (csrc/cpu/kernels/two_pass.h); 0 for an elementwise rule.
    tensor_sums: int = 0
    # A part of a step the front end composes (Muon's phases around its Newton-Schulz
    # iteration, gdfast/_muon.py): in PARTS, not RULES, so no optimizer is built from it alone.
    partial: bool = False

    @functools.cached_property
    def options(self) -> Tuple[Field, ...]:
        """The hyperparameters (reals and flags)."""
        return tuple(f for f in self.fields if f.kind != "scalar_state")

    @functools.cached_property
    def scalar_states(self) -> Tuple[Field, ...]:
        """Per-parameter scalars kept on the host (NAdam's mu_product, ASGD's eta and mu)."""
        return tuple(f for f in self.fields if f.kind == "scalar_state")

    @functools.cached_property
    def reals(self) -> Tuple[str, ...]:
        return tuple(f.name for f in self.fields if f.kind == "real")

    @functools.cached_property
    def state_names(self) -> Tuple[str, ...]:
        return tuple(s.name for s in self.states)

    @functools.cached_property
    def _check_reals(self) -> Callable[..., None]:
        return checker(self, with_step=False)

    def plan(self, hyper: Tuple[Any, ...]) -> Tuple[str, ...]:
        """The states a step with this hyper tuple reads and writes (ValueError for option
        combinations the rule rejects, e.g. nesterov without momentum)."""
        return _core.plan(self.id, hyper)

    def hyper(self, values: Mapping[str, Any], step: Any = 0,
              grad_scale: Any = 1.0) -> Tuple[Any, ...]:
        """The kernel's hyper tuple: every field from ``values`` by name (a hyperparameter not
        given at its default, a scalar state not given or None at its start), step, grad_scale."""
        full = {f.name: values.get(f.name, f.default) for f in self.options}
        for f in self.scalar_states:
            value = values.get(f.name)
            full[f.name] = self.scalar_start(f, full) if value is None else value
        return (*[full[f.name] for f in self.fields], step, grad_scale)

    def used_states(self, values: Mapping[str, Any]) -> Tuple[str, ...]:
        """plan() for hyperparameters by name (see hyper)."""
        return self.plan(self.hyper(values, 1))

    def batch(self, param: Any, inputs: Tuple[Any, ...], states: Mapping[str, Any],
              values: Mapping[str, Any], step: int = 0) -> Tuple[Any, ...]:
        """One batch of a ``_core.step`` / ``_core.run_repeated`` call: ``values`` as hyper()
        takes them, states by name (missing: None)."""
        return (param, inputs, tuple(states.get(n) for n in self.state_names),
                self.hyper(values, step), "", None)

    def scalar_start(self, field: Field, values: Mapping[str, Any]) -> float:
        return float(values[field.start_from]) if field.start_from else float(field.default)

    def check(self, values: Mapping[str, Any]) -> None:
        """Raise TypeError/ValueError naming the first hyperparameter out of its range (every
        real one must be in ``values``)."""
        self._check_reals(*[values[n] for n in self.reals], 1.0)


def check_one(name: str, value: Any, r: Range) -> None:
    """Raise TypeError/ValueError naming `name` unless `value` is in `r`."""
    if r.contains(value):
        return
    wrong_type = isinstance(value, bool) or not isinstance(value, numbers.Real) or (
        r.integer and not isinstance(value, numbers.Integral))
    raise (TypeError if wrong_type else ValueError)(
        f"{name}: expected {r.describe()}, got {shown(value)}")


def shown(value: Any) -> str:
    """repr(value) for a message, a huge int by its size instead of its digits."""
    text = repr(value)
    if isinstance(value, int) and len(text) > 24:
        return f"an int of {len(text.lstrip('-'))} digits ({text[:8]}...)"
    return text


def _rule(entry: Mapping[str, Any]) -> Rule:
    fields = tuple(Field(f["name"], f["kind"], f["default"], Range(*f["range"]), f["start_from"])
                   for f in entry["fields"])
    states = tuple(State(s["name"], s["when"], s["init"], s["fill_from"], s["nonnegative"],
                         s["iterate"]) for s in entry["states"])
    return Rule(entry["id"], entry["name"], entry["summary"], tuple(entry["inputs"]), states,
                fields, entry["step"], entry["tensor_sums"], entry["partial"])


_ALL = [_rule(entry) for entry in _core.registry()]
RULES: Dict[str, Rule] = {r.name: r for r in _ALL if not r.partial}
PARTS: Dict[str, Rule] = {r.name: r for r in _ALL if r.partial}


def checker(rule: Rule, with_step: bool, with_scalars: bool = False) -> Callable[..., None]:
    """A function of (step?, *rule.reals, *scalar states?, grad_scale), positional, that raises
    naming the first bad value. Generated from the ranges so that the all-valid path is one
    chained compare: validation stays a small part of a microsecond-scale call."""
    kinds = ("real", "scalar_state") if with_scalars else ("real",)
    ranges = {f.name: f.range for f in rule.fields if f.kind == "real"}
    ranges.update({f.name: f.range for f in rule.fields if f.kind in kinds})
    ranges["grad_scale"] = POSITIVE
    if with_step:
        ranges = {"step": STEP, **ranges}
    names = tuple(ranges)
    test = " and ".join(ranges[n].expression(n) for n in names)
    args = ", ".join(names)
    source = (
        f"def check({args}):\n"
        f"    if not ({test}):\n"
        f"        _raise(dict({', '.join(f'{n}={n}' for n in names)}))\n"
    )

    def raise_invalid(values: Dict[str, Any]) -> None:
        for name, value in values.items():
            check_one(name, value, ranges[name])

    # Exact types in the fast path: bool is an int subclass but never a valid number here;
    # NumPy scalars and other Reals take the slow path, which accepts them.
    namespace: Dict[str, Any] = {"_inf": math.inf, "_raise": raise_invalid,
                                 "_reals": frozenset((float, int)), "_ints": frozenset((int,))}
    exec(compile(source, f"<gdfast._spec.checker {rule.name}>", "exec"), namespace)
    return namespace["check"]  # type: ignore[no-any-return]
