"""pytest-benchmark suites over the cases of gdfast-bench (`pytest bench/ --benchmark-only`).

Each benchmark builds one implementation on one workload with the CLI's own code
(gdfast.bench), asserts its result against the float64 reference once (the gate), then times
one optimizer step per call. Benchmarks of one (optimizer, workload, threads) share a group,
so pytest-benchmark's tables read per case; the group also holds the bound (gdfast's in-place
stream with the optimizer's access pattern) and the arithmetic bound (gdfast's step repeated on
a cache-resident block; extra_info's time_scale converts its time per call to the workload).
Unlike gdfast-bench, pytest-benchmark times one implementation after the other, not
interleaved: on a shared machine, quote ratios from gdfast-bench.
`python bench/report.py RESULTS.json` turns `--benchmark-json RESULTS.json` into Gelem/s,
GB/s and % of the bound.

Not part of the default test run: pyproject's testpaths is ["tests"].
"""

from __future__ import annotations

import gc
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np
import pytest

import gdfast
from gdfast.bench.cases import CASES, Case
from gdfast.bench.gate import Gate
from gdfast.bench.impls import ArithBound, Bound, Implementation, registry
from gdfast.bench.machine import set_threads
from gdfast.bench.optional import Unavailable
from gdfast.bench.workloads import Data, Workload, make_data

IMPLS: Dict[str, Implementation] = {impl.name: impl for impl in registry()}
ACTIVE_ISA = gdfast.isa_info()["active"]
IMPLS["bound"] = Bound(ACTIVE_ISA)
IMPLS["arith"] = ArithBound(ACTIVE_ISA)
DEFAULT_THREADS = gdfast.get_num_threads()

_data: Dict[Tuple[str, str], Data] = {}


def data_for(workload: Workload, dtype: Any = np.float32) -> Data:
    """The workload's inputs; one workload cached at a time (GPT-2-small is 1 GB of them)."""
    key = (workload.name, np.dtype(dtype).name)
    if key not in _data:
        _data.clear()
        gc.collect()
        _data[key] = make_data(workload, dtype)
    return _data[key]


@pytest.fixture
def threads(request: pytest.FixtureRequest) -> Iterator[int]:
    """gdfast's and torch's thread count for the benchmark (parametrize indirectly to
    change it), restored afterwards."""
    n = getattr(request, "param", DEFAULT_THREADS)
    previous = gdfast.get_num_threads()
    set_threads(n)
    yield n
    set_threads(previous)


@pytest.fixture
def step_of(threads: int) -> Iterator[Callable[..., Callable[[], None]]]:
    """``step_of(impl, optimizer, workload, benchmark)``: builds the runner, asserts the
    gate, names the benchmark's group and extra info, returns the step to time."""
    runners = []

    def make(impl_name: str, optimizer: str, workload: Workload, benchmark: Any,
             dtype: Any = np.float32, group: Optional[str] = None) -> Callable[[], None]:
        impl = IMPLS[impl_name]
        case: Case = CASES[optimizer]
        try:
            impl.check_available()
        except Unavailable as exc:
            pytest.skip(str(exc))
        reason = impl.supports(case, np.dtype(dtype))
        if reason is not None:
            pytest.skip(reason)
        data = data_for(workload, dtype)
        try:
            runner = impl.build(case, data)
        except Unavailable as exc:  # e.g. a DeepSpeed op that does not build here
            pytest.skip(str(exc))
        runners.append(runner)
        runner.prepare()
        if impl.kind == "bound":
            runner.step()
        else:
            verdict = Gate(case, data).check(runner)
            assert verdict.ok, f"{impl_name} {optimizer} {workload.name}: {verdict.message}"
        benchmark.group = group or f"{optimizer} {workload.name} threads={threads}"
        benchmark.extra_info.update(
            implementation=impl_name, kind=impl.kind, optimizer=optimizer,
            workload=workload.name, numel=workload.numel, tensors=workload.tensors,
            threads=threads, bytes_per_elem=case.moved_bytes(data.precision),
            dtype=np.dtype(dtype).name, time_scale=runner.time_scale)
        return runner.step

    yield make
    for runner in runners:
        runner.close()
    gdfast.set_isa(ACTIVE_ISA)
