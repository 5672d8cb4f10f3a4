"""Monitoring (``monitor=True``) on fp32 AdamW, 1e8 elements: the gradients', updates' and new
params' L2 norms summed inside the step's own pass.

- gdfast's monitored step against its plain step (target: <= 1.05x);
- what a torch user would run for the same three numbers: torch's fused AdamW with a copy of
  the params before the step, then ``torch.linalg.vector_norm`` of the gradients, of the
  differences and of the params: as written by default (float32: 1-2% off for 1e8
  values), and with ``dtype=torch.float64`` (as accurate as gdfast's double sums).

    pytest bench/bench_monitor.py --benchmark-only
    python bench/bench_monitor.py [size]   # all five, interleaved: median of 9 batches each

Each monitored implementation checks its first step's norms against float64 NumPy before it
is timed.
"""

from __future__ import annotations

import sys
from typing import Callable, Dict, List

import numpy as np
import pytest
from interleaved import interleaved_medians, print_medians

import gdfast

N = int(1e8)
HYPER = dict(lr=1e-3, weight_decay=1e-2)


def _problem(n: int):
    rng = np.random.default_rng(0)
    return rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)


def _check(norms: Dict[str, float], g: np.ndarray, before: np.ndarray, p: np.ndarray,
           rtol: float = 1e-9) -> None:
    expected = {"grad_norm": np.linalg.norm(g.astype(np.float64)),
                "update_norm": np.linalg.norm((p - before).astype(np.float64)),
                "param_norm": np.linalg.norm(p.astype(np.float64))}
    for name, value in expected.items():
        np.testing.assert_allclose(norms[name], value, rtol=rtol, err_msg=name)


def gdfast_step(n: int, monitor: bool) -> Callable[[], None]:
    p, g = _problem(n)
    m, v = np.zeros_like(p), np.zeros_like(p)
    count = [0]
    seen: List[Dict[str, float]] = []

    def step() -> None:
        count[0] += 1
        out = gdfast.ops.adam_(p, g, m, v, step=count[0], decoupled_weight_decay=True, **HYPER,
                               monitor=monitor)
        if monitor and not seen:
            seen.append(out)
    before = p.copy()
    step()
    if monitor:
        _check(seen[0], g, before, p)
    return step


def torch_step(n: int, monitor: bool, float64: bool = False) -> Callable[[], None]:
    torch = pytest.importorskip("torch")
    p, g = _problem(n)
    param = torch.tensor(p, requires_grad=True)
    param.grad = torch.tensor(g)
    opt = torch.optim.AdamW([param], fused=True, **HYPER)
    seen: List[Dict[str, float]] = []

    def step() -> None:
        if not monitor:
            opt.step()
            return
        with torch.no_grad():
            before = param.detach().clone()
            opt.step()
            def norm(x):
                return float(torch.linalg.vector_norm(x, dtype=torch.float64 if float64 else None))
            norms = {"grad_norm": norm(param.grad), "update_norm": norm(param.detach() - before),
                     "param_norm": norm(param.detach())}
        if not seen:
            seen.append(norms)
    before = p.copy()
    step()
    if monitor:  # (torch's float32 norms of 1e8 values are 1-2% off)
        _check(seen[0], g, before, param.detach().numpy(), 1e-9 if float64 else 5e-2)
    return step


IMPLS = {"gdfast": lambda n: gdfast_step(n, False),
         "gdfast-monitored": lambda n: gdfast_step(n, True),
         "torch-fused": lambda n: torch_step(n, False),
         "torch-fused-norms": lambda n: torch_step(n, True),
         "torch-fused-norms64": lambda n: torch_step(n, True, float64=True)}


@pytest.mark.benchmark(group="monitor-adamw-1e8")
@pytest.mark.parametrize("impl", list(IMPLS))
def test_monitor(benchmark, impl):
    benchmark.pedantic(IMPLS[impl](N), rounds=5, iterations=1, warmup_rounds=1)


def main(n: int) -> None:
    steps = {name: make(n) for name, make in IMPLS.items()}
    median = interleaved_medians(steps)
    print_medians(f"n={n:.0e}, {gdfast.get_num_threads()} threads", median)
    monitored = median["gdfast-monitored"]
    print(f"monitored / plain: {monitored / median['gdfast']:.3f}x (target <= 1.05x)")
    for name in ("torch-fused-norms", "torch-fused-norms64"):
        print(f"{name} / gdfast monitored: {median[name] / monitored:.2f}x")


if __name__ == "__main__":
    main(int(float(sys.argv[1])) if len(sys.argv) > 1 else N)
