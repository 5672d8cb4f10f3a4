"""gdfast: fused, SIMD-vectorized, multi-threaded optimizer steps for NumPy arrays.

Functional in-place ops live in :mod:`gdfast.ops`; stateful optimizers with torch.optim's
constructors are ``gdfast.SGD``, ``Adam``, ``AdamW``, ``Lion``, ``RMSprop``, ``Adagrad``,
``Adadelta``, ``Adamax``, ``NAdam``, ``RAdam``, ``ASGD``, ``Rprop``, and pytorch_optimizer's
``Adan``, ``AdEMAMix``, ``ScheduleFreeAdamW``, ``SophiaH`` and ``Lamb``
(``gdfast.optimizers()`` lists them); ``gdfast.torch`` has the same for torch tensors.
"""

import numbers
import os
import sys
from typing import Any, List

try:
    from . import _core
except ImportError:
    # Python found gdfast's source tree before the installed package (it was started in the
    # checkout's root, or PYTHONPATH names it): the checkout holds no compiled _core, and the
    # import fails with a misleading "circular import" message. Say what happened. A _core
    # that is here and fails to load keeps its own error.
    import importlib.machinery

    _package = os.path.dirname(os.path.abspath(__file__))
    _root = os.path.dirname(_package)
    _suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    _compiled_here = any(name.startswith("_core.") and name.endswith(_suffixes)
                         for name in os.listdir(_package))
    _checkout = (os.path.isdir(os.path.join(_root, "csrc"))
                 or os.path.isfile(os.path.join(_root, "pyproject.toml")))
    if _compiled_here or not _checkout:
        raise
    # The installed gdfast it hides, if any: the same search without the checkout's root ("" on
    # sys.path is the current folder).
    _found = importlib.machinery.PathFinder.find_spec("gdfast", [
        p for p in sys.path if os.path.realpath(p or os.curdir) != os.path.realpath(_root)])
    _message = (f"gdfast was imported from its source tree {_package}, which holds no compiled "
                "extension (pip builds gdfast._core)")
    if _found is not None and _found.submodule_search_locations:
        _message += (
            f": Python searched {_root} first because it was started there (`python`, "
            "`python -m pytest`) or PYTHONPATH names it, and the installed gdfast "
            f"({_found.submodule_search_locations[0]}) is hidden by it. Run Python from another "
            "folder (the tests: `pytest`, not `python -m pytest`), or install the checkout "
            f"editable to work on it: `pip install -e .` in {_root}.")
    else:
        _message += (
            f", and no installed gdfast was found. In {_root}, `pip install -e .` builds and "
            "installs the checkout editable (importable from any folder, this one included); "
            "or `pip install .` and run Python from another folder.")
    raise ImportError(_message) from None

from . import _spec, cuda, ops, optim
from ._clip import global_norm, norms
from ._stepping import EIGHT_BIT
from .isa import isa_info, set_isa, use_isa
from .optim import Optimizer

__version__: str = _core.__version__

# Resolve the kernel level and prefetch distance now, so that a bad GDFAST_ISA or
# GDFAST_PREFETCH fails at import with its message.
_core.active_isa()
_core.prefetch_bytes()


_MAX_THREADS = 4096  # a pool beyond any machine's CPUs would only cost memory and wake-ups


def get_num_threads() -> int:
    """Threads one step may use (default: GDFAST_NUM_THREADS, else the usable CPUs)."""
    return _core.get_num_threads()


def set_num_threads(n: int) -> None:
    """Let later steps use ``n`` >= 1 threads (the calling thread included)."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"n: expected an int, got {type(n).__name__}")
    if not 1 <= n <= _MAX_THREADS:
        raise ValueError(f"n: expected an int >= 1 and <= {_MAX_THREADS}, got {_spec.shown(n)}")
    _core.set_num_threads(int(n))


def get_include() -> str:
    """The folder holding gdfast's C headers (``gdfast/capi.h``), for extensions that call its
    steps from C or C++ (Cython needs only ``gdfast/cython_api.pxd``, found on ``sys.path``)."""
    return os.path.join(os.path.dirname(__file__), "include")


def optimizers() -> List[str]:
    """The names of the optimizer classes (``gdfast.<Name>`` and ``gdfast.torch.<Name>``), one
    per constructor; their 8-bit variants (``Adam8bit``, ``AdamW8bit``, ``Lion8bit``,
    ``Lamb8bit``) aside."""
    return [name for name in optim.__all__ if name != "Optimizer" and name not in EIGHT_BIT]


# The stateful optimizers, one per constructor of gdfast/_constructors.py, and the 8-bit ones.
globals().update({name: getattr(optim, name) for name in (*optimizers(), *EIGHT_BIT)})


def __getattr__(name: str) -> Any:
    """For static checkers: the optimizer classes above are made at import."""
    raise AttributeError(f"module 'gdfast' has no attribute {name!r}")


__all__ = [
    *optimizers(),
    *EIGHT_BIT,
    "Optimizer",
    "__version__",
    "cuda",
    "get_include",
    "get_num_threads",
    "global_norm",
    "isa_info",
    "norms",
    "ops",
    "optimizers",
    "set_isa",
    "set_num_threads",
    "use_isa",
]
