"""Model-shaped tensor lists, fp32: GPT-2 small's 148 parameter tensors (124M parameters) and
1000 tensors of 1024 elements; every optimizer, gdfast (one multi-tensor call per step)
against every installed reference and the bound."""

from __future__ import annotations

from typing import Any, Callable

import pytest

from gdfast.bench.cases import CASES
from gdfast.bench.impls import registry
from gdfast.bench.workloads import gpt2_small, many_small

WORKLOADS = {"gpt2-small": gpt2_small, "1000x1024": many_small}
ALL = ["gdfast", *(i.name for i in registry() if i.kind == "reference"), "bound"]


@pytest.mark.parametrize("impl", ALL)
@pytest.mark.parametrize("optimizer", list(CASES))
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_model(benchmark: Any, step_of: Callable[..., Any], workload: str, optimizer: str,
               impl: str) -> None:
    benchmark(step_of(impl, optimizer, WORKLOADS[workload](), benchmark))
