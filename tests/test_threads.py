"""The thread pool: results are bitwise identical for every thread count, concurrent
callers are safe, and the pool survives fork()."""

from __future__ import annotations

import threading
import time
from typing import Any, Dict, List

import numpy as np
import pytest

import gdfast
from gdfast._spec import RULES

from cases import CASES, Case
from conftest import run_python

# Large enough that every thread count actually splits the work (the pool only wakes
# threads for >= 16384 elements each), with sizes that put split points mid-tensor.
LIST_SIZES = [0, 1, 100_003, 7, 0, 65_536, 40_000, 3]
SINGLE_SIZE = 300_001


def _adam_arrays(sizes, seed=0):
    """param, grad, exp_avg, exp_avg_sq: one list of arrays each (exp_avg_sq >= 0)."""
    rng = np.random.default_rng(seed)
    p, g, m, v = [[rng.standard_normal(n).astype(np.float32) for n in sizes] for _ in range(4)]
    return [p, g, m, [np.abs(x) for x in v]]


def _assert_same_bits(arrays_a, arrays_b):
    for list_a, list_b in zip(arrays_a, arrays_b):
        for x, y in zip(list_a, list_b):
            np.testing.assert_array_equal(x.view(np.uint32), y.view(np.uint32))


def _adam_steps(arrays, steps=3):
    p, g, m, v = arrays
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


def _case_arrays(case: Case, hyper: Dict[str, Any], sizes: List[int],
                 seed: int = 0) -> Dict[str, List[np.ndarray]]:
    """param, grad and the states these options use, one list each (states that are never
    negative in real runs: absolute values)."""
    rng = np.random.default_rng(seed)
    out = {name: [rng.standard_normal(n).astype(np.float32) for n in sizes]
           for name in case.tensor_names(hyper)}
    for name in case.nonnegative:
        if name in out:
            out[name] = [np.abs(x) for x in out[name]]
    return out


def _case_steps(case: Case, hyper: Dict[str, Any], arrays: Dict[str, Any], single: bool,
                steps: int = 3) -> Dict[str, float]:
    """Steps with scalar states carried; the list form, or one call per tensor."""
    op = getattr(gdfast.ops, case.op)
    calls = [arrays] if not single else [{k: v[i] for k, v in arrays.items()}
                                         for i in range(len(arrays["param"]))]
    scalars: List[Dict[str, float]] = [{} for _ in calls]
    for s in range(1, steps + 1):
        for c, sc in zip(calls, scalars):
            states = {k: v for k, v in c.items() if k not in ("param", "grad")}
            sc.update(op(c["param"], c["grad"], **states, step=s, **hyper, **sc) or {})
    return scalars[0]


@pytest.mark.parametrize("sizes", [LIST_SIZES, [SINGLE_SIZE]], ids=["list", "single"])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_rule_is_bitwise_identical_for_any_thread_count(case: Case, sizes):
    """Each rule with the options of its first large variant (all of them switched on)."""
    hyper = case.hyper(case.variant(case.large_variants[0]))
    previous = gdfast.get_num_threads()
    results = {}
    try:
        for n in (1, 2, 3, 4):
            gdfast.set_num_threads(n)
            arrays = _case_arrays(case, hyper, sizes)
            scalars = _case_steps(case, hyper, arrays, single=False)
            results[n] = (np.concatenate([x for arr in arrays.values() for x in arr]), scalars)
    finally:
        gdfast.set_num_threads(previous)
    for n, (flat, scalars) in results.items():
        np.testing.assert_array_equal(flat.view(np.uint32), results[1][0].view(np.uint32),
                                      err_msg=f"threads={n}")
        assert scalars == results[1][1]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_rule_list_equals_one_call_per_tensor(case: Case, threads):
    hyper = case.hyper(case.variant(case.large_variants[0]))
    together, apart = _case_arrays(case, hyper, LIST_SIZES), _case_arrays(case, hyper, LIST_SIZES)
    scalars = _case_steps(case, hyper, together, single=False)
    assert _case_steps(case, hyper, apart, single=True) == scalars
    _assert_same_bits(together.values(), apart.values())


def test_list_equals_one_call_per_tensor(threads):
    together = _adam_steps(_adam_arrays(LIST_SIZES))
    apart = _adam_arrays(LIST_SIZES)
    for i in range(len(LIST_SIZES)):
        _adam_steps([[arr[i]] for arr in apart])
    _assert_same_bits(together, apart)


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
def test_late_or_parked_workers_change_nothing():
    """Parts are claimed: the caller takes those a worker has not claimed yet (parked, still
    waking, or oversubscribed: 5 threads on this machine's CPUs). Hundreds of steps with
    pauses that let workers park, against one thread, bitwise."""
    sizes = [70_001, 3, 0, 90_000]
    previous = gdfast.get_num_threads()
    results = []
    try:
        for n in (1, 5):
            gdfast.set_num_threads(n)
            p, g, m, v = _adam_arrays(sizes, seed=2)
            for s in range(1, 301):
                if s % 7 == 0:
                    time.sleep(2e-4)  # longer than the workers' spin: they park
                gdfast.ops.adam_(p, g, m, v, step=s, lr=1e-3)
            results.append(np.concatenate(p + m + v))
    finally:
        gdfast.set_num_threads(previous)
    np.testing.assert_array_equal(results[1].view(np.uint32), results[0].view(np.uint32))


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


ADAM = RULES["adam"]
ADAM_HYPER = dict(lr=1e-2, weight_decay=0.1)


def _adam_batch(arrays):
    p, g, m, v = arrays
    return ADAM.batch(p, (g,), {"exp_avg": m, "exp_avg_sq": v}, ADAM_HYPER, step=7)


@pytest.mark.parametrize("sizes", [[5_003], [37, 0, 20_000]], ids=["single", "list"])
def test_run_repeated_equals_that_many_calls(sizes, threads):
    """The benchmark's compute bound: _core.run_repeated(rule, batches, r) applies the step r
    times, bitwise the same as r calls (each repeat is one more in-place step with the same
    coefficients), and on any thread count."""
    repeated, called = _adam_arrays(sizes), _adam_arrays(sizes)
    assert gdfast._core.run_repeated(ADAM.id, [_adam_batch(repeated)], 5) is None
    for _ in range(5):
        p, g, m, v = called
        gdfast.ops.adam_(p, g, m, v, step=7, **ADAM_HYPER)
    _assert_same_bits(repeated, called)


def test_run_repeated_rejects_bad_counts_and_writes_nothing():
    arrays = _adam_arrays([100])
    before = [a.copy() for a in arrays]
    with pytest.raises(ValueError, match="repeats: expected an int >= 1, got 0"):
        gdfast._core.run_repeated(ADAM.id, [_adam_batch(arrays)], 0)
    _assert_same_bits(arrays, before)
