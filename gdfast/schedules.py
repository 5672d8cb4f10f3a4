"""Learning-rate schedules: ``lr=schedule`` in any optimizer class (``gdfast.<Name>`` and
``gdfast.torch.<Name>``), evaluated on the host in double before each step.

A schedule maps the number of steps a param group has taken (0 before its first step) to a
learning rate. The group keeps that count as ``lr_step`` (saved in its state_dict with the
schedule); a step that AMP skips (``found_inf``) does not advance it. torch's lr_schedulers keep
working with a number as ``lr``.

The formulas are those of the implementations users switch from: ``Constant``, ``LinearWarmup``
(torch's LinearLR to 1), ``Cosine`` (torch's CosineAnnealingLR without warmup; with warmup,
transformers' get_cosine_schedule_with_warmup, plus a floor), ``LinearDecay`` (transformers'
get_linear_schedule_with_warmup, plus a floor), ``OneCycle`` (torch's OneCycleLR, two phases),
``InverseSqrt`` (transformers' get_inverse_sqrt_schedule), ``WarmupStableDecay`` (transformers'
get_wsd_schedule) and ``Piecewise`` (constant between boundaries).
"""

from __future__ import annotations

import bisect
import math
from typing import Any, Sequence, Tuple

from ._spec import POSITIVE, Range, check_one

__all__ = ["Schedule", "Constant", "LinearWarmup", "Cosine", "LinearDecay", "OneCycle",
           "InverseSqrt", "WarmupStableDecay", "Piecewise"]


_RATE = Range(0.0)  # a finite number >= 0
_UNIT = Range(0.0, 1.0, hi_open=False)


def _rate(name: str, value: Any, allowed: Range = _RATE) -> float:
    check_one(name, value, allowed)
    return float(value)


def _steps(name: str, value: Any, least: int = 0) -> int:
    check_one(name, value, Range(least, integer=True))
    return int(value)


def _cosine(start: float, end: float, progress: float) -> float:
    """From start (progress 0) to end (progress 1) along half a cosine."""
    return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * progress))


class Schedule:
    """A learning rate per step: ``schedule(step)``, step being the number of steps taken."""

    _fields: Tuple[str, ...] = ()

    def __call__(self, step: int) -> float:
        return self.lr_at(_steps("step", step))

    def lr_at(self, step: int) -> float:
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields)
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and all(
            getattr(self, f) == getattr(other, f) for f in self._fields)

    def __hash__(self) -> int:
        return hash((type(self), tuple(getattr(self, f) for f in self._fields)))


def _warmup(lr: float, warmup_steps: int, step: int) -> float:
    """transformers' linear warmup: 0 at step 0, lr at warmup_steps."""
    return lr * step / warmup_steps


class Constant(Schedule):
    _fields = ("lr",)

    def __init__(self, lr: float) -> None:
        self.lr = _rate("lr", lr)

    def lr_at(self, step: int) -> float:
        return self.lr


class LinearWarmup(Schedule):
    """From ``start_factor * lr`` to ``lr`` over ``warmup_steps`` steps, then ``lr`` (torch's
    LinearLR with end_factor=1)."""

    _fields = ("lr", "warmup_steps", "start_factor")

    def __init__(self, lr: float, warmup_steps: int, start_factor: float = 0.0) -> None:
        self.lr = _rate("lr", lr)
        self.warmup_steps = _steps("warmup_steps", warmup_steps, 1)
        self.start_factor = _rate("start_factor", start_factor, _UNIT)

    def lr_at(self, step: int) -> float:
        done = min(step, self.warmup_steps) / self.warmup_steps
        return self.lr * (self.start_factor + (1.0 - self.start_factor) * done)


class _WarmupDecay(Schedule):
    """Linear warmup from 0 over ``warmup_steps``, then from ``lr`` down to ``final_lr`` at
    ``total_steps`` (the subclass's curve), and ``final_lr`` after."""

    _fields = ("lr", "total_steps", "warmup_steps", "final_lr")

    def __init__(self, lr: float, total_steps: int, warmup_steps: int = 0,
                 final_lr: float = 0.0) -> None:
        self.lr = _rate("lr", lr)
        self.total_steps = _steps("total_steps", total_steps, 1)
        self.warmup_steps = _steps("warmup_steps", warmup_steps)
        if self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps: expected fewer than total_steps "
                             f"({self.total_steps}), got {warmup_steps!r}")
        self.final_lr = _rate("final_lr", final_lr)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(self.lr, self.warmup_steps, step)
        progress = (step - self.warmup_steps) / (self.total_steps - self.warmup_steps)
        return self.decayed(min(progress, 1.0))

    def decayed(self, progress: float) -> float:
        raise NotImplementedError


class Cosine(_WarmupDecay):
    """Linear warmup from 0 over ``warmup_steps``, then half a cosine from ``lr`` down to
    ``final_lr`` at ``total_steps``, and ``final_lr`` after."""

    def decayed(self, progress: float) -> float:
        return _cosine(self.lr, self.final_lr, progress)


class LinearDecay(_WarmupDecay):
    """Linear warmup from 0 over ``warmup_steps``, then a straight line from ``lr`` down to
    ``final_lr`` at ``total_steps``, and ``final_lr`` after."""

    def decayed(self, progress: float) -> float:
        return self.final_lr + (self.lr - self.final_lr) * (1.0 - progress)


class OneCycle(Schedule):
    """torch's OneCycleLR (two phases): from ``max_lr / div_factor`` up to ``max_lr`` over
    the first ``pct_start`` of ``total_steps``, then down to ``max_lr / div_factor /
    final_div_factor`` at the last step (and after it); ``anneal`` "cos" or "linear". The
    learning rate only: torch's also cycles the momentum unless cycle_momentum=False."""

    _fields = ("max_lr", "total_steps", "pct_start", "div_factor", "final_div_factor", "anneal")

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3,
                 div_factor: float = 25.0, final_div_factor: float = 1e4,
                 anneal: str = "cos") -> None:
        self.max_lr = _rate("max_lr", max_lr)
        self.total_steps = _steps("total_steps", total_steps, 2)
        self.pct_start = _rate("pct_start", pct_start, _UNIT)
        self.div_factor = _rate("div_factor", div_factor, POSITIVE)
        self.final_div_factor = _rate("final_div_factor", final_div_factor, POSITIVE)
        if anneal not in ("cos", "linear"):
            raise ValueError(f"anneal: expected 'cos' or 'linear', got {anneal!r}")
        self.anneal = anneal
        self._peak = float(self.pct_start * self.total_steps) - 1.0  # torch's phase end
        if not (0.0 < self._peak < self.total_steps - 1):
            raise ValueError(f"pct_start: {pct_start!r} of total_steps={total_steps} leaves a "
                             "phase without steps")

    def lr_at(self, step: int) -> float:
        start = self.max_lr / self.div_factor
        end = start / self.final_div_factor
        last = self.total_steps - 1.0
        if step <= self._peak:
            a, b, progress = start, self.max_lr, step / self._peak
        else:
            a, b, progress = self.max_lr, end, min(1.0, (step - self._peak) / (last - self._peak))
        if self.anneal == "cos":
            return _cosine(a, b, progress)
        return (b - a) * progress + a


class InverseSqrt(Schedule):
    """Linear warmup from 0 over ``warmup_steps``, then ``lr * sqrt(warmup_steps / step)``."""

    _fields = ("lr", "warmup_steps")

    def __init__(self, lr: float, warmup_steps: int) -> None:
        self.lr = _rate("lr", lr)
        self.warmup_steps = _steps("warmup_steps", warmup_steps, 1)

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(self.lr, self.warmup_steps, step)
        return self.lr / math.sqrt(step / self.warmup_steps)


class WarmupStableDecay(Schedule):
    """Linear warmup from 0 over ``warmup_steps``, ``lr`` for ``stable_steps``, then down to
    ``final_lr`` over ``decay_steps`` ("linear", "cosine" or "1-sqrt"), and ``final_lr`` after."""

    _fields = ("lr", "warmup_steps", "stable_steps", "decay_steps", "final_lr", "decay")

    def __init__(self, lr: float, warmup_steps: int, stable_steps: int, decay_steps: int,
                 final_lr: float = 0.0, decay: str = "linear") -> None:
        self.lr = _rate("lr", lr)
        self.warmup_steps = _steps("warmup_steps", warmup_steps)
        self.stable_steps = _steps("stable_steps", stable_steps)
        self.decay_steps = _steps("decay_steps", decay_steps, 1)
        self.final_lr = _rate("final_lr", final_lr)
        if decay not in ("linear", "cosine", "1-sqrt"):
            raise ValueError(f"decay: expected 'linear', 'cosine' or '1-sqrt', got {decay!r}")
        self.decay = decay

    def lr_at(self, step: int) -> float:
        if step < self.warmup_steps:
            return _warmup(self.lr, self.warmup_steps, step)
        into = step - self.warmup_steps - self.stable_steps
        if into < 0:
            return self.lr
        progress = min(1.0, into / self.decay_steps)
        if self.decay == "cosine":
            return _cosine(self.lr, self.final_lr, progress)
        left = 1.0 - (progress if self.decay == "linear" else math.sqrt(progress))
        return self.final_lr + (self.lr - self.final_lr) * left


class Piecewise(Schedule):
    """``values[0]`` before ``boundaries[0]``, ``values[i]`` from ``boundaries[i - 1]`` on."""

    _fields = ("boundaries", "values")

    def __init__(self, boundaries: Sequence[int], values: Sequence[float]) -> None:
        self.boundaries = tuple(_steps(f"boundaries[{i}]", b) for i, b in enumerate(boundaries))
        self.values = tuple(_rate(f"values[{i}]", v) for i, v in enumerate(values))
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"values: expected {len(self.boundaries) + 1} (one more than "
                             f"boundaries), got {len(self.values)}")
        if any(a >= b for a, b in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"boundaries: expected increasing steps, got {self.boundaries}")

    def lr_at(self, step: int) -> float:
        return self.values[bisect.bisect_right(self.boundaries, step)]
