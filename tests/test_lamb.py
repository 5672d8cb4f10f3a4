"""LAMB (You et al. 2020) against pytorch_optimizer.Lamb, the implementation users switch from,
and what its two passes change about a step: the trust ratio is per tensor, so a tensor's
elements are not stepped independently, and the step takes float32/float64 arrays only.

The generic tests (test_rules with cases.LAMB: the float64 reference, gdfast's operation order
bitwise, every ISA level, lists, threads) cover the rule; here the front ends against the
oracle. pytorch_optimizer computes in the params' dtype with torch's float32 or float64 norms;
in float64 both sides agree to a few ulps per step (RTOL64; but with pre_norm, whose global norm
pytorch_optimizer sums in float32 for any dtype). In float32 pytorch_optimizer's
norms differ from gdfast's double sums by up to ~n * 2**-24 relative, which moves the trust
ratio and every element's update by as much: RTOL32 allows that for these small tensors.
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest

import gdfast

import cases

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
import gdfast.torch as gt  # noqa: E402

SHAPES = ((30, 20), (20,), (1000,), (5,), (0,))
STEPS = 12  # (rectify updates from step 6 on with beta2 = 0.999; degenerated_to_sgd before)
RTOL64 = 1e-12
RTOL32 = 2e-5

VARIANTS: Dict[str, Dict[str, Any]] = {
    "default": {},
    "weight_decay": dict(weight_decay=0.1),
    "coupled": dict(weight_decay=0.1, weight_decouple=False),
    "fixed_decay": dict(weight_decay=0.1, fixed_decay=True),
    "grad_averaging": dict(grad_averaging=False),
    "adam": dict(adam=True),
    "rectify": dict(rectify=True),
    "degenerated_to_sgd": dict(rectify=True, degenerated_to_sgd=True),
    "maximize": dict(maximize=True),
    "eps": dict(eps=1e-3),
    "pre_norm": dict(pre_norm=True, max_grad_norm=1.0),
}


def _run(cls: Any, dtype: Any, kwargs: Dict[str, Any]) -> List[Any]:
    gen = torch.Generator().manual_seed(0)
    params = [torch.randn(s, dtype=dtype, generator=gen).requires_grad_() for s in SHAPES]
    opt = cls(params, lr=1e-2, **kwargs)
    for _ in range(STEPS):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=dtype, generator=gen)
        opt.step()
    return [p.detach() for p in params]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_matches_pytorch_optimizer(variant: str, dtype: Any) -> None:
    kwargs = VARIANTS[variant]
    ours = _run(gt.Lamb, dtype, kwargs)
    theirs = _run(pytorch_optimizer.Lamb, dtype, kwargs)
    # (pre_norm: pytorch_optimizer sums the global gradient norm in float32 for any dtype)
    rtol = RTOL64 if dtype == torch.float64 and variant != "pre_norm" else RTOL32
    for k, (a, b) in enumerate(zip(ours, theirs)):
        scale = float(b.abs().max()) if b.numel() else 1.0
        torch.testing.assert_close(a, b, rtol=rtol, atol=rtol * scale,
                                   msg=lambda m, k=k: f"param[{k}]: {m}")


def test_numpy_class_steps_as_the_op() -> None:
    params = [cases.initial_param(n, np.float32, seed=k) for k, n in enumerate((100, 7, 40_000))]
    copies = [p.copy() for p in params]
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    opt = gdfast.Lamb(params, lr=1e-2, weight_decay=0.01)
    for t in range(1, 4):
        grads = [cases.gradient(p.size, "float32", t, seed=k) for k, p in enumerate(params)]
        opt.step(grads)
        gdfast.ops.lamb_(copies, grads, m, v, step=t, lr=1e-2, weight_decay=0.01)
    for a, b in zip(params, copies):
        np.testing.assert_array_equal(a, b, strict=True)


def test_the_ratio_is_per_tensor() -> None:
    """The same gradient on a tensor alone and with a 10x larger neighbour: the trust ratio,
    and so the step, is the tensor's own; the lone tensor's is that of its own norms."""
    p = cases.initial_param(500, np.float64)
    g = cases.gradient(500, "float64", 1)
    alone, together = p.copy(), p.copy()
    big = 10 * cases.initial_param(500, np.float64, seed=1)
    zeros = [np.zeros_like(p) for _ in range(4)]
    gdfast.ops.lamb_(alone, g, zeros[0], zeros[1], step=1, lr=0.1)
    gdfast.ops.lamb_([together, big], [g, g], [zeros[2], np.zeros_like(big)],
                     [zeros[3], np.zeros_like(big)], step=1, lr=0.1)
    np.testing.assert_array_equal(alone, together)
    d = (0.1 * g) / (np.sqrt(0.001 * g * g) + 1e-6)  # (step 1: m = 0.1 g, v = 0.001 g^2)
    trust = min(np.linalg.norm(p), 10.0) / (np.linalg.norm(d) + 1e-6)
    np.testing.assert_allclose(alone, p - 0.1 / 0.1 * trust * d, rtol=1e-12)


def test_narrow_states_are_refused_by_name() -> None:
    """(bfloat16/float16 params and grads and master weights are tested with every rule in
    test_precision.py and test_precision_stateful.py)"""
    p, g = np.ones(300, np.float32), np.ones(300, np.float32)
    m, v = np.zeros(300, np.uint8), np.zeros(300, np.uint8)
    absmax = {"exp_avg": np.zeros(2, np.float32), "exp_avg_sq": np.zeros(2, np.float32)}
    before = [a.copy() for a in (p, m, v)]
    with pytest.raises(ValueError, match="^lamb: float32 states only"):
        gdfast.ops.lamb_(p, g, m, v, step=1, absmax=absmax)
    for a, b in zip((p, m, v), before):
        np.testing.assert_array_equal(a, b)
    ml_dtypes = pytest.importorskip("ml_dtypes")
    p, g = p.astype(ml_dtypes.bfloat16), g.astype(ml_dtypes.bfloat16)
    m, v = np.zeros_like(p), np.zeros_like(p)
    with pytest.raises(ValueError, match="^lamb: float32 states only"):
        gdfast.ops.lamb_(p, g, m, v, step=1)
    assert np.array_equal(p.astype(np.float32), np.ones(300, np.float32))


def test_max_grad_norm_clips_only_with_pre_norm() -> None:
    opt = gdfast.Lamb([np.ones(4, np.float32)], max_grad_norm=0.5)
    assert opt.param_groups[0]["max_grad_norm"] is None
    opt = gdfast.Lamb([np.ones(4, np.float32)], max_grad_norm=0.5, pre_norm=True)
    assert opt.param_groups[0]["max_grad_norm"] == 0.5
