"""Functional optimizer steps, in place, one fused pass.

Every tensor argument is either one array or a list/tuple of arrays (one per tensor, all
lists the same length); a list is stepped in a single call with a single parallel region.
Arrays are NumPy arrays or any DLPack tensor (torch.Tensor, ...; zero copy), C-contiguous
float32 or float64, param and states writeable, all arrays of one call the same dtype. A
rejected call raises before any array is written.

``grad_scale`` (default 1) divides the gradients inside the fused pass: pass the AMP loss
scale to unscale there instead of in a separate pass over the gradients. ``found_inf`` (a
number or 1-element tensor) skips the step when nonzero.

CUDA tensors (builds with CUDA kernels) run on their framework's current stream; there
``grad_scale``, ``found_inf``, ``lr`` and ``step`` may be 1-element float32 tensors on the
device, read by the kernel itself (no host synchronisation; capturable in a CUDA graph).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Union

import numpy as np

from . import _core, _device
from ._spec import checker

Tensors = Union[np.ndarray, Sequence[np.ndarray]]

__all__ = ["sgd_", "adam_", "lion_"]

_check_sgd = checker("sgd", ("step", "lr", "momentum", "dampening", "weight_decay", "grad_scale"))
_check_adam = checker("adam",
                      ("step", "lr", "beta1", "beta2", "eps", "weight_decay", "grad_scale"))
# Only CUDA builds and calls with found_inf take the device path (see _device.prepare).
_CUDA = bool(_core.cuda_compiled)
_check_lion = checker("lion", ("lr", "beta1", "beta2", "weight_decay", "grad_scale"))


def _route(param: Any, grad_scale: Any, found_inf: Any, lr: Any, step: Any) -> Any:
    """(stream, device_scalars, grad_scale, lr, step) for the kernel call, or None when
    found_inf says to skip the step. NumPy calls without found_inf pay a check or two."""
    if found_inf is None and (not _CUDA or isinstance(_device.first(param), np.ndarray)):
        return None, None, grad_scale, lr, step
    skip, *routed = _device.prepare(param, grad_scale, found_inf, lr, step)
    return None if skip is _device.SKIP else tuple(routed)


def sgd_(
    param: Tensors,
    grad: Tensors,
    momentum_buffer: Optional[Tensors] = None,
    *,
    step: int,
    lr: float,
    momentum: float = 0.0,
    dampening: float = 0.0,
    nesterov: bool = False,
    weight_decay: float = 0.0,
    maximize: bool = False,
    grad_scale: Any = 1.0,
    found_inf: Any = None,
) -> None:
    """One torch.optim.SGD step. ``step`` is the 1-based count after this update; on step 1
    the momentum buffer is set to the gradient (its old contents are ignored). SGD reads
    ``step`` on the host even when it is a device tensor (it picks the first-step variant)."""
    if not isinstance(step, int) and hasattr(step, "__dlpack__"):
        step = int(step)
    routed = _route(param, grad_scale, found_inf, lr, step)
    if routed is None:
        return
    stream, scalars, grad_scale, lr, step = routed
    _check_sgd(step, lr, momentum, dampening, weight_decay, grad_scale)
    if nesterov and (momentum <= 0.0 or dampening != 0.0):
        raise ValueError("nesterov: requires momentum > 0 and dampening == 0")
    _core.sgd(param, grad, momentum_buffer, step, lr, momentum, dampening, bool(nesterov),
              weight_decay, bool(maximize), grad_scale, stream, scalars)


def adam_(
    param: Tensors,
    grad: Tensors,
    exp_avg: Tensors,
    exp_avg_sq: Tensors,
    *,
    step: int,
    lr: float = 1e-3,
    beta1: float = 0.9,
    beta2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    max_exp_avg_sq: Optional[Tensors] = None,
    maximize: bool = False,
    grad_scale: Any = 1.0,
    found_inf: Any = None,
) -> None:
    """One Adam step (AdamW with ``decoupled_weight_decay=True``), as torch.optim.Adam.
    ``step`` is the 1-based count after this update (for the bias corrections)."""
    routed = _route(param, grad_scale, found_inf, lr, step)
    if routed is None:
        return
    stream, scalars, grad_scale, lr, step = routed
    _check_adam(step, lr, beta1, beta2, eps, weight_decay, grad_scale)
    _core.adam(param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq, step, lr, beta1, beta2, eps,
               weight_decay, bool(decoupled_weight_decay), bool(amsgrad), bool(maximize),
               grad_scale, stream, scalars)


def lion_(
    param: Tensors,
    grad: Tensors,
    exp_avg: Tensors,
    *,
    lr: float = 1e-4,
    beta1: float = 0.9,
    beta2: float = 0.99,
    weight_decay: float = 0.0,
    maximize: bool = False,
    grad_scale: Any = 1.0,
    found_inf: Any = None,
) -> None:
    """One Lion step (Chen et al. 2023) with decoupled weight decay."""
    routed = _route(param, grad_scale, found_inf, lr, 1)
    if routed is None:
        return
    stream, scalars, grad_scale, lr, _ = routed
    _check_lion(lr, beta1, beta2, weight_decay, grad_scale)
    _core.lion(param, grad, exp_avg, lr, beta1, beta2, weight_decay, bool(maximize), grad_scale,
               stream, scalars)
