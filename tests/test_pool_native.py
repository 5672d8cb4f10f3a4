"""The thread pool's handoff (parts claimed by the caller or a worker) under ThreadSanitizer:
tests/native/pool_stress.cpp compiled with csrc/cpu/parallel.cpp and run. Needs the source
tree and a C++ compiler with TSan (CI has both); skipped where either is missing, e.g. when
testing an installed wheel."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SOURCES = [ROOT / "tests" / "native" / "pool_stress.cpp", ROOT / "csrc" / "cpu" / "parallel.cpp"]
CXX = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TSan build tested on Linux")
@pytest.mark.skipif(not all(p.exists() for p in SOURCES), reason="needs the source tree")
@pytest.mark.skipif(CXX is None, reason="needs a C++ compiler")
def test_pool_handoff_under_thread_sanitizer(tmp_path: Path) -> None:
    exe = tmp_path / "pool_stress"
    build = subprocess.run(
        [CXX, "-std=c++17", "-O1", "-g", "-fsanitize=thread", f"-I{ROOT / 'csrc'}",
         *map(str, SOURCES), "-o", str(exe), "-pthread", "-ldl"],
        capture_output=True, text=True)
    if build.returncode != 0 and "tsan" in build.stderr.lower():
        pytest.skip(f"this compiler has no ThreadSanitizer runtime: {build.stderr[-300:]}")
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TSAN_OPTIONS": "halt_on_error=1"})
    assert run.returncode == 0, run.stdout + run.stderr
    assert "WARNING: ThreadSanitizer" not in run.stderr, run.stderr
    assert "miscounted parts: 0 sequential, 0 concurrent" in run.stdout
