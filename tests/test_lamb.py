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

from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import quant8_reference as q8

import gdfast

import cases
import reference
from conftest import num_threads

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
import gdfast.torch as gt  # noqa: E402

SHAPES = ((30, 20), (20,), (1000,), (5,), (0,))
STEPS = 12  # (rectify updates from step 6 on with beta2 = 0.999; degenerated_to_sgd before)
RTOL64 = 1e-12
RTOL32 = 2e-5
ISAS: List[str] = gdfast.isa_info()["supported"]

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


EIGHT_BIT_SIZES = [1, 255, 257, 2048 + 256 + 3, 40_000, 3]  # (40,000: three chunks)


def _8bit_reference(params: List[np.ndarray], grads: List[np.ndarray], states: Dict[str, Any],
                    step: int, hyper: Dict[str, Any]) -> Tuple[List[np.ndarray], Dict[str, Any]]:
    """Per tensor: the moments decoded, gdfast's float32 order (reference.lamb_same_order) with
    each new moment encoded and decoded again before the sums and pass 2 read it; the params
    and the (codes, absmax) stored."""
    out_params, out_states = [], {name: [] for name in states}
    for t, (p, g) in enumerate(zip(params, grads)):
        moments = {name: q8.decode(states[name][0][t], states[name][1][t], SIGNED[name])
                   for name in states}
        stored: Dict[str, Any] = {}

        def requantized(name: str, x: np.ndarray) -> np.ndarray:
            stored[name] = q8.requantize(x, SIGNED[name])
            return q8.decode(*stored[name], SIGNED[name])

        p = p.astype(np.float32)
        with np.errstate(all="ignore"):
            reference.lamb_same_order(p, g.astype(np.float32), moments, step=step,
                                      stored=requantized, **hyper)
        out_params.append(p)
        for name in states:
            out_states[name].append(stored[name])
    return out_params, out_states


SIGNED = {"exp_avg": True, "exp_avg_sq": False}


@pytest.mark.parametrize("threads", [1, 2, 3], ids=lambda n: f"threads={n}")
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("variant", ["weight_decay", "coupled", "rectify", "adam"])
def test_8bit_states_sum_the_moments_as_stored(variant: str, isa: str, threads: int) -> None:
    """8-bit states (blockwise, README "8-bit states"): pass 1 updates the decoded moments,
    stores them with each block's new maximum and sums them as they decode again, which pass 2
    reads; so the ratio and the step are of one set of moments. Bitwise (params, codes, the
    blocks' maxima) against reference.lamb_same_order with that encoding, over tensors of
    blocks cut anywhere and of several chunks, 3 steps, every ISA level and thread count."""
    hyper = {"lr": 1e-2, **VARIANTS[variant]}
    rng = np.random.default_rng(len(variant))
    params = [rng.standard_normal(n).astype(np.float32) for n in EIGHT_BIT_SIZES]
    states = {name: ([np.zeros(n, np.uint8) for n in EIGHT_BIT_SIZES],
                     [np.zeros(-(-n // q8.BLOCK), np.float32) for n in EIGHT_BIT_SIZES])
              for name in SIGNED}
    for step in range(1, 4):
        grads = [(rng.standard_normal(n) * 10.0 ** rng.uniform(-4, 0, n)).astype(np.float32)
                 for n in EIGHT_BIT_SIZES]
        want_params, want_states = _8bit_reference(params, grads, states, step, hyper)
        with gdfast.use_isa(isa), num_threads(threads):
            gdfast.ops.lamb_(params, grads, states["exp_avg"][0], states["exp_avg_sq"][0],
                             step=step, absmax={n: a for n, (_, a) in states.items()}, **hyper)
        for t in range(len(EIGHT_BIT_SIZES)):
            np.testing.assert_array_equal(params[t].view(np.uint32),
                                          want_params[t].view(np.uint32), err_msg=f"param[{t}]")
            for name, (codes, absmax) in states.items():
                np.testing.assert_array_equal(codes[t], want_states[name][t][0],
                                              err_msg=f"{name}[{t}]")
                np.testing.assert_array_equal(absmax[t].view(np.uint32),
                                              want_states[name][t][1].view(np.uint32))


def test_8bit_states_clipped_by_value_and_monitored() -> None:
    """8-bit states with max_grad_value and monitor=True: the params, codes and maxima bitwise
    the reference's on np.clip's gradients, and the norms those of the clipped gradients, the
    updates and the new params (NumPy's sums in another order: 1e-12 relative)."""
    hyper = {"lr": 1e-2, "weight_decay": 0.1}
    rng = np.random.default_rng(12)
    params = [rng.standard_normal(n).astype(np.float32) for n in EIGHT_BIT_SIZES]
    states = {name: ([np.zeros(n, np.uint8) for n in EIGHT_BIT_SIZES],
                     [np.zeros(-(-n // q8.BLOCK), np.float32) for n in EIGHT_BIT_SIZES])
              for name in SIGNED}
    for step in range(1, 3):
        grads = [rng.standard_normal(n).astype(np.float32) for n in EIGHT_BIT_SIZES]
        clipped = [np.clip(g, -0.5, 0.5) for g in grads]
        want_params, want_states = _8bit_reference(params, clipped, states, step, hyper)
        before = [p.copy() for p in params]
        norms = gdfast.ops.lamb_(params, grads, states["exp_avg"][0], states["exp_avg_sq"][0],
                                 step=step, absmax={n: a for n, (_, a) in states.items()},
                                 max_grad_value=0.5, monitor=True, **hyper)
        for t in range(len(EIGHT_BIT_SIZES)):
            np.testing.assert_array_equal(params[t], want_params[t])
            for name, (codes, absmax) in states.items():
                np.testing.assert_array_equal(codes[t], want_states[name][t][0])
                np.testing.assert_array_equal(absmax[t], want_states[name][t][1])
        expected = {"grad_norm": clipped, "param_norm": params,
                    "update_norm": [a - b for a, b in zip(params, before)]}
        for name, arrays in expected.items():
            total = np.sqrt(sum(np.sum(a.astype(np.float64) ** 2) for a in arrays))
            assert norms[name] == pytest.approx(total, rel=1e-12), name


@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
def test_8bit_states_with_bfloat16_params(rounding: str) -> None:
    """bfloat16 params and grads with 8-bit states: the param rounded as stored (to nearest, or
    stochastically: the spec's generator, role 0), the moments as in the float32 test."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    import precision_reference as pr  # (it needs ml_dtypes)

    n, seed = 20_003, 5
    rng = np.random.default_rng(1)
    param = rng.standard_normal(n).astype(np.float32).astype(ml_dtypes.bfloat16)
    states = {name: ([np.zeros(n, np.uint8)], [np.zeros(-(-n // q8.BLOCK), np.float32)])
              for name in SIGNED}
    options = {"stochastic_rounding": True, "seed": seed} if rounding == "stochastic" else {}
    for step in range(1, 4):
        grad = (rng.standard_normal(n) * 0.1).astype(np.float32).astype(ml_dtypes.bfloat16)
        [p32], want_states = _8bit_reference([pr.widen(param)], [pr.widen(grad)], states, step,
                                             {"lr": 1e-2, "weight_decay": 0.1})
        want = pr.round_nearest(p32, param.dtype) if rounding == "nearest" else \
            pr.round_stochastic(p32, param.dtype, seed=seed, step=step, param_index=0, role=0)
        gdfast.ops.lamb_(param, grad, states["exp_avg"][0][0], states["exp_avg_sq"][0][0],
                         step=step, lr=1e-2, weight_decay=0.1,
                         absmax={k: a[0] for k, (_, a) in states.items()}, **options)
        np.testing.assert_array_equal(param.view(np.uint16), want.view(np.uint16))
        for name, (codes, absmax) in states.items():
            np.testing.assert_array_equal(codes[0], want_states[name][0][0])
            np.testing.assert_array_equal(absmax[0], want_states[name][0][1])


def test_lamb8bit_follows_lamb() -> None:
    """gdfast.torch.Lamb8bit (optim_bits=8) against Lamb's float32 states on the digits MLP
    (tests/test_quant8_stateful.py's): the final loss within 2% (the issue's bound for 8-bit
    states; measured 0.7%), and the big params' states as 8-bit codes."""
    from test_quant8_stateful import _last_quarter, _run_digits

    want = _last_quarter(_run_digits(gt.Lamb, lr=3e-3))
    got = _last_quarter(_run_digits(gt.Lamb8bit, lr=3e-3))
    assert want < 0.5  # (it learned: chance is ln 10 = 2.3)
    assert abs(got - want) <= 0.02 * want, (got, want)
    weight = torch.nn.Parameter(torch.zeros(64, 256))
    weight.grad = torch.ones(64, 256)
    opt = gt.Lamb8bit([weight])
    opt.step()
    assert opt.state[weight]["exp_avg"].dtype == torch.uint8
    assert opt.state[weight]["exp_avg_sq_absmax"].shape == (64,)


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
