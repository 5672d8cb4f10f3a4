"""Fused clipping on fp32 AdamW, 1e8 elements.

By the gradients' norm (``max_grad_norm``):
- gdfast's clipped step against its unclipped step (target: <= 1.3x): the norm pass reads the
  gradients once more (4 of the step's 28 B per element) and the factor rides in the step;
- against ``torch.nn.utils.clip_grad_norm_`` then ``torch.optim.AdamW(fused=True)`` (target:
  gdfast >= 2x faster).

By value (``max_grad_value``): the step clamps each gradient as it loads it (no pass of its
own), against the unclipped step and ``torch.nn.utils.clip_grad_value_`` then fused AdamW.

    pytest bench/bench_clip.py --benchmark-only
    python bench/bench_clip.py [size]   # all five, interleaved: median of 9 batches each

Each implementation checks its first step against the float64 arithmetic of clipping then
AdamW before it is timed.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Dict

import numpy as np
import pytest
from interleaved import interleaved_medians, print_medians

import gdfast

N = int(1e8)
MAX_NORM = 1.0
MAX_VALUE = 0.5  # (clamps 62% of the N(0, 1) gradients)
HYPER = dict(lr=1e-3, weight_decay=1e-2)


def _problem(n: int) -> Any:
    rng = np.random.default_rng(0)
    return rng.standard_normal(n).astype(np.float32), rng.standard_normal(n).astype(np.float32)


def _expected_first_step(p: np.ndarray, g: np.ndarray, by: str) -> np.ndarray:
    """AdamW's first step on clipped grads (by "norm" or "value"), in float64: m/sqrt(v) =
    sign(g) up to eps."""
    if by == "value":
        clipped = np.clip(g.astype(np.float64), -MAX_VALUE, MAX_VALUE)
    else:
        norm = np.sqrt(np.sum(g.astype(np.float64) ** 2))
        clipped = g * min(1.0, MAX_NORM / (norm + 1e-6))
    p64 = p.astype(np.float64) * (1 - HYPER["lr"] * HYPER["weight_decay"])
    return p64 - HYPER["lr"] * clipped / (np.abs(clipped) + 1e-8)


def gdfast_step(n: int, by: str = "") -> Callable[[], None]:
    p, g = _problem(n)
    m, v = np.zeros_like(p), np.zeros_like(p)
    expected = _expected_first_step(p, g, by) if by else None
    count = [0]
    extra: Dict[str, Any] = ({"max_grad_norm": MAX_NORM} if by == "norm" else
                             {"max_grad_value": MAX_VALUE} if by == "value" else {})

    def step() -> None:
        count[0] += 1
        gdfast.ops.adam_(p, g, m, v, step=count[0], decoupled_weight_decay=True, **HYPER,
                         **extra)
    step()
    if expected is not None:
        np.testing.assert_allclose(p, expected, rtol=0, atol=1e-5)
    return step


def torch_step(n: int, by: str) -> Callable[[], None]:
    torch = pytest.importorskip("torch")
    p, g = _problem(n)
    expected = _expected_first_step(p, g, by)
    param = torch.tensor(p, requires_grad=True)
    param.grad = torch.tensor(g)
    opt = torch.optim.AdamW([param], fused=True, **HYPER)

    def step() -> None:
        # (the grad, clipped in place, stays clipped after the first step: the work stays the
        # same, a norm pass and a scaling pass, or a clamping pass, whatever the values)
        if by == "value":
            torch.nn.utils.clip_grad_value_([param], MAX_VALUE)
        else:
            torch.nn.utils.clip_grad_norm_([param], MAX_NORM)
        opt.step()
    step()
    np.testing.assert_allclose(param.detach().numpy(), expected, rtol=0, atol=1e-5)
    return step


IMPLS = {"gdfast": lambda n: gdfast_step(n),
         "gdfast-clipped": lambda n: gdfast_step(n, "norm"),
         "torch-clip-fused": lambda n: torch_step(n, "norm"),
         "gdfast-value": lambda n: gdfast_step(n, "value"),
         "torch-value-fused": lambda n: torch_step(n, "value")}


@pytest.mark.benchmark(group="clip-adamw-1e8")
@pytest.mark.parametrize("impl", list(IMPLS))
def test_clip(benchmark, impl):
    benchmark.pedantic(IMPLS[impl](N), rounds=5, iterations=1, warmup_rounds=1)


def main(n: int) -> None:
    steps = {name: make(n) for name, make in IMPLS.items()}
    median = interleaved_medians(steps)
    print_medians(f"n={n:.0e}, {gdfast.get_num_threads()} threads", median)
    clipped = median["gdfast-clipped"]
    print(f"clipped / unclipped: {clipped / median['gdfast']:.2f}x (target <= 1.3x)")
    print(f"torch / gdfast clipped: {median['torch-clip-fused'] / clipped:.2f}x (target >= 2x)")
    value = median["gdfast-value"]
    print(f"by value / unclipped: {value / median['gdfast']:.2f}x")
    print(f"torch by value / gdfast by value: {median['torch-value-fused'] / value:.2f}x")


if __name__ == "__main__":
    main(int(float(sys.argv[1])) if len(sys.argv) > 1 else N)
