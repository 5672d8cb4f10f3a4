"""The thread pool: results are bitwise identical for every thread count, concurrent
callers are safe, and the pool survives fork()."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from conftest import run_python

import gdfast

# Large enough that every thread count actually splits the work (the pool only wakes
# threads for >= 16384 elements each), with sizes that put split points mid-tensor.
LIST_SIZES = [0, 1, 100_003, 7, 0, 65_536, 40_000, 3]
SINGLE_SIZE = 300_001


def _adam_arrays(sizes, seed=0):
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(n).astype(np.float32) for n in sizes] for _ in range(4)]


def _adam_steps(arrays, steps=3):
    p, g, m, v = arrays
    for x in v:
        np.abs(x, out=x)  # exp_avg_sq >= 0
    for s in range(1, steps + 1):
        gdfast.ops.adam_(p, g, m, v, step=s, lr=1e-2, weight_decay=0.1,
                         decoupled_weight_decay=True)
    return arrays


@pytest.mark.parametrize("sizes", [LIST_SIZES, [SINGLE_SIZE]], ids=["list", "single"])
def test_bitwise_identical_for_any_thread_count(sizes):
    previous = gdfast.get_num_threads()
    try:
        results = {}
        for n in (1, 2, 3, 4):
            gdfast.set_num_threads(n)
            results[n] = _adam_steps(_adam_arrays(sizes))
    finally:
        gdfast.set_num_threads(previous)
    for n, arrays in results.items():
        flat_1 = np.concatenate([x for arr in results[1] for x in arr])
        flat_n = np.concatenate([x for arr in arrays for x in arr])
        np.testing.assert_array_equal(flat_n.view(np.uint32), flat_1.view(np.uint32),
                                      err_msg=f"threads={n}")


def test_list_equals_one_call_per_tensor(threads):
    together = _adam_steps(_adam_arrays(LIST_SIZES))
    apart = _adam_arrays(LIST_SIZES)
    for i in range(len(LIST_SIZES)):
        _adam_steps([[arr[i]] for arr in apart])
    for a, b in zip(together, apart):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x.view(np.uint32), y.view(np.uint32))


def test_set_num_threads_round_trip():
    previous = gdfast.get_num_threads()
    try:
        gdfast.set_num_threads(3)
        assert gdfast.get_num_threads() == 3
    finally:
        gdfast.set_num_threads(previous)
    assert gdfast.get_num_threads() == previous


@pytest.mark.parametrize("bad", [0, -2])
def test_set_num_threads_rejects_non_positive(bad):
    with pytest.raises(ValueError, match=r"n: expected an int >= 1"):
        gdfast.set_num_threads(bad)


def test_env_var_sets_default():
    out = run_python("import gdfast; print(gdfast.get_num_threads())", GDFAST_NUM_THREADS="3")
    assert out.stdout.strip() == "3", out.stderr


def test_default_is_usable_cpus():
    import os

    expected = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    out = run_python("import gdfast; print(gdfast.get_num_threads())")
    assert out.stdout.strip() == str(expected), out.stderr


def test_concurrent_callers_get_correct_results():
    """Python threads stepping their own arrays at once (the GIL is released in kernels)."""
    sizes = [SINGLE_SIZE]
    expected = _adam_steps(_adam_arrays(sizes, seed=1), steps=5)
    work = [_adam_arrays(sizes, seed=1) for _ in range(4)]
    errors = []

    def run(arrays):
        try:
            _adam_steps(arrays, steps=5)
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    workers = [threading.Thread(target=run, args=(w,)) for w in work]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert not errors
    for arrays in work:
        for a, b in zip(arrays, expected):
            np.testing.assert_array_equal(a[0], b[0])


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs fork()")
def test_pool_works_in_forked_child():
    code = """
import os, warnings, numpy as np, gdfast
warnings.simplefilter("ignore")
gdfast.set_num_threads(2)
p = np.ones(200_000, np.float32); g = np.ones_like(p)
gdfast.ops.sgd_(p, g, step=1, lr=0.5)          # starts the pool in the parent
pid = os.fork()
if pid == 0:
    gdfast.ops.sgd_(p, g, step=1, lr=0.25)     # the child must not wait for dead threads
    os._exit(0 if np.all(p == 0.25) else 3)
_, status = os.waitpid(pid, 0)
print(os.waitstatus_to_exitcode(status), float(p[0]))
"""
    out = run_python(code)
    assert out.stdout.split() == ["0", "0.5"], out.stderr
