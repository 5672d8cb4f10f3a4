"""Which SIMD level runs the kernels: introspection and in-process override."""

from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator

from . import _core

__all__ = ["isa_info", "use_isa", "set_isa"]


def isa_info() -> Dict[str, Any]:
    """``{"compiled": [...], "supported": [...], "active": name, "prefetch_bytes": n}``,
    levels lowest first. ``scalar`` is the one-lane reference level; ``baseline`` is SSE2 on
    x86-64. ``prefetch_bytes``: how far ahead the loop prefetches each array (GDFAST_PREFETCH;
    default 1024 on Intel CPUs, 0 elsewhere)."""
    return {
        "compiled": _core.compiled_isas(),
        "supported": _core.supported_isas(),
        "active": _core.active_isa(),
        "prefetch_bytes": _core.prefetch_bytes(),
    }


def set_isa(name: str) -> None:
    """Switch every later step of this process to level ``name`` (ValueError if this build
    lacks it or this CPU cannot run it)."""
    if not isinstance(name, str):
        raise TypeError(f"name: expected a level name such as {_core.active_isa()!r}, got "
                        f"{type(name).__name__}")
    _core.set_active_isa(name)


@contextlib.contextmanager
def use_isa(name: str) -> Iterator[None]:
    """Run the enclosed steps on level ``name``, then restore the previous level."""
    previous = _core.active_isa()
    if not isinstance(name, str):
        set_isa(name)  # raises its TypeError before anything changes
    set_isa(name)
    try:
        yield
    finally:
        set_isa(previous)
