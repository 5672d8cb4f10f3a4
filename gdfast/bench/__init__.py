"""gdfast-bench: gdfast's optimizer steps timed against the references installed here, with the
machine's in-place bandwidth measured in the same run. ``gdfast-bench --help``;
``python -m gdfast.bench``. Needs only NumPy; torch, lion-pytorch, DeepSpeed, tqdm and
matplotlib are used when installed."""

from __future__ import annotations

import os
import sys
from typing import Optional, Sequence


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``gdfast-bench`` console script; returns the exit status."""
    from .cli import main as cli_main

    try:
        return cli_main(argv)
    except BrokenPipeError:  # `gdfast-bench | head`: stop quietly
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1


__all__ = ["main"]
