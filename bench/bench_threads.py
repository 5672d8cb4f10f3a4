"""1 thread against all threads, fp32 Adam: gdfast, the multi-threaded references (torch fused,
DeepSpeed CPUAdam) and the bound; one group per workload so the thread counts sit side by
side."""

from __future__ import annotations

from typing import Any, Callable

import pytest

import gdfast
from gdfast.bench.workloads import many_small, single, size_name

THREADS = sorted({1, max(2, gdfast.get_num_threads())})
WORKLOADS = {size_name(n): (lambda n=n: single(n)) for n in (10**5, 10**6, 10**7)}
WORKLOADS["1000x1024"] = many_small


@pytest.mark.parametrize("threads", THREADS, indirect=True, ids=lambda n: f"threads={n}")
@pytest.mark.parametrize("impl", ["gdfast", "torch-fused", "deepspeed", "bound"])
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_threads(benchmark: Any, step_of: Callable[..., Any], threads: int, workload: str,
                 impl: str) -> None:
    step = step_of(impl, "adam", WORKLOADS[workload](), benchmark,
                   group=f"threads: adam {workload}")
    benchmark(step)
