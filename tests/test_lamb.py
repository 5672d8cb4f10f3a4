"""LAMB (You et al. 2020) against pytorch_optimizer.Lamb, the implementation users switch from,
and what its two passes change about a step: the trust ratio is per tensor, so a tensor's
elements are not stepped independently; and what narrow states change: pass 1 sums from the
moments as stored.

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
import reference

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


def test_8bit_states_are_refused_by_name() -> None:
    """(bfloat16/float16 params, grads and states and master weights are tested with every rule
    in test_precision.py and test_precision_stateful.py, and below)"""
    p, g = np.ones(300, np.float32), np.ones(300, np.float32)
    m, v = np.zeros(300, np.uint8), np.zeros(300, np.uint8)
    absmax = {"exp_avg": np.zeros(2, np.float32), "exp_avg_sq": np.zeros(2, np.float32)}
    before = [a.copy() for a in (p, m, v)]
    with pytest.raises(ValueError, match="^lamb: no 8-bit states"):
        gdfast.ops.lamb_(p, g, m, v, step=1, absmax=absmax)
    for a, b in zip((p, m, v), before):
        np.testing.assert_array_equal(a, b)


NARROW_LAYOUTS = {  # param, grad, states
    "bf16": ("bfloat16", "bfloat16", "bfloat16"),
    "f32-bf16states": ("float32", "float32", "bfloat16"),
    "fp16": ("float16", "float16", "float16"),
    "bf16-f32states": ("bfloat16", "bfloat16", "float32"),
}


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("variant", ["weight_decay", "coupled", "rectify", "adam"])
@pytest.mark.parametrize("layout", sorted(NARROW_LAYOUTS))
def test_narrow_states_sum_the_moments_as_stored(layout: str, variant: str,
                                                  rounding: str) -> None:
    """bfloat16/float16 states: pass 1 stores the moments, rounded, and sums from them as
    stored, which pass 2 reads back, so the ratio and the step are of one set of moments.
    Bitwise against gdfast's float32 operation order (reference.lamb_same_order) with that
    rounding of the moments, the param rounded as stored; to nearest and stochastically (the
    spec's generator: role 1 + k for state k, 0 for the param), over a tensor of more than
    one chunk, 4 steps."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    import precision_reference as pr  # (it needs ml_dtypes)

    types = [np.dtype(ml_dtypes.bfloat16) if t == "bfloat16" else np.dtype(t)
             for t in NARROW_LAYOUTS[layout]]
    param_t, grad_t, state_t = types
    hyper = {"lr": 1e-2, **VARIANTS[variant]}
    n, seed = 20_003, 77
    rng = np.random.default_rng(3)
    param = rng.standard_normal(n).astype(np.float32).astype(param_t)
    m, v = np.zeros(n, state_t), np.zeros(n, state_t)
    p32 = pr.widen(param)
    s32 = {"exp_avg": pr.widen(m), "exp_avg_sq": pr.widen(v)}
    for t in range(1, 5):
        grad = (rng.standard_normal(n) * 0.1).astype(np.float32).astype(grad_t)

        def store(x: np.ndarray, dtype: np.dtype, role: int) -> np.ndarray:
            if rounding == "nearest":
                return pr.round_nearest(x, dtype)
            return pr.round_stochastic(x, dtype, seed=seed, step=t, param_index=0, role=role)

        def stored(name: str, x: np.ndarray) -> np.ndarray:
            return pr.widen(store(x, state_t, 1 + ("exp_avg", "exp_avg_sq").index(name)))

        with np.errstate(all="ignore"):
            reference.lamb_same_order(p32, pr.widen(grad), s32, step=t, stored=stored, **hyper)
        expected_param = store(p32, param_t, 0)
        p32 = pr.widen(expected_param)
        options = {"stochastic_rounding": True, "seed": seed} if rounding == "stochastic" \
            else {}
        gdfast.ops.lamb_(param, grad, m, v, step=t, **hyper, **options)
        np.testing.assert_array_equal(param.view(np.uint8), expected_param.view(np.uint8))
        for name, state in (("exp_avg", m), ("exp_avg_sq", v)):
            np.testing.assert_array_equal(state.view(np.uint8),
                                          s32[name].astype(state_t).view(np.uint8))


def test_narrow_states_follow_float32_states() -> None:
    """What the rounded moments cost in accuracy: bfloat16 states against float32 ones over 20
    steps, the params' distance from each other under 1e-2 of the distance they moved
    (measured 2.7e-3: a bfloat16 moment is off by up to 2**-9 of itself, and so is the step)."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rng = np.random.default_rng(5)
    p0 = rng.standard_normal(5000).astype(np.float32)
    grads = [rng.standard_normal(5000).astype(np.float32) for _ in range(20)]
    runs = []
    for state_t in (np.float32, ml_dtypes.bfloat16):
        p = p0.copy()
        m, v = np.zeros(5000, state_t), np.zeros(5000, state_t)
        for t, g in enumerate(grads, 1):
            gdfast.ops.lamb_(p, g, m, v, step=t, lr=1e-2, weight_decay=0.01)
        runs.append(p)
    moved = np.linalg.norm(runs[0] - p0)
    assert moved > 0.1
    assert np.linalg.norm(runs[1] - runs[0]) <= 1e-2 * moved


def test_max_grad_norm_clips_only_with_pre_norm() -> None:
    opt = gdfast.Lamb([np.ones(4, np.float32)], max_grad_norm=0.5)
    assert opt.param_groups[0]["max_grad_norm"] is None
    opt = gdfast.Lamb([np.ones(4, np.float32)], max_grad_norm=0.5, pre_norm=True)
    assert opt.param_groups[0]["max_grad_norm"] == 0.5
