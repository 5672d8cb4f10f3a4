"""Convergence monitoring from the step's own pass (README "Monitoring"): the kernel adds the
sums of squares of the gradients it reads, of the updates (new param - old) and of the new
params to a float64 array of three (``StepArgs::monitor``); these turn the sums into norms."""

from __future__ import annotations

import math
from typing import Any, Dict, Optional

import numpy as np

NAMES = ("grad_norm", "update_norm", "param_norm")


def check_monitor(monitor: Any) -> bool:
    """monitor as a bool; TypeError naming it otherwise."""
    if not isinstance(monitor, (bool, np.bool_)):
        raise TypeError(f"monitor: expected True or False, got {monitor!r}")
    return bool(monitor)


def monitor_sums(monitor: Any) -> Optional[np.ndarray]:
    """The array the kernel adds its sums to (None: not monitored)."""
    return np.zeros(3) if check_monitor(monitor) else None


def norms(sums: np.ndarray, grad_scale: Any) -> Dict[str, float]:
    """The norms of a step's sums; the gradients' unscaled by AMP's grad_scale, as the step
    unscales them."""
    return {"grad_norm": math.sqrt(sums[0]) / abs(float(grad_scale)),
            "update_norm": math.sqrt(sums[1]), "param_norm": math.sqrt(sums[2])}


def step_norms(out: Optional[Dict[str, float]], sums: np.ndarray,
               grad_scale: Any) -> Dict[str, Any]:
    """An op's result with monitor=True: its scalar states (if any) and the norms."""
    return {**(out or {}), **norms(sums, grad_scale)}


def skipped_norms(out: Optional[Dict[str, float]]) -> Dict[str, Any]:
    """The same for a step found_inf skipped: no norms (None), as nothing was stepped."""
    return {**(out or {}), **dict.fromkeys(NAMES)}
