"""The timing the scripts of bench/ share: steps run in turn, round after round, so that the
machine's noise falls on all of them alike; each one's median."""

from __future__ import annotations

import statistics
import time
from typing import Callable, Dict, List, Mapping

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
