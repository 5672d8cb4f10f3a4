"""Per-call overhead of the functional ops: a 16-element fp32 ``gdfast.ops.adam_`` with every
hyperparameter passed by keyword, end to end from Python (argument parsing, checks, dispatch,
a 16-element kernel). Issue 3's target is <= 1.5 us per call.

    pytest bench/bench_overhead.py --benchmark-only
    python bench/bench_overhead.py        # median of 15 batches of 20,000 calls
"""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np

import gdfast

N = 16
CALLS_PER_BATCH = 20_000


def adam_call() -> Callable[[], None]:
    rng = np.random.default_rng(0)
    p, g = (rng.standard_normal(N).astype(np.float32) for _ in range(2))
    m, v = np.zeros(N, np.float32), np.zeros(N, np.float32)
    adam_ = gdfast.ops.adam_

    def call() -> None:
        adam_(p, g, m, v, step=1, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8,
              weight_decay=0.0, decoupled_weight_decay=False, amsgrad=False, maximize=False)

    return call


def test_adam_16_elements_keywords(benchmark: Any) -> None:
    benchmark.group = "per-call overhead"
    benchmark(adam_call())


def main() -> None:
    call = adam_call()
    for _ in range(CALLS_PER_BATCH):  # warm up
        call()
    times = []
    for _ in range(15):
        t0 = time.perf_counter()
        for _ in range(CALLS_PER_BATCH):
            call()
        times.append((time.perf_counter() - t0) / CALLS_PER_BATCH)
    median = statistics.median(times)
    print(f"16-element gdfast.ops.adam_, keyword arguments: median {median * 1e6:.2f} us per "
          f"call (min {min(times) * 1e6:.2f}, max {max(times) * 1e6:.2f}; 15 batches of "
          f"{CALLS_PER_BATCH} calls)")


if __name__ == "__main__":
    main()
