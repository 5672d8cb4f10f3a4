"""In-place bandwidth: the machine's, once per run, with each optimizer's access pattern,
measured inside gdfast (``gdfast._core.stream``: the optimizers' very loop, threads and split,
with one multiply-add per written array instead of the update rule). The same kernel on each
workload is the memory bound of impls.py (``Bound``); its arithmetic bound (``ArithBound``)
is gdfast's step repeated on a cache-resident block. A step cannot beat the slower of the two.

An optimizer step reads param, grad and its states and writes param and states back where
they were read, so no cache line is fetched just to be overwritten. STREAM triad
(a = b + s*c) writes a third array it never read: write-allocate traffic that its byte count
does not include, which understates in-place bandwidth (by ~1.45x on the machines of
shared/BENCHMARKING.md). Triad is measured too, for reference, when torch is installed (NumPy
has no one-pass triad: ``a = b + s*c`` is two passes and a temporary).
"""

from __future__ import annotations

import statistics
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .optional import Unavailable, load
from .timing import Slot, calibrate, run_batches, time_steps

STREAM_SCALE = 1e-6  # states and param grow by 1e-6 * grad per step: no overflow, no denormals
MAX_STATES = 4  # _core.stream takes up to 4 states, as many as any rule uses


# ---------------------------------------------------------------------------------------------
# The machine's bandwidth, once per run, on arrays far larger than the last-level cache.


class _Kernel:
    """A bare step function on fixed arrays (machine bandwidth; not an optimizer)."""

    def __init__(self, step: Callable[[], None], isa: Optional[str] = None):
        self.step = step
        self.isa = isa

    def prepare(self) -> None:
        if self.isa is not None:
            from gdfast import _core

            _core.set_active_isa(self.isa)


def machine_bandwidth(n: int, threads: Sequence[int], batches: int, batch_time: float,
                      dtype: Any = np.float32, isa: Optional[str] = None,
                      notes: Optional[List[str]] = None,
                      labels: Optional[Mapping[int, str]] = None) -> List[Dict[str, Any]]:
    """In-place stream with 0..3 states (12/20/28/36 B per fp32 element) and, with torch,
    STREAM triad, on ``n``-element arrays, every thread count, interleaved. Returns one dict
    per (pattern, threads): GB/s median, min, max. ``labels[k]``: the optimizers whose step
    has k states, for the report."""
    from gdfast import _core

    dtype = np.dtype(dtype)
    arrays = [np.full(n, 0.5 + 0.1 * i, dtype=dtype) for i in range(2 + MAX_STATES)]
    # (the values do not matter)
    p, g, s = arrays[0], arrays[1], arrays[2:]
    isz = dtype.itemsize
    slots: List[Slot] = []
    meta: List[Dict[str, Any]] = []
    for k in range(MAX_STATES + 1):
        states = tuple(s[:k])

        def step(states: Tuple[np.ndarray, ...] = states) -> None:
            _core.stream(p, g, states, STREAM_SCALE)

        for t in threads:
            slots.append(Slot(_Kernel(step, isa), t))
            meta.append({"pattern": f"in-place, {k} state{'s' if k != 1 else ''}",
                         "optimizers": (labels or {}).get(k, ""), "states": k,
                         "bytes_per_elem": (3 + 2 * k) * isz, "threads": t, "numel": n})
    try:
        torch = load("torch")
        ta, tb, tc = (torch.from_numpy(x) for x in (s[0], p, g))

        def triad() -> None:
            torch.add(tb, tc, alpha=0.5, out=ta)

        for t in threads:
            slots.append(Slot(_Kernel(triad), t))
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
