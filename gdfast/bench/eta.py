"""The time left in a run, for the progress display.

A run is a list of groups of very different cost: a 1e3-element group lasts a few batch times,
a 1e8-element one seconds per step. Counting groups (what a progress bar does by itself)
predicts the large groups at the small ones' pace: 1:17 left for a six-minute run. Here each
group to come is predicted from what this run has measured so far:

- a step's time, per implementation and thread count: the same workload's time on another
  optimizer scaled by the bytes each moves; else, above the largest workload measured, that
  one's time plus the marginal time per byte between it and the largest one at most half its
  size, never less than the memory ceiling's (the machine bandwidth measured first, else the
  fastest stream seen: a workload larger than any measured may not fit the cache they sat
  in); below it, the nearest larger one's time scaled down by bytes;
- a group's time from its steps: each slot runs ``batches`` batches of at least the batch time
  (or one step, if longer), a calibration and the gate's steps, plus setting up its arrays;
- a correction: the seconds the groups done so far took over what this model says for them
  knowing their measured step times (so only the model's own error is corrected: Python
  overhead, load, set-up). The ratio of sums weighs the largest groups done most, the closest
  to those to come.

Nothing is shown before the first group is done: there is no measurement yet. Imports nothing
of gdfast.bench."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

# Batches run at least 20% past the batch time (timing.calibrate aims there); calibration
# takes about one and a half batch times (k grows 100x per round up to the target).
BATCH_FILL = 1.2
CALIBRATION = 1.5
SETUP_RATE = 1e9  # bytes/s of arrays made or copied at set-up (random numbers, copies): a guess
DEFAULT_CEILING = 20e9  # bytes/s, before anything is measured: a guess the correction replaces


@dataclass(frozen=True)
class Slot:
    """One implementation at one thread count in a group."""

    impl: str
    threads: int
    gate_steps: int  # steps before timing: the gate's, or the bound's one first touch


@dataclass(frozen=True)
class Group:
    """What one unit of the run will do, as known before it runs."""

    workload: str  # steps of the same workload on other optimizers scale by bytes
    nbytes: float  # bytes one step moves (elements x bytes per element)
    slots: Tuple[Slot, ...]
    setup_bytes: float = 0.0  # arrays made or copied before timing


@dataclass
class _Point:
    nbytes: float
    seconds: float  # per step


@dataclass
class Estimator:
    """Seconds left after each group, from the groups' plan and what was measured so far."""

    groups: Sequence[Group]
    batches: int
    batch_time: float
    ceiling: Dict[int, float] = field(default_factory=dict)  # bytes/s per thread count
    # per (implementation, threads) and workload: the latest step measured
    _points: Dict[Tuple[str, int], Dict[str, _Point]] = field(default_factory=dict)
    _steps: Dict[int, Dict[Tuple[str, int], float]] = field(default_factory=dict)
    _took: Dict[int, float] = field(default_factory=dict)

    # -- what was measured ------------------------------------------------------------------

    def done(self, index: int, seconds: float,
             steps: Optional[Dict[Tuple[str, int], float]] = None) -> None:
        """Group ``index`` took ``seconds``; ``steps[(impl, threads)]``: its median seconds
        per step for the slots that were timed."""
        group = self.groups[index]
        self._took[index] = seconds
        self._steps[index] = dict(steps or {})
        for (impl, threads), t in self._steps[index].items():
            if t > 0 and math.isfinite(t) and group.nbytes > 0:
                self._points.setdefault((impl, threads), {})[group.workload] = _Point(
                    group.nbytes, t)

    def set_ceiling(self, threads: int, bytes_per_second: float) -> None:
        """The machine's in-place bandwidth at a thread count (measured first in a run)."""
        if bytes_per_second > 0:
            self.ceiling[threads] = bytes_per_second

    # -- the model ----------------------------------------------------------------------------

    def step_time(self, impl: str, threads: int, workload: str, nbytes: float) -> float:
        """Predicted seconds per step."""
        points = self._points.get((impl, threads), {})
        if workload in points:  # another optimizer on this workload: scaled by the bytes
            p = points[workload]
            return p.seconds * nbytes / p.nbytes
        floor = 1.0 / self._ceiling(threads)  # seconds per byte, at best
        if not points:
            return nbytes * floor
        ranked = sorted(points.values(), key=lambda p: p.nbytes)
        top = ranked[-1]
        if nbytes <= top.nbytes:  # the nearest larger workload, scaled down
            near = next(p for p in ranked if p.nbytes >= nbytes)
            return near.seconds * nbytes / near.nbytes
        slope = floor
        # optimizers of one size differ in bytes by < 2x: a slope between them is noise
        below = [p for p in ranked if p.nbytes <= top.nbytes / 2]
        if below:
            p = below[-1]
            slope = max(slope, (top.seconds - p.seconds) / (top.nbytes - p.nbytes))
        return top.seconds + (nbytes - top.nbytes) * slope

    def _ceiling(self, threads: int) -> float:
        if threads in self.ceiling:
            return self.ceiling[threads]
        if self.ceiling:  # the nearest thread count measured
            return self.ceiling[min(self.ceiling, key=lambda t: abs(t - threads))]
        seen = [p.nbytes / p.seconds for points in self._points.values()
                for p in points.values()]
        return max(seen) if seen else DEFAULT_CEILING

    def model(self, index: int, steps: Optional[Dict[Tuple[str, int], float]] = None) -> float:
        """Seconds group ``index`` takes by the model: with ``steps`` its measured step
        times (hindsight), else predicted ones."""
        group = self.groups[index]
        total = group.setup_bytes / SETUP_RATE
        for slot in group.slots:
            key = (slot.impl, slot.threads)
            if steps is not None and key in steps:
                t = steps[key]
            else:
                t = self.step_time(slot.impl, slot.threads, group.workload, group.nbytes)
            batch = max(self.batch_time, t)
            total += (self.batches * BATCH_FILL + CALIBRATION) * batch + slot.gate_steps * t
        return total

    def correction(self) -> Optional[float]:
        """What the groups done took over what the model says for them, knowing their step
        times; None before any is done."""
        if not self._took:
            return None
        took = sum(self._took.values())
        model = sum(self.model(i, self._steps[i]) for i in self._took)
        return took / model if model > 0 else None

    def remaining(self) -> Optional[float]:
        """Seconds the groups not done yet will take; None before any group is done."""
        ratio = self.correction()
        if ratio is None:
            return None
        return ratio * sum(self.model(i) for i in range(len(self.groups)) if i not in self._took)


def format_left(seconds: Optional[float]) -> str:
    """"~3:05 left" (minutes:seconds; hours past an hour); "" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return ""
    s = int(round(max(0.0, seconds)))
    if s >= 3600:
        return f"~{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d} left"
    return f"~{s // 60}:{s % 60:02d} left"
