"""Per-call overhead of a 16-element fp32 Adam step (argument handling, checks, dispatch and a
16-element kernel), from the two front doors:

- Python: ``gdfast.ops.adam_`` with every hyperparameter passed by keyword (issue 3's target:
  <= 1.5 us per call);
- Cython: ``adam_step`` of gdfast/cython_api.pxd in a nogil loop (examples/native's
  ``adam_steps``, the step count rising each call; issue 17's target: < 100 ns per call).

    pytest bench/bench_overhead.py --benchmark-only
    python bench/bench_overhead.py   # both, interleaved: median of 15 batches each
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, Optional

import numpy as np
import pytest

import gdfast

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import native_build  # noqa: E402  (tests/ helper, also used when run as a script)

N = 16
CALLS_PER_BATCH = 20_000
CYTHON_CALLS_PER_BATCH = 1_000_000


def _arrays() -> Any:
    rng = np.random.default_rng(0)
    p, g = (rng.standard_normal(N).astype(np.float32) for _ in range(2))
    return p, g, np.zeros(N, np.float32), np.zeros(N, np.float32)


def adam_call() -> Callable[[], None]:
    p, g, m, v = _arrays()
    adam_ = gdfast.ops.adam_

    def call() -> None:
        adam_(p, g, m, v, step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False, maximize=False)

    return call


def cython_calls(folder: Path, calls: int) -> Optional[Callable[[], None]]:
    """`calls` Cython calls per Python call (None if extensions cannot be built here)."""
    if native_build.why_cannot_build():
        return None
    example, _ = native_build.build_examples(folder)
    p, g, m, v = _arrays()
    return lambda: example.adam_steps(p, g, m, v, 1e-3, 1, calls)


def test_adam_16_elements_keywords(benchmark: Any) -> None:
    benchmark.group = "per-call overhead"
    benchmark(adam_call())


def test_adam_16_elements_cython_1000_calls(benchmark: Any, tmp_path: Path) -> None:
    calls = cython_calls(tmp_path, 1000)
    if calls is None:
        pytest.skip(native_build.why_cannot_build())
    benchmark.group = "per-call overhead"
    benchmark.extra_info["calls_per_round"] = 1000
    benchmark(calls)


def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        runs: Dict[str, Any] = {"gdfast.ops.adam_ (Python, keywords)": (adam_call(),
                                                                        CALLS_PER_BATCH)}
        cython = cython_calls(Path(folder), CYTHON_CALLS_PER_BATCH)
        if cython is None:
            print(f"Cython: not measured ({native_build.why_cannot_build()})")
        else:
            runs["adam_step (Cython, nogil loop)"] = (cython, 1)
        times: Dict[str, list] = {name: [] for name in runs}
        for batch in range(16):  # interleaved; the first batch of each warms up
            for name, (call, repeats) in runs.items():
                calls = repeats if repeats > 1 else CYTHON_CALLS_PER_BATCH
                t0 = time.perf_counter()
                for _ in range(repeats):
                    call()
                if batch:
                    times[name].append((time.perf_counter() - t0) / calls)
        for name, values in times.items():
            median = statistics.median(values)
            print(f"16-element Adam step, {name}: median {median * 1e9:.0f} ns per call "
                  f"(min {min(values) * 1e9:.0f}, max {max(values) * 1e9:.0f}; 15 batches)")
        if len(times) == 2:
            python, cython_times = (statistics.median(v) for v in times.values())
            print(f"Cython / Python: {cython_times / python:.3f}")


if __name__ == "__main__":
    main()
