"""Interleaved timing: the recipe of shared/BENCHMARKING.md.

One timed unit is one optimizer step. Each slot (an implementation's runner at one thread
count) is calibrated to k steps per batch so that a batch lasts at least ``batch_time``; then
batches run round-robin over all slots (A B C A B C ...), so that machine drift (neighbours'
load on a shared host) hits every implementation alike. Per-step time = batch time / k;
reported: median over batches, with min and max. Only the step calls are inside the timer;
the garbage collector is off during a batch. A batch is cut short at 3x its target duration
(a step gone 100x slower on a loaded machine must not stall the run); its per-step time is
then elapsed / steps made.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Protocol, Sequence, Tuple

from .machine import set_threads

perf_counter = time.perf_counter
OVERRUN = 3  # a batch stops after 3x its calibrated duration


class Timed(Protocol):
    """What a slot times: ``step`` (one timed unit) and ``prepare`` (before each batch, after
    the thread count is set). An implementation's runner, or a bare kernel call."""

    step: Callable[[], None]

    def prepare(self) -> None: ...


@dataclass
class Slot:
    runner: Timed
    threads: int
    label: str = ""
    k: int = 1  # steps per batch
    times: List[float] = field(default_factory=list)  # per-step seconds, one per batch
    error: Optional[BaseException] = None  # a step raised: the slot is out

    def prepare(self) -> None:
        set_threads(self.threads)
        self.runner.prepare()

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def low(self) -> float:
        return min(self.times)

    @property
    def high(self) -> float:
        return max(self.times)


def time_steps(step: Callable[[], None], k: int) -> float:
    """Seconds for k consecutive calls of ``step`` (GC off)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        t0 = perf_counter()
        for _ in range(k):
            step()
        return perf_counter() - t0
    finally:
        if enabled:
            gc.enable()


def time_batch(step: Callable[[], None], k: int, limit: float) -> Tuple[float, int]:
    """Up to k consecutive calls of ``step`` (GC off): (seconds, calls made). The clock is
    read every k/16 calls, and the batch ends early once it has run ``limit`` seconds: a
    step that became 100x slower than at calibration (on a loaded machine, a thread pool
    whose workers are descheduled) costs a bounded time, and its per-step time is still
    elapsed / calls."""
    chunk = max(1, k // 16)
    enabled = gc.isenabled()
    gc.disable()
    try:
        done = 0
        t0 = perf_counter()
        while done < k:
            n = min(chunk, k - done)
            for _ in range(n):
                step()
            done += n
            if perf_counter() - t0 > limit:
                break
        return perf_counter() - t0, done
    finally:
        if enabled:
            gc.enable()


def calibrate(slot: Slot, batch_time: float, max_k: int = 1 << 22) -> None:
    """Choose k so that k steps last >= ``batch_time`` (at least one step)."""
    slot.prepare()
    k = 1
    while True:
        elapsed, done = time_batch(slot.runner.step, k, OVERRUN * batch_time)
        if elapsed >= batch_time or k >= max_k:
            k = done
            break
        # aim 20% past the target; grow at most 100x per round to correct for warm-up
        want = math.ceil(k * 1.2 * batch_time / max(elapsed, 1e-9))
        k = min(max_k, max(k + 1, min(want, 100 * k)))
    slot.k = k


def run_batches(slots: Sequence[Slot], batches: int, batch_time: float,
                tick: Optional[Callable[[], None]] = None) -> None:
    """``batches`` rounds over all slots; each slot records per-step seconds per batch. A
    batch is cut short after ``OVERRUN * batch_time`` (see time_batch). A slot whose step
    raises keeps the exception in ``error`` and is left out of later rounds."""
    for _ in range(batches):
        for slot in slots:
            if slot.error is not None:
                continue
            try:
                slot.prepare()
                elapsed, done = time_batch(slot.runner.step, slot.k, OVERRUN * batch_time)
            except Exception as exc:  # reported by the caller; the other slots go on
                slot.error = exc
                continue
            slot.times.append(elapsed / done)
        if tick is not None:
            tick()
