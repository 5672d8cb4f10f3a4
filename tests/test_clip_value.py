"""Fused clipping by value (max_grad_value): each gradient clamped to [-c, c] as the kernel
loads it, as torch.nn.utils.clip_grad_value_ clamps it before a step.

The fused path must add nothing but the clamp, so every check here is bitwise: a step with
max_grad_value=c against the same step on gradients clamped by NumPy (or torch) first, for
every rule, float32 and float64, every ISA level, a list the default threads split, narrow
gradients (the bound rounded to their type, as torch.clamp rounds it), 8-bit states, master
weights, AMP unscaling and both front ends. A NaN gradient stays NaN, as
torch.clamp leaves it.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping

import numpy as np
import pytest

import gdfast

import cases
from cases import CASES, Case

SIZES = (17, 1000, 33, 40_000)  # vector tails; more than one thread's share in total (2 threads)
SPECIAL = (np.nan, np.inf, -np.inf, -0.0, 0.0, 1e30, -1e30)


def _grads(sizes, dtype, t: int, scale: float = 5.0) -> List[np.ndarray]:
    out = []
    for k, n in enumerate(sizes):
        g = cases.gradient(n, np.dtype(dtype).name, t, seed=k) * dtype(scale)
        g[: len(SPECIAL)] = np.array(SPECIAL[:n], dtype=dtype)
        out.append(g)
    return out


def _run(case: Case, hyper: Mapping[str, Any], dtype, clip_by_op: bool, bound: float,
         steps: int = 3) -> Dict[str, List[np.ndarray]]:
    """The params and states after `steps` steps of the case's op on one list, the gradients
    clamped by the op (max_grad_value) or by NumPy before it."""
    params = [cases.initial_param(n, dtype, seed=k) for k, n in enumerate(SIZES)]
    names = case.state_names(hyper)
    states = {s: [np.full_like(p, case.start(s, hyper)) for p in params] for s in names}
    scalars: Dict[str, Any] = {}
    op = getattr(gdfast.ops, case.op)
    for t in range(1, steps + 1):
        grads = _grads(SIZES, dtype, t)
        with np.errstate(invalid="ignore", over="ignore"):  # (Sophia's estimate: of the
            extra = case.inputs_at(grads, t)  # unclamped gradients, NaN where they are inf)
        if clip_by_op:
            given = dict(max_grad_value=bound)
        else:
            grads = [np.clip(g, dtype(-bound), dtype(bound)) for g in grads]
            given = {}
        result = op(params, grads, **extra, **states, step=t, **hyper, **scalars, **given)
        if result is not None:
            scalars.update(result)
    return {"param": params, **states}


def _assert_same(a: Dict[str, List[np.ndarray]], b: Dict[str, List[np.ndarray]]) -> None:
    for name in a:
        for k, (x, y) in enumerate(zip(a[name], b[name])):
            np.testing.assert_array_equal(x, y, err_msg=f"{name}[{k}]", strict=True)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_rule_steps_as_on_clamped_gradients(case: Case, dtype, isa) -> None:
    hyper = case.hyper(case.variants[-1])
    _assert_same(_run(case, hyper, dtype, True, 0.5), _run(case, hyper, dtype, False, 0.5))


def test_the_clamp_acts_and_keeps_nan_and_signed_zero() -> None:
    # SGD with lr=1: p - g, so the clamped gradients themselves are visible in p.
    g = np.array([3.0, -3.0, 0.2, np.nan, np.inf, -np.inf, -0.0, 0.0], np.float32)
    p = np.zeros_like(g)
    gdfast.ops.sgd_(p, g, step=1, lr=1.0, max_grad_value=0.5)
    np.testing.assert_array_equal(-p, np.array([0.5, -0.5, 0.2, np.nan, 0.5, -0.5, 0, 0],
                                               np.float32))
    p[:] = 0
    gdfast.ops.sgd_(p, g, step=1, lr=1.0, max_grad_value=np.inf)  # inf: no clipping
    np.testing.assert_array_equal(-p, g)


@pytest.mark.parametrize("grad_type", ["bfloat16", "float16"])
@pytest.mark.parametrize("bound", [0.1, 1.0, 3e38])
def test_narrow_gradients_are_clamped_to_the_bound_in_their_type(grad_type, bound) -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    narrow = ml_dtypes.bfloat16 if grad_type == "bfloat16" else np.float16
    grads = []
    for k, n in enumerate(SIZES):
        g = (cases.gradient(n, "float32", 1, seed=k) * 40).astype(narrow)
        g[:4] = np.array([np.nan, np.inf, -np.inf, -0.0], np.float32).astype(narrow)
        grads.append(g)
    # As torch.clamp on such a tensor: the bound in the gradients' type (3e38: inf in float16).
    with np.errstate(over="ignore"):
        edge = np.array(bound, np.float32).astype(narrow)
    clamped = [np.clip(g, -edge, edge) for g in grads]
    runs = []
    for given, g in ((dict(max_grad_value=bound), grads), ({}, clamped)):
        p = [cases.initial_param(n, np.float32, seed=k) for k, n in enumerate(SIZES)]
        m, v = [np.zeros_like(x) for x in p], [np.zeros_like(x) for x in p]
        gdfast.ops.adam_(p, g, m, v, step=1, lr=1e-2, **given)
        runs.append({"param": p, "exp_avg": m, "exp_avg_sq": v})
    _assert_same(*runs)


def test_amp_scaled_gradients_are_clamped_after_unscaling() -> None:
    # A power-of-two loss scale: the scaled gradients' bound is c * 1024, exactly.
    grads = _grads(SIZES, np.float32, 1)
    scaled = [g * np.float32(1024) for g in grads]
    runs = []
    for g, scale in ((grads, 1.0), (scaled, 1024.0)):
        p = [cases.initial_param(n, np.float32, seed=k) for k, n in enumerate(SIZES)]
        m, v = [np.zeros_like(x) for x in p], [np.zeros_like(x) for x in p]
        gdfast.ops.adam_(p, g, m, v, step=1, lr=1e-2, grad_scale=scale, max_grad_value=0.3)
        runs.append({"param": p, "exp_avg": m, "exp_avg_sq": v})
    _assert_same(*runs)


@pytest.mark.parametrize("value, error, message", [
    (-1.0, ValueError, "max_grad_value: expected None or a number >= 0, got -1.0"),
    (float("nan"), ValueError, "max_grad_value: expected None or a number >= 0, got nan"),
    ("1", TypeError, "max_grad_value: expected None or a number >= 0, got '1'"),
    (True, TypeError, "max_grad_value: expected None or a number >= 0, got True"),
])
def test_bad_max_grad_value_is_named_and_writes_nothing(value, error, message) -> None:
    p, g = np.ones(100, np.float32), np.full(100, 7.0, np.float32)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with pytest.raises(error, match=message):
        gdfast.ops.adam_(p, g, m, v, step=1, max_grad_value=value)
    with pytest.raises(ValueError, match="max_grad_value and max_grad_norm: clip by one"):
        gdfast.ops.adam_(p, g, m, v, step=1, max_grad_value=1.0, max_grad_norm=1.0)
    assert (p == 1).all() and (m == 0).all() and (v == 0).all()


# -- the classes --------------------------------------------------------------------------------

def test_numpy_class_clips_per_group() -> None:
    grads = _grads(SIZES, np.float32, 1)
    params = [cases.initial_param(n, np.float32, seed=k) for k, n in enumerate(SIZES)]
    twin = [p.copy() for p in params]
    opt = gdfast.SGD([{"params": params[:2], "max_grad_value": 0.25}, {"params": params[2:]}],
                     lr=0.1, momentum=0.9)
    twin_opt = gdfast.SGD(twin, lr=0.1, momentum=0.9)
    for _ in range(3):
        opt.step(grads)
        twin_opt.step([np.clip(g, -0.25, 0.25) for g in grads[:2]] + grads[2:])
    for a, b in zip(params, twin):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"param_groups\[0\]: max_grad_value and max_grad_norm"):
        gdfast.SGD(params, lr=0.1, max_grad_value=1.0, max_grad_norm=1.0).step(grads)


def _model(torch, dtype=None):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 256), torch.nn.Tanh(), torch.nn.Linear(256, 3))
    return model.to(dtype) if dtype is not None else model


def _train(torch, model, opt, clip=None, steps=5):
    gen = torch.Generator().manual_seed(3)
    x = (torch.randn(64, 20, generator=gen) * 5).to(next(model.parameters()).dtype)
    y = torch.randint(0, 3, (64,), generator=gen)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x).float(), y).backward()
        if clip is not None:
            torch.nn.utils.clip_grad_value_(model.parameters(), clip)
        opt.step()


@pytest.mark.parametrize("name, kwargs, dtype", [
    ("AdamW", {}, None),
    ("AdamW8bit", {}, None),  # the 256 x 20 weight's states are 8-bit
    ("AdamW", {"master_weights": True}, "bfloat16"),
    ("AdamW", {"stochastic_rounding": True, "seed": 5}, "bfloat16"),
    ("Lion", {}, None),
])
def test_torch_class_steps_as_after_clip_grad_value(name, kwargs, dtype) -> None:
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    torch_dtype = getattr(torch, dtype) if dtype else None
    ours, theirs = _model(torch, torch_dtype), _model(torch, torch_dtype)
    cls = getattr(gt, name)
    _train(torch, ours, cls(ours.parameters(), lr=1e-2, max_grad_value=0.01, **kwargs))
    _train(torch, theirs, cls(theirs.parameters(), lr=1e-2, **kwargs), clip=0.01)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_torch_class_is_close_to_clip_grad_value_then_torch_adamw() -> None:
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    ours, theirs = _model(torch), _model(torch)
    _train(torch, ours, gt.AdamW(ours.parameters(), lr=1e-2, max_grad_value=0.01))
    _train(torch, theirs, torch.optim.AdamW(theirs.parameters(), lr=1e-2, foreach=False),
           clip=0.01)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        # (gdfast's and torch's AdamW round differently in the last bits: test_torch's bound)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_step_in_backward_clips_by_value() -> None:
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    ours, theirs = _model(torch), _model(torch)
    opt = gt.AdamW(ours.parameters(), lr=1e-2, max_grad_value=0.01)
    handle = gt.step_in_backward(opt)
    gen = torch.Generator().manual_seed(3)
    x, y = torch.randn(64, 20, generator=gen) * 5, torch.randint(0, 3, (64,), generator=gen)
    for _ in range(3):
        torch.nn.functional.cross_entropy(ours(x), y).backward()  # steps every param
    handle.remove()
    _train(torch, theirs, gt.AdamW(theirs.parameters(), lr=1e-2), clip=0.01, steps=3)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
