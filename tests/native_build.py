"""Builds examples/native as its setup.py says (`python setup.py build_ext --inplace`), for
test_native_api and bench/bench_overhead.py."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path
from typing import Any

EXAMPLES = Path(__file__).resolve().parent.parent / "examples" / "native"


def why_cannot_build() -> str:
    """Why extensions cannot be built here ("" if they can)."""
    if not EXAMPLES.is_dir():
        return "examples/native is not here (tests run from an installed wheel)"
    for module in ("Cython", "setuptools"):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed"
    compiler = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(compiler) is None:
        return f"no C compiler ({compiler})"
    return ""


def build(folder: Path) -> None:
    """`python setup.py build_ext --inplace` in `folder`."""
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=folder,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"build failed:\n{done.stdout[-4000:]}\n{done.stderr[-4000:]}")


def load(folder: Path, name: str) -> Any:
    sys.path.insert(0, str(folder))
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(str(folder))


def build_examples(folder: Path) -> Any:
    """Copies examples/native into `folder`, builds it there; returns (cython, c) modules."""
    for path in EXAMPLES.iterdir():
        if path.suffix in (".py", ".pyx", ".c"):
            shutil.copy(path, folder)
    build(folder)
    return load(folder, "gdfast_example"), load(folder, "gdfast_c_example")
