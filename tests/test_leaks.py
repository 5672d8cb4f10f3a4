"""No leak per call (issue 15): the resident set stays flat over 1e5 calls of each entry point
and error path -- the functional ops (one array, lists, the dict return of nadam_), a stateful
NumPy step, a gdfast.torch step (DLPack export and release on every call), and rejections
raised before and after a DLPack tensor was consumed.

RSS comes from /proc/self/statm (Linux only). Each path is warmed up first, so that caches,
pymalloc arenas and the thread pool have reached their steady size; then the growth over
CALLS calls must stay below LIMIT (see there for why that bound)."""

from __future__ import annotations

import gc
import os
import sys
from typing import Any, Callable, Dict

import numpy as np
import pytest

import gdfast

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads the resident set from /proc/self/statm")

CALLS = 100_000
WARMUP = 5_000
# 1 MiB over 1e5 calls is < 10.5 bytes a call, and the least a call could leave behind is
# more: one Python object (>= 16 bytes, the header alone) or one malloc'd block (>= 32 bytes
# with glibc's chunk header) grows the resident set by >= 1.6 MB here, and a string, a
# capsule, an array or a DLManagedTensor by far more (checked: a leaked object() a call grew
# it by 2.2 MiB, a leaked malloc(8) by 1.7 MiB). Measured without a leak: <= 0.012 MiB per
# path (a torch step; 0 for most), a margin of about 80.
LIMIT = 2**20
N = 64  # elements per array: a call's cost is its overhead, not the arithmetic


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _arrays(k: int, n: int = N, dtype: Any = np.float32) -> list:
    rng = np.random.default_rng(k)
    return [rng.standard_normal(n).astype(dtype) for _ in range(k)]


def _raises(error: type, call: Callable[[], Any]) -> Callable[[], None]:
    """One call of an error path: it must raise `error` (checked on the first call)."""
    def once() -> None:
        try:
            call()
        except error:
            return
        raise AssertionError(f"expected {error.__name__}")
    return once


def _ops_paths() -> Dict[str, Callable[[], Callable[[], Any]]]:
    def adam() -> Callable[[], Any]:
        p, g, m, v = _arrays(4)
        v = np.abs(v)
        return lambda: gdfast.ops.adam_(p, g, m, v, step=3, lr=1e-3, weight_decay=0.1)

    def sgd_lists() -> Callable[[], Any]:  # multi-tensor: four tensors in one call
        p, g, b = _arrays(4), _arrays(4), _arrays(4)
        return lambda: gdfast.ops.sgd_(p, g, b, step=2, lr=1e-3, momentum=0.9)

    def nadam_dict() -> Callable[[], Any]:  # scalar states in, a dict out
        p, g, m, v = _arrays(4)
        v = np.abs(v)
        return lambda: gdfast.ops.nadam_(p, g, m, v, step=5, mu_product=0.9)

    def lion_found_inf() -> Callable[[], Any]:  # the found_inf route, step taken
        p, g, m = _arrays(3)
        return lambda: gdfast.ops.lion_(p, g, m, lr=1e-4, found_inf=0.0)

    def bad_dtype() -> Callable[[], Any]:
        p, g, m = _arrays(3)
        return _raises(TypeError, lambda: gdfast.ops.lion_(p, g.astype(np.int32), m))

    def negative_lr() -> Callable[[], Any]:
        p, g, m, v = _arrays(4)
        return _raises(ValueError, lambda: gdfast.ops.adam_(p, g, m, v, step=1, lr=-1.0))

    def aliased() -> Callable[[], Any]:  # grad is param: found when the arrays are read
        p, m, v = _arrays(3)
        return _raises(ValueError, lambda: gdfast.ops.adam_(p, p, m, v, step=1))

    def later_tensor_bad() -> Callable[[], Any]:  # the third of four tensors is read-only
        p, g, b = _arrays(4), _arrays(4), _arrays(4)
        p[2].setflags(write=False)
        return _raises(ValueError, lambda: gdfast.ops.sgd_(p, g, b, step=2, momentum=0.9))

    return {"ops.adam_": adam, "ops.sgd_ lists": sgd_lists, "ops.nadam_ dict": nadam_dict,
            "ops.lion_ found_inf": lion_found_inf, "error: bad dtype": bad_dtype,
            "error: negative lr": negative_lr, "error: aliased grad": aliased,
            "error: later tensor read-only": later_tensor_bad}


def _stateful_paths() -> Dict[str, Callable[[], Callable[[], Any]]]:
    def adam_step() -> Callable[[], Any]:
        params, grads = _arrays(2), _arrays(2)
        opt = gdfast.Adam(params, lr=1e-3, amsgrad=True)
        return lambda: opt.step(grads)

    def adam_bad_step() -> Callable[[], Any]:  # a grad of the wrong shape: nothing stepped
        params = _arrays(2)
        opt = gdfast.Adam(params, lr=1e-3)
        grads = [params[0].copy(), np.zeros(N + 1, np.float32)]
        return _raises(ValueError, lambda: opt.step(grads))

    return {"gdfast.Adam step": adam_step, "error: gdfast.Adam bad grad": adam_bad_step}


def _torch_paths() -> Dict[str, Callable[[], Callable[[], Any]]]:
    def adamw_step() -> Callable[[], Any]:
        import torch

        import gdfast.torch

        params = [torch.nn.Parameter(torch.randn(N)) for _ in range(2)]
        for p in params:
            p.grad = torch.randn(N)
        opt = gdfast.torch.AdamW(params, lr=1e-3)
        return opt.step

    def ops_tensor_bad_dtype() -> Callable[[], Any]:  # rejected after its DLPack export
        import torch

        p, g, m = (torch.zeros(N), torch.zeros(N, dtype=torch.float64), torch.zeros(N))
        return _raises(TypeError, lambda: gdfast.ops.lion_(p, g, m))

    return {"gdfast.torch.AdamW step": adamw_step,
            "error: torch grad of another dtype": ops_tensor_bad_dtype}


PATHS = {**_ops_paths(), **_stateful_paths()}
TORCH_PATHS = _torch_paths()


def _growth(call: Callable[[], Any]) -> int:
    for _ in range(WARMUP):
        call()
    gc.collect()
    before = _rss()
    for _ in range(CALLS):
        call()
    gc.collect()
    return _rss() - before


@pytest.mark.parametrize("path", list(PATHS) + list(TORCH_PATHS))
def test_resident_set_is_flat_over_many_calls(path: str) -> None:
    if path in TORCH_PATHS:
        pytest.importorskip("torch")
    call = {**PATHS, **TORCH_PATHS}[path]()
    grew = _growth(call)
    assert grew < LIMIT, (f"{path}: the resident set grew by {grew / 2**20:.2f} MiB over "
                          f"{CALLS} calls ({grew / CALLS:.0f} bytes a call)")
