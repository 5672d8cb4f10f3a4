"""Shared fixtures: every ISA level this CPU supports, thread counts, dtypes."""

from __future__ import annotations

import contextlib
from typing import Iterator

import numpy as np
import pytest

import gdfast

SUPPORTED_ISAS = gdfast.isa_info()["supported"]


@pytest.fixture(params=SUPPORTED_ISAS, ids=lambda name: f"isa={name}")
def isa(request: pytest.FixtureRequest):
    """Runs the test body under each supported SIMD level (scalar, baseline, avx2, ...)."""
    with gdfast.use_isa(request.param):
        yield request.param


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request: pytest.FixtureRequest):
    return request.param


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"threads={n}")
def threads(request: pytest.FixtureRequest):
    """Runs the test body with gdfast using n threads, then restores the previous count."""
    previous = gdfast.get_num_threads()
    gdfast.set_num_threads(request.param)
    yield request.param
    gdfast.set_num_threads(previous)


@contextlib.contextmanager
def num_threads(n: int) -> Iterator[None]:
    """gdfast uses n threads inside the block (the threads fixture, for one part of a test)."""
    previous = gdfast.get_num_threads()
    gdfast.set_num_threads(n)
    try:
        yield
    finally:
        gdfast.set_num_threads(previous)


def run_python(code: str, **env_overrides: str):
    """Runs `code` in a fresh interpreter with the installed gdfast (never the source tree:
    the working directory is a temporary one). Returns the CompletedProcess."""
    import os
    import subprocess
    import sys
    import tempfile

    env = {k: v for k, v in os.environ.items() if k not in ("GDFAST_ISA", "GDFAST_NUM_THREADS")}
    env.update(env_overrides)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), timeout=120)


# The package whose class gdfast.<Name> matches, where torch.optim has none of that name.
ORACLE_MODULES = {"Lion": "lion_pytorch", "Adan": "pytorch_optimizer",
                  "AdEMAMix": "pytorch_optimizer", "ScheduleFreeAdamW": "pytorch_optimizer",
                  "SophiaH": "pytorch_optimizer", "Lamb": "pytorch_optimizer"}


# State entries an oracle keeps that gdfast does not: pytorch_optimizer's Lamb's diagnostics of
# its last step (each param's norm, its update's, their ratio).
ORACLE_ONLY_STATE = {"Lamb": frozenset(("weight_norm", "adam_norm", "trust_ratio"))}


def oracle_class(name: str):
    """The torch-style class gdfast.<name> matches: torch.optim's, or another package's (the
    test skips when that package is absent)."""
    return getattr(pytest.importorskip(ORACLE_MODULES.get(name, "torch.optim")), name)
