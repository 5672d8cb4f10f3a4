"""One tensor, fp32: every optimizer, sizes 1e4..1e7, gdfast against every installed reference
(NumPy running the reference rule, torch.optim for-loop/foreach/fused, lion-pytorch, DeepSpeed
CPUAdam/CPUAdagrad) and the bounds. The headline: Adam at 1e6 and 1e7, gdfast vs NumPy vs
torch.optim.Adam(fused=True).
"""

from __future__ import annotations

from typing import Any, Callable

import pytest

from gdfast.bench.cases import CASES
from gdfast.bench.impls import registry
from gdfast.bench.workloads import single, size_name

SIZES = [10**4, 10**5, 10**6, 10**7]
ALL = ["gdfast", *(i.name for i in registry() if i.kind == "reference"), "bound", "arith"]


@pytest.mark.parametrize("impl", ["gdfast", "numpy", "torch-fused", "bound", "arith"])
@pytest.mark.parametrize("size", [10**6, 10**7], ids=size_name)
def test_adam_headline(benchmark: Any, step_of: Callable[..., Any], size: int, impl: str) -> None:
    step = step_of(impl, "adam", single(size), benchmark,
                   group=f"headline: adam {size_name(size)}")
    benchmark(step)


@pytest.mark.parametrize("impl", ALL)
@pytest.mark.parametrize("size", SIZES, ids=size_name)
@pytest.mark.parametrize("optimizer", list(CASES))
def test_single(benchmark: Any, step_of: Callable[..., Any], optimizer: str, size: int,
                impl: str) -> None:
    benchmark(step_of(impl, optimizer, single(size), benchmark))
