"""Clipping the gradients, fused into the step.

By their global L2 norm (``max_grad_norm``): one pass reads the gradients for their norm
(``_core.sum_squares``: per array, in double, bitwise the same for any thread count, ISA
level and device; on CUDA the norm comes back to the host, one synchronisation), and the
clip factor is folded into the step's gradient factor (``grad_scale`` divides the gradients
inside the update pass): two passes over the gradients, never the three of
``torch.nn.utils.clip_grad_norm_`` then a step.

By value (``max_grad_value``): the kernel clamps each gradient as it loads it, as
``torch.nn.utils.clip_grad_value_`` would before the step: no pass of its own."""

from __future__ import annotations

import math
import numbers
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _core, _device
from ._monitor import check_monitor


def check_max_norm(value: Any) -> Optional[float]:
    """max_grad_norm as a float (None: no clipping); TypeError/ValueError naming it."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"max_grad_norm: expected None or a number >= 0, got {value!r}")
    checked = float(value)
    if not (0.0 <= checked < math.inf):
        raise ValueError(f"max_grad_norm: expected None or a finite number >= 0, got {checked!r}")
    return checked


def check_max_value(value: Any, max_norm: Any) -> Optional[float]:
    """max_grad_value as a float (None: no clipping by value); TypeError/ValueError naming it,
    also when max_grad_norm is given too."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"max_grad_value: expected None or a number >= 0, got {value!r}")
    checked = float(value)
    if not checked >= 0.0:
        raise ValueError(f"max_grad_value: expected None or a number >= 0, got {checked!r}")
    if max_norm is not None:
        raise ValueError("max_grad_value and max_grad_norm: clip by one of them, not both")
    return checked


def check_group_options(group: Mapping[str, Any]) -> None:
    """A param group's clipping and monitoring options (max_grad_norm, max_grad_value,
    clip_per_group, monitor); TypeError/ValueError naming the one at fault."""
    check_max_norm(group.get("max_grad_norm"))
    check_max_value(group.get("max_grad_value"), group.get("max_grad_norm"))
    check_monitor(group.get("monitor", False))
    per_group = group.get("clip_per_group", False)
    if not isinstance(per_group, (bool, np.bool_)):
        raise TypeError(f"clip_per_group: expected True or False, got {per_group!r}")


def array_sums(arrays: Any, name: str) -> List[float]:
    """Each array's sum of squares (_core.sum_squares); CUDA tensors are read on their
    framework's current stream."""
    head = _device.first(arrays)
    stream = _device.current_stream(head) if _device.on_cuda(head) else None
    return _core.sum_squares(arrays, name, stream)


def sum_squares(grads: Any, name: str = "grad") -> float:
    """The sum of the squares of every element of grads (an array or a list), the arrays'
    sums added in list order."""
    total = 0.0
    for part in array_sums(grads, name):
        total += part
    return total


def norms(arrays: Any) -> List[float]:
    """The L2 norm of each array of ``arrays`` (one array, or a list of them: NumPy or any
    DLPack tensor, CPU or CUDA, float32/float64/bfloat16/float16), for a trust ratio (LAMB) or
    monitoring: squares summed in double over fixed chunks added in order (the sum clipping
    uses), so bitwise the same for any thread count, ISA level and device."""
    return [math.sqrt(part) for part in array_sums(arrays, "arrays")]


def global_norm(arrays: Any) -> float:
    """The L2 norm of all the elements of ``arrays`` together, as ``max_grad_norm`` clips by
    it (``last_grad_norm``) and as ``torch.nn.utils.get_total_norm`` computes it (torch sums in
    the arrays' dtype; here in double)."""
    return math.sqrt(sum_squares(arrays, "arrays"))


def clip_factor(norm: float, max_norm: float, float64: bool) -> float:
    """What torch.nn.utils.clip_grad_norm_ multiplies the gradients by: max_norm / (norm +
    1e-6), at most 1, computed in the gradients' precision (float32 unless they are float64).
    A non-finite norm gives 0 or NaN, as torch's does."""
    if float64:
        return min(max_norm / (norm + 1e-6), 1.0)
    f32 = np.float32
    with np.errstate(over="ignore"):  # (a norm beyond float32: inf, as torch's float32 norm)
        coef = f32(max_norm) / (f32(norm) + f32(1e-6))
    return float(min(coef, f32(1.0)))


def clipped_scale(grad_scale: float, norm: float, max_norm: float, float64: bool) -> float:
    """The grad_scale that also clips: the gradients are divided by grad_scale (AMP's loss
    scale, 1 without it) and then multiplied by the clip factor of their unscaled norm."""
    factor = clip_factor(norm / grad_scale, max_norm, float64)
    if factor == 1.0:
        return grad_scale
    return grad_scale / factor if factor != 0.0 else math.inf  # (inf: the gradients times 0)


def host_grad_scale(grad_scale: Any) -> float:
    """grad_scale as a host number: a CUDA call's 1-element device tensor is read back (the
    clipping norm is read back anyway), and it must then be a finite number > 0, as a host
    grad_scale is checked to be (_device.as_float: one element, a real number); TypeError or
    ValueError naming it otherwise."""
    value = float(_device.as_float("grad_scale", grad_scale))
    if _device.is_tensor(grad_scale) and not 0.0 < value < math.inf:
        raise ValueError(f"grad_scale: expected a finite number > 0 to clip with, got {value!r}")
    return value


def clipped_call_scale(grads: Any, max_norm: Any, grad_scale: float,
                       device_scalars: Optional[Tuple[Any, ...]] = None
                       ) -> Tuple[float, Optional[Tuple[Any, ...]]]:
    """An op's call with max_grad_norm=max_norm (checked here), clipping by the norm of the
    call's grads (an array or a list): its grad_scale and device scalars. A device grad_scale
    among a CUDA call's device scalars (grad_scale, found_inf, lr, step) is read back and
    replaced by the host value that also clips."""
    checked = check_max_norm(max_norm)
    if checked is None:
        return grad_scale, device_scalars
    if device_scalars is not None and device_scalars[0] is not None:
        grad_scale = host_grad_scale(device_scalars[0])
        rest = (None, *device_scalars[1:])
        device_scalars = rest if any(x is not None for x in rest) else None
    first = grads[0] if isinstance(grads, (list, tuple)) and grads else grads
    float64 = str(getattr(first, "dtype", "")).endswith("float64")
    scale = clipped_scale(grad_scale, math.sqrt(sum_squares(grads)), checked, float64)
    return scale, device_scalars


def clipped_scales(calls: Sequence[Tuple[Mapping[str, Any], Any, bool]],
                   grad_scale: Any) -> Tuple[Optional[List[Any]], Optional[float]]:
    """A class's step: each call's (its group, its gradients, whether they are float64)
    grad_scale with the group's clipping folded in (None: no group clips), and the norm the
    groups with clip_per_group=False share (None if none): over all their gradients, in order,
    as clip_grad_norm_ over their params (the classes keep it as ``last_grad_norm``). A CUDA
    step's device grad_scale (AMP) is read back: the scales are host numbers."""
    if all(group.get("max_grad_norm") is None for group, *_ in calls):
        return None, None
    grad_scale = host_grad_scale(grad_scale)
    shared, any_shared = 0.0, False
    own: Dict[int, float] = {}
    for group, grads, _ in calls:
        if group.get("max_grad_norm") is None:
            continue
        total = sum_squares(grads)
        if group.get("clip_per_group", False):
            own[id(group)] = own.get(id(group), 0.0) + total
        else:
            shared, any_shared = shared + total, True
    scales = []
    for group, grads, float64 in calls:
        max_norm = group.get("max_grad_norm")
        if max_norm is None:
            scales.append(grad_scale)
            continue
        norm = math.sqrt(own[id(group)] if group.get("clip_per_group", False) else shared)
        scales.append(clipped_scale(grad_scale, norm, float(max_norm), float64))
    return scales, math.sqrt(shared) if any_shared else None
