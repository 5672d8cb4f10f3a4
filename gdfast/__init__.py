"""gdfast: fused, SIMD-vectorized, multi-threaded optimizer steps for NumPy arrays.

Functional in-place ops live in :mod:`gdfast.ops`; stateful optimizers with torch.optim's
constructors are ``gdfast.SGD``, ``Adam``, ``AdamW``, ``Lion``, ``RMSprop``, ``Adagrad``,
``Adadelta``, ``Adamax``, ``NAdam``, ``RAdam``, ``ASGD`` and ``Rprop`` (``gdfast.optimizers()``
lists them); ``gdfast.torch`` has the same for torch tensors.
"""

import os
from typing import Any, List

from . import _core, cuda, ops, optim
from .isa import isa_info, set_isa, use_isa
from .optim import Optimizer

__version__: str = _core.__version__

# Resolve the kernel level and prefetch distance now, so that a bad GDFAST_ISA or
# GDFAST_PREFETCH fails at import with its message.
_core.active_isa()
_core.prefetch_bytes()


def get_num_threads() -> int:
    """Threads one step may use (default: GDFAST_NUM_THREADS, else the usable CPUs)."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Let later steps use ``n`` >= 1 threads (the calling thread included)."""
    _core.set_num_threads(n)


def get_include() -> str:
    """The folder holding gdfast's C headers (``gdfast/capi.h``), for extensions that call its
    steps from C or C++ (Cython needs only ``gdfast/cython_api.pxd``, found on ``sys.path``)."""
    return os.path.join(os.path.dirname(__file__), "include")


def optimizers() -> List[str]:
    """The names of the optimizer classes (``gdfast.<Name>`` and ``gdfast.torch.<Name>``)."""
    return [name for name in optim.__all__ if name != "Optimizer"]


# The stateful optimizers, one per constructor of gdfast/_constructors.py.
globals().update({name: getattr(optim, name) for name in optimizers()})


def __getattr__(name: str) -> Any:
    """For static checkers: the optimizer classes above are made at import."""
    raise AttributeError(f"module 'gdfast' has no attribute {name!r}")


__all__ = [
    *optimizers(),
    "Optimizer",
    "__version__",
    "cuda",
    "get_include",
    "get_num_threads",
    "isa_info",
    "ops",
    "optimizers",
    "set_isa",
    "set_num_threads",
    "use_isa",
]
