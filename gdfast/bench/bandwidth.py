"""The bounds. Memory: the machine's in-place bandwidth with each optimizer's own access
pattern, measured inside gdfast (``gdfast._core.stream``: the optimizers' very loop, threads and
split, with one multiply-add per written array instead of the update rule). Arithmetic: gdfast's
own step repeated in place on a cache-resident block (``gdfast._core.run_repeated``), the
compute a step needs when memory and per-call costs are out of the way. A step cannot beat
the slower of the two.

An optimizer step reads param, grad and its states and writes param and states back where
they were read, so no cache line is fetched just to be overwritten. STREAM triad
(a = b + s*c) writes a third array it never read: write-allocate traffic that its byte count
does not include, which understates in-place bandwidth (by ~1.45x on the machines of
shared/BENCHMARKING.md). Triad is measured too, for reference, when torch is installed (NumPy
has no one-pass triad: ``a = b + s*c`` is two passes and a temporary).
"""

from __future__ import annotations

import math
import statistics
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .cases import Case
from .impls import Gdfast, GdfastRunner, Implementation, Runner, Step, Unavailable, _import
from .timing import Slot, calibrate, run_batches, time_steps
from .workloads import Data, single

STREAM_SCALE = 1e-6  # states and param grow by 1e-6 * grad per step: no overflow, no denormals

PATTERNS = {0: "sgd", 1: "momentum/lion", 2: "adam/adamw", 3: "adam+amsgrad"}


class BoundRunner(GdfastRunner):
    """gdfast's runner with the stream kernel in place of the update rule."""

    def _fresh(self) -> Step:
        from gdfast import _core

        self._restore()
        P, G, states = self._kernel_args()
        S = tuple(states)
        stream = _core.stream

        def step() -> None:
            stream(P, G, S, STREAM_SCALE)

        return step

    def prepare(self) -> None:
        if self.isa is not None:
            from gdfast import _core

            _core.set_active_isa(self.isa)

    def state_bytes(self) -> int:
        return 0


class Bound(Implementation):
    """Not an optimizer: the in-place stream with the case's access pattern, on the same
    workload, interleaved with the implementations. 100% = this row's bytes/second."""

    name = "bound"
    kind = "bound"
    description = "gdfast._core.stream: the case's in-place access pattern at memory speed"

    def __init__(self, isa: Optional[str] = None):
        self.isa = isa

    def build(self, case: Case, data: Data) -> Runner:
        return BoundRunner(case, data, self.isa)


ARITH_BLOCK = 16384  # elements: Adam's 4 fp32 arrays take 256 KiB, well inside one core's L2
ARITH_ELEMENTS_PER_CALL = 1 << 21  # per Python call: its ~1 us overhead drops below 0.5%


def _staggered(count: int, n: int, dtype: np.dtype) -> List[np.ndarray]:
    """``count`` arrays of ``n`` elements, cache-line aligned, at different offsets within a
    4 KiB page: arrays at the same offset (what an allocator gives arrays of equal size) make
    loads wait on older stores to the same low address bits, which is the layout's cost, not
    the arithmetic's."""
    line, stagger, page = 64, 640, 4096
    stride = -(-n * dtype.itemsize // page) * page + stagger
    raw = np.empty(count * stride + line, np.uint8)
    start = -raw.ctypes.data % line
    return [raw[start + k * stride:][: n * dtype.itemsize].view(dtype) for k in range(count)]


class ArithRunner(GdfastRunner):
    """gdfast's step on the workload's first ARITH_BLOCK elements, applied ``repeats`` times
    in place per call; ``time_scale`` turns a call's time into the time for the workload's
    element count."""

    def __init__(self, case: Case, data: Data, isa: Optional[str]):
        block = min(data.workload.numel, ARITH_BLOCK)
        self.repeats = max(math.ceil(data.workload.numel / block),
                           math.ceil(ARITH_ELEMENTS_PER_CALL / block))
        self.time_scale = data.workload.numel / (block * self.repeats)
        grad, param, *states = _staggered(2 + case.n_states, block, data.dtype)

        def head(arrays: List[np.ndarray], out: np.ndarray) -> List[np.ndarray]:
            flat = np.concatenate([a.reshape(-1)[:block] for a in arrays])
            np.copyto(out, flat[:block])
            return [out]

        small = Data(single(block), data.dtype, head(data.p0, np.empty_like(param)),
                     head(data.grads, grad))
        small.pool.give([param, *states])  # the runner takes its param and states from here
        super().__init__(case, small, isa)

    def _fresh(self) -> Step:
        from gdfast import _core

        one_step = super()._fresh()
        repeats = self.repeats

        def step() -> None:
            _core.run_repeated(one_step, repeats)

        return step

    def state_bytes(self) -> int:
        return 0


class ArithBound(Implementation):
    """Not an optimizer: gdfast's step on cache-resident data, without per-call costs."""

    name = "arith"
    kind = "bound"
    copies_workload = False
    description = ("gdfast's step repeated in place on a cache-resident block: the "
                   "arithmetic a step needs, at the core's speed")

    def __init__(self, isa: Optional[str] = None):
        self.isa = isa

    def supports(self, case: Case, dtype: np.dtype) -> Optional[str]:
        return Gdfast().supports(case, dtype)

    def build(self, case: Case, data: Data) -> Runner:
        return ArithRunner(case, data, self.isa)


# ---------------------------------------------------------------------------------------------
# The machine's bandwidth, once per run, on arrays far larger than the last-level cache.


class _ArrayRunner(Runner):
    """A bare step function on fixed arrays (machine bandwidth; not an optimizer)."""

    def __init__(self, step: Step, isa: Optional[str] = None):
        self.params, self.states, self._pooled = [], [], []
        self._step = step
        self.isa = isa
        self.step = step

    def _fresh(self) -> Step:
        return self._step

    def prepare(self) -> None:
        if self.isa is not None:
            from gdfast import _core

            _core.set_active_isa(self.isa)


def machine_bandwidth(n: int, threads: Sequence[int], batches: int, batch_time: float,
                      dtype: Any = np.float32, isa: Optional[str] = None,
                      notes: Optional[List[str]] = None) -> List[Dict[str, Any]]:
    """In-place stream with 0..3 states (12/20/28/36 B per fp32 element) and, with torch,
    STREAM triad, on ``n``-element arrays, every thread count, interleaved. Returns one dict
    per (pattern, threads): GB/s median, min, max."""
    from gdfast import _core

    dtype = np.dtype(dtype)
    arrays = [np.full(n, 0.5 + 0.1 * i, dtype=dtype) for i in range(5)]  # values don't matter
    p, g, s = arrays[0], arrays[1], arrays[2:]
    isz = dtype.itemsize
    slots: List[Slot] = []
    meta: List[Dict[str, Any]] = []
    for k in range(4):
        states = tuple(s[:k])

        def step(states: Tuple[np.ndarray, ...] = states) -> None:
            _core.stream(p, g, states, STREAM_SCALE)

        for t in threads:
            slots.append(Slot(_ArrayRunner(step, isa), t))
            meta.append({"pattern": f"in-place, {k} state{'s' if k != 1 else ''}",
                         "optimizers": PATTERNS[k], "states": k,
                         "bytes_per_elem": (3 + 2 * k) * isz, "threads": t, "numel": n})
    try:
        torch = _import("torch")
        ta, tb, tc = (torch.from_numpy(x) for x in (s[0], p, g))

        def triad() -> None:
            torch.add(tb, tc, alpha=0.5, out=ta)

        for t in threads:
            slots.append(Slot(_ArrayRunner(triad), t))
            meta.append({"pattern": "STREAM triad a = b + s*c (torch.add)", "optimizers": "",
                         "states": None, "bytes_per_elem": 3 * isz, "threads": t, "numel": n,
                         "note": "write-allocate traffic not counted (STREAM convention)"})
    except Unavailable:
        if notes is not None:
            notes.append("triad not measured: it needs torch (NumPy has no one-pass triad)")
    for slot in slots:
        slot.prepare()
        time_steps(slot.runner.step, 2)  # first touch, warm-up
        calibrate(slot, batch_time)
    run_batches(slots, batches, batch_time)
    out = []
    for slot, m in zip(slots, meta):
        bytes_ = m["bytes_per_elem"] * n
        m = dict(m)
        m["gb_s"] = bytes_ / statistics.median(slot.times) / 1e9
        m["gb_s_min"] = bytes_ / slot.high / 1e9
        m["gb_s_max"] = bytes_ / slot.low / 1e9
        out.append(m)
    return out
