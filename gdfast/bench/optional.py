"""Optional packages (torch, lion-pytorch, DeepSpeed, ...): imported only when something that
needs them runs; a missing or broken one raises :class:`Unavailable` with the reason. Imports
nothing of gdfast.bench, so that every module of it may use this one."""

from __future__ import annotations

import contextlib
import importlib
import logging
import warnings
from importlib import metadata
from typing import Any, Iterator, Optional


class Unavailable(Exception):
    """Cannot run here (package missing, op does not build, ...)."""


def load(module: str) -> Any:
    """``import module``, or Unavailable saying why not (its warnings are not ours to show)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install raising anything
        raise Unavailable(f"{module} does not import ({type(exc).__name__}: {exc})") from None


def dist_version(dist: str) -> Optional[str]:
    """Installed distribution version, without importing it (None if not installed)."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Logging disabled up to WARNING and Python warnings ignored meanwhile: DeepSpeed logs an
    accelerator warning on import (its logger resets its own level, so setting that level does
    not help) and may emit Python warnings."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)
