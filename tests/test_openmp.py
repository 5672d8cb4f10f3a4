"""Steps run on the threads of an OpenMP runtime already loaded (torch's libgomp) instead of
gdfast's own workers (csrc/cpu/parallel.cpp): the same bits as the calling thread alone, small
steps and large, GDFAST_OPENMP=0 turns it off, and a forked child never uses it. Each case in a
fresh interpreter, since what is loaded and the environment are read once per process."""

from __future__ import annotations

import sys

import pytest

from conftest import run_python

pytest.importorskip("torch")
if not sys.platform.startswith("linux"):
    pytest.skip("the runtime is looked up as libgomp.so.1 on Linux", allow_module_level=True)

# SIZE elements split across 2 threads: 65,536, too few to wake gdfast's parked workers (below
# 262,144; the sleeps let them park, they spin 50 us), and 1,048,576, which would wake them.
STEP = """
import hashlib, os, time
import numpy as np
import torch
import gdfast
from gdfast import _core
gdfast.set_num_threads(int(os.environ.get("THREADS", "2")))
rng = np.random.default_rng(0)
p, g = (rng.standard_normal(int(os.environ["SIZE"])).astype(np.float32) for _ in range(2))
m, v = np.zeros_like(p), np.zeros_like(p)
for step in range(1, 6):
    time.sleep(0.002)
    gdfast.ops.adam_(p, g, m, v, step=step, lr=1e-2, weight_decay=0.1)
digest = hashlib.sha256(b"".join(a.tobytes() for a in (p, m, v))).hexdigest()
"""


def _run(code: str, size: int = 65536, **env: str) -> str:
    out = run_python(STEP + code, SIZE=str(size), **env)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.strip()


@pytest.mark.parametrize("size", [65536, 1 << 20])
def test_steps_run_on_the_loaded_runtime_bitwise_as_without_it(size: int) -> None:
    borrowed = _run("print(_core.openmp_runtime(), digest)", size).split()
    if borrowed[0] == "None":
        pytest.skip("torch's OpenMP runtime here is not libgomp")
    assert "libgomp" in borrowed[0]
    off = _run("print(_core.openmp_runtime(), digest)", size, GDFAST_OPENMP="0").split()
    alone = _run("print(digest)", size, THREADS="1")
    assert off == ["None", borrowed[1]]
    assert alone == borrowed[1]


def test_a_forked_child_steps_on_its_own_threads() -> None:
    # libgomp is not fork-safe: a child that entered the parent's runtime could hang.
    code = """
import os
pid = os.fork()
if pid == 0:
    ok = _core.openmp_runtime() is None
    gdfast.ops.adam_(p, g, m, v, step=6, lr=1e-2)
    os._exit(0 if ok else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), _core.openmp_runtime() is not None)
"""
    out = _run(code)
    assert out.split()[0] == "0", out


def test_a_runtime_loaded_after_the_first_steps_is_found() -> None:
    # The lookup is repeated only when the loader has loaded something new (a lookup that
    # finds nothing costs microseconds); importing torch is such a load.
    code = """
import time
import numpy as np
import gdfast
from gdfast import _core
gdfast.set_num_threads(2)
p, g, m, v = (np.ones(65536, np.float32) for _ in range(4))
time.sleep(0.002)
gdfast.ops.adam_(p, g, m, v, step=1)
before = _core.openmp_runtime()
import torch
time.sleep(0.002)
gdfast.ops.adam_(p, g, m, v, step=2)
print(before, _core.openmp_runtime())
"""
    out = run_python(code)
    assert out.returncode == 0, out.stderr[-2000:]
    before, after = out.stdout.split()
    if before != "None" or after == "None":
        pytest.skip("an OpenMP runtime was loaded before torch, or torch's is not libgomp")
    assert "libgomp" in after
