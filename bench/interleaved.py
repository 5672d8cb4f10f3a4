"""What the scripts of bench/ share: the timing (steps run in turn, round after round, so that
the machine's noise falls on all of them alike; each one's median), and the torch params with
gradients they step."""

from __future__ import annotations

import statistics
import time
from typing import Any, Callable, Dict, List, Mapping, Sequence

import pytest

ROUNDS = 9


def interleaved_medians(steps: Mapping[str, Callable[[], None]],
                        rounds: int = ROUNDS) -> Dict[str, float]:
    """Each step's median time in seconds over ``rounds`` rounds, one call of each per round."""
    times: Dict[str, List[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


def print_medians(what: str, median: Mapping[str, float]) -> None:
    """The medians, under a heading that says what was timed."""
    print(f"{what}; median of {ROUNDS}, interleaved")
    for name, t in median.items():
        print(f"  {name:<18}{t * 1e3:9.1f} ms")


def torch_params(shapes: Sequence[Any]) -> List[Any]:
    """float32 N(0, 1) params of these shapes, each with an N(0, 1) gradient (seeded)."""
    torch = pytest.importorskip("torch")
    gen = torch.Generator().manual_seed(0)
    out = []
    for shape in shapes:
        p = torch.randn(shape, generator=gen).requires_grad_()
        p.grad = torch.randn(shape, generator=gen)
        out.append(p)
    return out
