"""CUDA support: whether this build has the kernels and a GPU is there to run them."""

from __future__ import annotations

from . import _core

__all__ = ["compiled", "is_available", "device_count"]

#: True if this build contains gdfast's CUDA kernels (GDFAST_ENABLE_CUDA=ON).
compiled: bool = bool(_core.cuda_compiled)


def is_available() -> bool:
    """True if the CUDA kernels are built and a driver and device are present. Never raises."""
    return bool(_core.cuda_available())


def device_count() -> int:
    """Visible CUDA devices (0 without a driver or without CUDA kernels in this build)."""
    return int(_core.cuda_device_count())
