"""Policy for every optimizer: state names, defaults, and the valid range of each
hyperparameter. Ops and optimizers validate against this table; nothing else holds ranges."""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Tuple


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
        test = f"{lo} and {hi}"
        kinds = "_ints" if self.integer else "_reals"
        return f"(type({name}) in {kinds} and {test})"

    def contains(self, value: Any) -> bool:
        if isinstance(value, bool):
            return False
        if self.integer:
            if not isinstance(value, numbers.Integral):
                return False
        elif not isinstance(value, numbers.Real):
            return False
        v = float(value)
        if not math.isfinite(v):
            return False
        above = v > self.lo if self.lo_open else v >= self.lo
        below = v < self.hi if self.hi_open else v <= self.hi
        return above and below


def _literal(x: float) -> str:
    return "_inf" if x == math.inf else repr(x)


NONNEGATIVE = Range(0.0)
POSITIVE = Range(0.0, lo_open=True)
BETA = Range(0.0, 1.0)  # [0, 1)
FRACTION = Range(0.0, 1.0, hi_open=False)  # [0, 1]
STEP = Range(1, 2**53, hi_open=False, integer=True)  # 2**53: exact as a double


@dataclass(frozen=True)
class Spec:
    states: Tuple[str, ...]
    ranges: Dict[str, Range]
    defaults: Dict[str, Any] = field(default_factory=dict)


SPECS: Dict[str, Spec] = {
    "sgd": Spec(
        states=("momentum_buffer",),
        ranges={
            "step": STEP,
            "lr": NONNEGATIVE,
            "momentum": NONNEGATIVE,
            "dampening": FRACTION,
            "weight_decay": NONNEGATIVE,
            "grad_scale": POSITIVE,
        },
        defaults={"lr": 1e-3, "momentum": 0.0, "dampening": 0.0, "weight_decay": 0.0,
                  "nesterov": False, "maximize": False},
    ),
    "adam": Spec(
        states=("exp_avg", "exp_avg_sq", "max_exp_avg_sq"),
        ranges={
            "step": STEP,
            "lr": NONNEGATIVE,
            "beta1": BETA,
            "beta2": BETA,
            "eps": POSITIVE,
            "weight_decay": NONNEGATIVE,
            "grad_scale": POSITIVE,
        },
        defaults={"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0,
                  "amsgrad": False, "maximize": False, "decoupled_weight_decay": False},
    ),
    "lion": Spec(
        states=("exp_avg",),
        ranges={
            "lr": NONNEGATIVE,
            "beta1": FRACTION,
            "beta2": FRACTION,
            "weight_decay": NONNEGATIVE,
            "grad_scale": POSITIVE,
        },
        defaults={"lr": 1e-4, "betas": (0.9, 0.99), "weight_decay": 0.0, "maximize": False},
    ),
}


def raise_invalid(optimizer: str, values: Dict[str, Any]) -> None:
    """Raise for the first out-of-range value of `values`; return if all are valid."""
    ranges = SPECS[optimizer].ranges
    for name, value in values.items():
        r = ranges[name]
        if not r.contains(value):
            error = TypeError if not isinstance(value, (numbers.Real,)) or (
                r.integer and not isinstance(value, numbers.Integral)) else ValueError
            raise error(f"{name}: expected {r.describe()}, got {value!r}")


def checker(optimizer: str, names: Tuple[str, ...]) -> Callable[..., None]:
    """A function of `names` (positional) that raises TypeError/ValueError naming the first
    bad one. Generated from the ranges so that the all-valid path is one chained compare:
    validation stays a small part of a microsecond-scale call."""
    ranges = SPECS[optimizer].ranges
    test = " and ".join(ranges[n].expression(n) for n in names)
    args = ", ".join(names)
    source = (
        f"def check({args}):\n"
        f"    if not ({test}):\n"
        f"        _raise({optimizer!r}, dict({', '.join(f'{n}={n}' for n in names)}))\n"
    )
    # Exact types in the fast path: bool is an int subclass but never a valid number here;
    # NumPy scalars and other Reals take the slow path, which accepts them.
    namespace: Dict[str, Any] = {"_inf": math.inf, "_raise": raise_invalid,
                                 "_reals": frozenset((float, int)), "_ints": frozenset((int,))}
    exec(compile(source, f"<gdfast._spec.checker {optimizer}>", "exec"), namespace)
    return namespace["check"]  # type: ignore[no-any-return]
