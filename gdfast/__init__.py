"""gdfast: fused, SIMD-vectorized, multi-threaded optimizer steps for NumPy arrays.

Functional in-place ops live in :mod:`gdfast.ops`; stateful optimizers with torch.optim's
constructors are :class:`SGD`, :class:`Adam`, :class:`AdamW` and :class:`Lion`.
"""

from . import _core, cuda, ops
from .isa import isa_info, set_isa, use_isa
from .optim import SGD, Adam, AdamW, Lion, Optimizer

__version__: str = _core.__version__

# Resolve the kernel level now, so that a bad GDFAST_ISA fails at import with its message.
_core.active_isa()


def get_num_threads() -> int:
    """Threads one step may use (default: GDFAST_NUM_THREADS, else the usable CPUs)."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Let later steps use ``n`` >= 1 threads (the calling thread included)."""
    _core.set_num_threads(n)


__all__ = [
    "SGD",
    "Adam",
    "AdamW",
    "Lion",
    "Optimizer",
    "__version__",
    "cuda",
    "get_num_threads",
    "isa_info",
    "ops",
    "set_isa",
    "set_num_threads",
    "use_isa",
]
