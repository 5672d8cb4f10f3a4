"""Where a call runs: CPU arrays, or CUDA tensors on their framework's current stream with
per-call scalars that may live in device memory. Only consulted when the build has CUDA
kernels or a call passes ``found_inf``, so the NumPy path pays nothing for it."""

from __future__ import annotations

import math
import numbers
from typing import Any, Optional, Tuple

import numpy as np

_CUDA_DEVICE_TYPES = (2, 13)  # DLPack kDLCUDA, kDLCUDAManaged
SKIP = object()  # the step must be skipped (found_inf is set)


def first(tensors: Any) -> Any:
    """The first tensor of a call's argument (one tensor, or a list of them)."""
    if isinstance(tensors, (list, tuple)):
        return tensors[0] if tensors else None
    return tensors


def on_cuda(obj: Any) -> bool:
    if obj is None or isinstance(obj, np.ndarray) or not hasattr(obj, "__dlpack_device__"):
        return False
    try:
        return int(obj.__dlpack_device__()[0]) in _CUDA_DEVICE_TYPES
    except Exception:  # a lying producer: the kernel call's checks name it
        return False


def is_tensor(x: Any) -> bool:
    return hasattr(x, "__dlpack__")


def as_float(name: str, x: Any) -> Any:
    """A 1-element array or tensor's value; anything else as it is (range-checked later)."""
    if not is_tensor(x):
        return x
    if math.prod(tuple(getattr(x, "shape", ()))) != 1:  # not a number, as without found_inf
        raise TypeError(f"{name}: expected a real number or a 1-element tensor, got shape "
                        f"{tuple(x.shape)}")
    value = x.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name}: expected a real number, got a tensor of "
                        f"{type(value).__name__}")
    return value


def _one_element(name: str, x: Any) -> None:
    shape = tuple(getattr(x, "shape", ()))
    if math.prod(shape) != 1:
        raise ValueError(f"{name}: expected a 1-element tensor, got shape {shape}")


def host_step(step: Any) -> Any:
    """A step count given as a 1-element array or tensor, as a Python int (exactly: a
    fractional value is an error, not truncated); anything else as it is (range-checked later)."""
    if not is_tensor(step):
        return step
    _one_element("step", step)
    value = step.item()
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError(f"step: expected an integer, got {value!r}")
        value = int(value)
    return value


def found_inf_value(found_inf: Any) -> Any:
    """found_inf as a host float, or the 1-element tensor itself when it is on a CUDA device;
    TypeError/ValueError naming found_inf for anything else."""
    if is_tensor(found_inf):
        _one_element("found_inf", found_inf)
        if on_cuda(found_inf):
            return found_inf
        found_inf = found_inf.item()
    if not isinstance(found_inf, numbers.Real):  # (bool: a flag, fine)
        raise TypeError("found_inf: expected None, a number or a 1-element tensor, got "
                        f"{type(found_inf).__name__}")
    try:
        return float(found_inf)
    except OverflowError:  # an int beyond any double: nonzero all the same
        return math.inf


def current_stream(obj: Any) -> int:
    """The caller's current CUDA stream for obj's framework, as DLPack's __dlpack__(stream=)
    wants it (1 for the legacy default stream, whose handle is 0)."""
    module = type(obj).__module__.split(".")[0]
    handle = 0
    if module == "torch":
        import torch

        handle = torch.cuda.current_stream(obj.device).cuda_stream
    elif module == "cupy":
        import cupy

        handle = cupy.cuda.get_current_stream().ptr
    return handle if handle != 0 else 1


def prepare(param: Any, grad_scale: Any, found_inf: Any, lr: Any,
            step: Any) -> Tuple[Any, Optional[int], Optional[Tuple[Any, ...]], Any, Any, Any]:
    """Returns (status, stream, device_scalars, grad_scale, lr, step) with the host values the
    range checks see. status is SKIP when a host-side found_inf says so: the caller still
    checks every argument, so that a skipped step accepts only what a taken one would."""
    if found_inf is not None:
        found_inf = found_inf_value(found_inf)
    first_tensor = first(param)
    skip = SKIP if found_inf is not None and not is_tensor(found_inf) and found_inf != 0.0 \
        else None
    if not on_cuda(first_tensor) or skip is SKIP:
        if is_tensor(found_inf):
            raise ValueError("found_inf: a CUDA tensor, but the params are CPU arrays")
        return (skip, None, None, as_float("grad_scale", grad_scale), as_float("lr", lr),
                host_step(step))
    scalars = tuple(x if is_tensor(x) else None for x in (grad_scale, found_inf, lr, step))
    # Device-resident values are not range-checked (that would synchronise): placeholders.
    grad_scale = 1.0 if is_tensor(grad_scale) else grad_scale
    lr = 0.0 if is_tensor(lr) else lr
    step = 1 if is_tensor(step) else step
    device_scalars = scalars if any(x is not None for x in scalars) else None
    return None, current_stream(first_tensor), device_scalars, grad_scale, lr, step
