"""Muon (gdfast/_muon.py): gdfast.torch.Muon against torch.optim.Muon, the NumPy class against a
float64 reference written here from the algorithm, the fused phases on every ISA level and
thread count, the functional op, state_dicts and rejected input."""

from __future__ import annotations

import math
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest

import gdfast
from gdfast import _muon

torch = pytest.importorskip("torch")
import gdfast.torch  # noqa: E402

SHAPES = [(24, 40), (40, 24), (33, 33), (1, 7)]
A, B, C = _muon.NS_COEFFICIENTS


def _reference_step(p: np.ndarray, g: np.ndarray, buf: np.ndarray, lr: float, wd: float,
                    momentum: float, nesterov: bool, steps: int, adjust: Any) -> None:
    """torch.optim.Muon's step in float64, from its documented algorithm."""
    buf += (g - buf) * (1 - momentum)
    x = g + (buf - g) * momentum if nesterov else buf.copy()
    tall = x.shape[0] > x.shape[1]
    x = x.T if tall else x
    x = x / max(np.linalg.norm(x), 1e-7)
    for _ in range(steps):
        gram = x @ x.T
        x = A * x + (B * gram + C * gram @ gram) @ x
    x = x.T if tall else x
    rows, cols = p.shape
    ratio = 0.2 * math.sqrt(max(rows, cols)) if adjust == "match_rms_adamw" else math.sqrt(
        max(1, rows / cols))
    p *= 1 - lr * wd
    p -= lr * ratio * x


def _grads(shape: Tuple[int, int], steps: int, seed: int) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(shape) for _ in range(steps)]


@pytest.mark.parametrize("shape", [(24, 40), (40, 24)])
@pytest.mark.parametrize("ns_steps", [0, 1, 5])
def test_the_iteration_is_torchs_bitwise(shape, ns_steps) -> None:
    from torch.optim._muon import _zeropower_via_newtonschulz as torch_iteration

    from gdfast._muon_torch import newton_schulz_bfloat16
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(1)).bfloat16()
    group = dict(_muon.DEFAULTS, ns_steps=ns_steps)
    expected = torch_iteration(x.clone(), _muon.NS_COEFFICIENTS, ns_steps, 1e-7)
    assert torch.equal(newton_schulz_bfloat16(x.clone(), group), expected)


@pytest.mark.parametrize("momentum", [0.95, 0.3])
def test_the_phases_follow_torchs_operations(momentum) -> None:
    """Phase 1 as torch's two lerps and phase 2 as its mul_ and add_: torch fuses each product
    into its sum (FMA), gdfast rounds the product first (its results are the same on every ISA
    level, baseline x86-64 included, which has no FMA): 1 ulp of the operands apart."""
    gen = torch.Generator().manual_seed(2)
    g, buf, p = (torch.randn(40, 24, generator=gen) for _ in range(3))
    x = torch.empty(40, 24)
    mine = buf.clone()
    group = dict(_muon.DEFAULTS, momentum=momentum, lr=0.3, weight_decay=0.2)
    _muon.momentum_phase(x, g, mine, group)
    buf.lerp_(g, 1 - momentum)
    ulp = 2.0**-23 * (g.abs() + buf.abs())
    assert ((mine - buf).abs() <= ulp).all()
    assert ((x - g.lerp(buf, momentum)).abs() <= 2 * ulp).all()
    stepped = p.clone()
    _muon.apply_phase(stepped, x, group)
    p.mul_(1 - 0.3 * 0.2).add_(x, alpha=-0.3 * math.sqrt(40 / 24))
    assert ((stepped - p).abs() <= 2.0**-23 * (p.abs() + x.abs())).all()


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("options", [
    {}, {"nesterov": False}, {"adjust_lr_fn": "match_rms_adamw"}, {"momentum": 0.3},
    {"weight_decay": 0.0, "ns_steps": 3, "ns_coefficients": (2.0, -1.5, 0.5)}])
def test_gdfast_torch_muon_follows_torch_optim_muon(shape, options) -> None:
    """Both iterate in bfloat16, and the inputs may differ in the last bit of a float32 lerp
    (see above), which flips a bfloat16 rounding now and then; such a flip moves the output by
    a few bfloat16 ulps (2^-8 of the step each: 2.6% of the step at most was measured over
    3 seeds, 4 shapes, nesterov on and off). Bound: 2^-4 of the largest step, per step taken."""
    steps, lr = 5, 0.02
    p0 = torch.randn(*shape, generator=torch.Generator().manual_seed(3))
    ours, theirs = p0.clone().requires_grad_(), p0.clone().requires_grad_()
    opt = gdfast.torch.Muon([ours], lr=lr, **options)
    ref = torch.optim.Muon([theirs], lr=lr, **options)
    largest = 0.0
    for k, g in enumerate(_grads(shape, steps, 4)):
        ours.grad, theirs.grad = torch.tensor(g, dtype=torch.float32), torch.tensor(
            g, dtype=torch.float32)
        before = theirs.detach().clone()
        opt.step()
        ref.step()
        largest = max(largest, (theirs.detach() - before).abs().max().item())
        assert (ours - theirs).abs().max().item() <= 2.0**-4 * largest * (k + 1)
    mine, expected = (o.state[p]["momentum_buffer"] for o, p in ((opt, ours), (ref, theirs)))
    assert torch.allclose(mine, expected, rtol=0, atol=1e-6)  # (5 lerps of N(0, 1) values)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("nesterov", [True, False])
def test_numpy_muon_in_float64_is_the_reference(shape, nesterov) -> None:
    """float64 throughout (the same operations in another order): 1e-12 relative to the
    param, far above float64's rounding and far below any mistake."""
    p = np.random.default_rng(5).standard_normal(shape)
    expected, buf = p.copy(), np.zeros(shape)
    opt = gdfast.Muon([p], lr=0.05, weight_decay=0.1, nesterov=nesterov)
    for g in _grads(shape, 4, 6):
        opt.step([g])
        _reference_step(expected, g, buf, 0.05, 0.1, 0.95, nesterov, 5, None)
    np.testing.assert_allclose(p, expected, rtol=0, atol=1e-12 * np.abs(expected).max())
    np.testing.assert_allclose(opt.state[0]["momentum_buffer"], buf, rtol=1e-15, atol=1e-15)


def test_numpy_muon_in_float32_is_near_the_reference() -> None:
    """float32's iteration: five quintic steps of matrix products with sums of 24-40 terms
    keep the output within ~1e-5 of float64's relative to the step (measured 2e-6): bound
    1e-4 of the largest step, per step."""
    shape = (24, 40)
    p = np.random.default_rng(7).standard_normal(shape).astype(np.float32)
    expected, buf = p.astype(np.float64), np.zeros(shape)
    opt = gdfast.Muon([p], lr=0.05, adjust_lr_fn="match_rms_adamw")
    for k, g in enumerate(_grads(shape, 4, 8)):
        before = expected.copy()
        opt.step([g.astype(np.float32)])
        _reference_step(expected, g.astype(np.float32).astype(np.float64), buf, 0.05, 0.1,
                        0.95, True, 5, "match_rms_adamw")
        step = np.abs(expected - before).max()
        assert np.abs(p - expected).max() <= 1e-4 * step * (k + 1)


def _numpy_run() -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(9)
    params = [rng.standard_normal(s).astype(np.float32) for s in ((70, 300), (300, 70))]
    opt = gdfast.Muon(params, lr=0.01)
    for _ in range(2):
        opt.step([rng.standard_normal(p.shape).astype(np.float32) for p in params])
    return {f"p{i}": p for i, p in enumerate(params)} | {
        f"b{i}": s["momentum_buffer"] for i, s in opt.state.items()}


def test_the_same_bits_on_every_level_and_thread_count() -> None:
    expected = _numpy_run()
    threads = gdfast.get_num_threads()
    try:
        for level in gdfast.isa_info()["supported"]:
            with gdfast.use_isa(level):
                for n in (1, 2, 3):
                    gdfast.set_num_threads(n)
                    got = _numpy_run()
                    for key, value in expected.items():
                        assert np.array_equal(got[key], value), (level, n, key)
    finally:
        gdfast.set_num_threads(threads)


def test_the_op_is_the_class() -> None:
    rng = np.random.default_rng(10)
    params = [rng.standard_normal(s).astype(np.float32) for s in ((8, 12), (12, 8))]
    grads = [rng.standard_normal(p.shape).astype(np.float32) for p in params]
    mine = [p.copy() for p in params]
    buffers = [np.zeros_like(p) for p in params]
    gdfast.ops.muon_(mine, grads, buffers, lr=0.1, nesterov=False)
    opt = gdfast.Muon(params, lr=0.1, nesterov=False)
    opt.step(grads)
    for a, b in zip(mine, params):
        assert np.array_equal(a, b)
    tensors = [torch.tensor(p) for p in mine]
    theirs = [torch.tensor(p).requires_grad_() for p in mine]
    ref = gdfast.torch.Muon(theirs, lr=0.1)
    for t, g, b in zip(theirs, grads, buffers):
        t.grad = torch.tensor(g)
        ref.state[t]["momentum_buffer"] = torch.tensor(b)
    gdfast.ops.muon_(tensors, [torch.tensor(g) for g in grads], [torch.tensor(b) for b in buffers],
                     lr=0.1)
    ref.step()
    for t, r in zip(tensors, theirs):
        assert torch.equal(t, r.detach())


def test_dtypes_of_torch_params() -> None:
    """float64 and bfloat16 params step (the iteration in bfloat16, as torch's), near torch."""
    for dtype in (torch.float64, torch.bfloat16):
        p0 = torch.randn(16, 24, generator=torch.Generator().manual_seed(11)).to(dtype)
        ours, theirs = p0.clone().requires_grad_(), p0.clone().requires_grad_()
        opt, ref = gdfast.torch.Muon([ours], lr=0.02), torch.optim.Muon([theirs], lr=0.02)
        g = torch.randn(16, 24, generator=torch.Generator().manual_seed(12)).to(dtype)
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
        assert ours.dtype == dtype and opt.state[ours]["momentum_buffer"].dtype == dtype
        # (bfloat16 params: torch rounds after its mul_ and again after its add_, gdfast once)
        bound = 2.0**-7 * p0.abs().max().item() if dtype == torch.bfloat16 else 1e-3 * 0.02
        assert (ours - theirs).abs().max().item() <= bound


def test_state_dicts_move_between_torch_and_gdfast() -> None:
    p0 = torch.randn(12, 20, generator=torch.Generator().manual_seed(13))
    ours, theirs = p0.clone().requires_grad_(), p0.clone().requires_grad_()
    ref = torch.optim.Muon([theirs], lr=0.05)
    theirs.grad = torch.ones(12, 20)
    ref.step()
    with torch.no_grad():
        ours.copy_(theirs)
    opt = gdfast.torch.Muon([ours], lr=0.01)
    opt.load_state_dict(ref.state_dict())
    assert opt.param_groups[0]["lr"] == 0.05
    assert torch.equal(opt.state[ours]["momentum_buffer"], ref.state[theirs]["momentum_buffer"])
    arrays = [np.random.default_rng(14).standard_normal((6, 9))]
    numpy_opt = gdfast.Muon(arrays, lr=0.05)
    numpy_opt.step([np.ones((6, 9))])
    copy = gdfast.Muon([arrays[0].copy()], lr=1.0)
    copy.load_state_dict(numpy_opt.state_dict())
    assert copy.param_groups[0]["lr"] == 0.05
    assert np.array_equal(copy.state[0]["momentum_buffer"], numpy_opt.state[0]["momentum_buffer"])
    with pytest.raises(ValueError, match=r"momentum_buffer'\]: shape \(9, 6\)"):
        copy.load_state_dict({"state": {0: {"momentum_buffer": np.zeros((9, 6))}},
                              "param_groups": numpy_opt.state_dict()["param_groups"]})


@pytest.mark.parametrize("kwargs, error, message", [
    ({"lr": -1.0}, ValueError, r"^lr: expected"),
    ({"momentum": -0.5}, ValueError, r"^momentum: expected"),
    ({"weight_decay": float("nan")}, ValueError, r"^weight_decay: expected"),
    ({"ns_steps": 100}, ValueError, r"^ns_steps: expected an int in \[0, 100\)"),
    ({"ns_coefficients": (1.0, 2.0)}, ValueError, r"^ns_coefficients: expected 3"),
    ({"adjust_lr_fn": "rms"}, ValueError, r"^adjust_lr_fn: expected one of"),
    ({"nesterov": "yes"}, TypeError, r"^nesterov: expected a bool"),
])
def test_bad_options_are_named(kwargs, error, message) -> None:
    with pytest.raises(error, match=message):
        gdfast.Muon([np.zeros((3, 4))], **kwargs)
    with pytest.raises(error, match=message):
        gdfast.torch.Muon([torch.zeros(3, 4)], **kwargs)
    with pytest.raises(error, match=message):
        gdfast.ops.muon_(np.zeros((3, 4)), np.zeros((3, 4)), np.zeros((3, 4)), **kwargs)


def test_bad_arrays_are_named_and_change_nothing() -> None:
    with pytest.raises(ValueError, match=r"params'\]\[0\]: Muon steps 2-D params only"):
        gdfast.Muon([np.zeros(5)])
    with pytest.raises(ValueError, match=r"params\[1\]: Muon steps 2-D params only"):
        gdfast.torch.Muon([torch.zeros(2, 2), torch.zeros(2, 2, 2)])
    p, g, b = (np.random.default_rng(15).standard_normal((4, 6)) for _ in range(3))
    saved = [p.copy(), g.copy(), b.copy()]

    def unchanged() -> None:
        for now, before in zip((p, g, b), saved):
            assert np.array_equal(now, before)

    with pytest.raises(TypeError, match=r"^grad: "):
        gdfast.ops.muon_(p, g.astype(np.float32), b)
    unchanged()
    with pytest.raises(ValueError, match=r"^param and momentum_buffer share memory"):
        gdfast.ops.muon_(p, g, p)
    unchanged()
    p.flags.writeable = False
    with pytest.raises(ValueError, match=r"^param: .*read-only"):
        gdfast.ops.muon_(p, g, b)
    p.flags.writeable = True
    unchanged()
    opt = gdfast.Muon([p, np.zeros((3, 3))])
    with pytest.raises(ValueError, match=r"grads\[1\]: shape \(3, 4\)"):
        opt.step([g, np.zeros((3, 4))])
    assert opt.state == {}
    unchanged()


def _mixed_groups(params: List[Any]) -> List[Dict[str, Any]]:
    """A Muon group (the 2-D param) and an AdamW group (a bias and a 3-D param)."""
    return [dict(params=params[:1], lr=0.02),
            dict(params=params[1:], use_muon=False, lr=1e-2, weight_decay=0.1)]


def test_use_muon_false_groups_are_stepped_as_pytorch_optimizers_adamw() -> None:
    """The AdamW group against pytorch_optimizer.Muon's (same formula, float32, 5 steps: its
    operation order differs; bound 1e-6 absolute on values of order 1); the Muon group against
    torch.optim.Muon as above; the NumPy class against the torch class, bitwise."""
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    shapes = [(16, 24), (24,), (3, 4, 5)]
    gen = torch.Generator().manual_seed(16)
    start = [torch.randn(s, generator=gen) for s in shapes]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    reference = start[0].clone().requires_grad_()
    arrays = [p.numpy().copy() for p in start]
    opt = gdfast.torch.Muon(_mixed_groups(ours), adamw_betas=(0.8, 0.9))
    numpy_opt = gdfast.Muon(_mixed_groups(arrays), adamw_betas=(0.8, 0.9))
    groups = _mixed_groups(theirs)
    groups[0]["use_muon"] = True
    ref = pytorch_optimizer.Muon(groups, adamw_betas=(0.8, 0.9))
    muon_ref = torch.optim.Muon([reference], lr=0.02)
    for k in range(5):
        grads = [torch.randn(s, generator=gen) for s in shapes]
        for p, g in zip(ours + theirs, grads + grads):
            p.grad = g.clone()
        reference.grad = grads[0].clone()
        before = reference.detach().clone()
        opt.step()
        ref.step()
        muon_ref.step()
        numpy_opt.step([g.numpy() for g in grads])
        step = (reference.detach() - before).abs().max().item()
        assert (ours[0] - reference).abs().max().item() <= 2.0**-4 * step * (k + 1)
    for mine, expected in zip(ours[1:], theirs[1:]):
        assert torch.allclose(mine, expected, rtol=0, atol=1e-6)
    assert opt.param_groups[1]["step"] == 5 == ref.param_groups[1]["step"]
    assert set(opt.state[ours[1]]) == {"exp_avg", "exp_avg_sq"}
    for mine, array in zip(ours[1:], arrays[1:]):
        assert np.array_equal(mine.detach().numpy(), array)
    copy = gdfast.Muon(_mixed_groups([a.copy() for a in arrays]))
    copy.load_state_dict(numpy_opt.state_dict())
    assert copy.param_groups[1]["betas"] == (0.8, 0.9) and copy.param_groups[1]["step"] == 5
    assert np.array_equal(copy.state[2]["exp_avg_sq"], numpy_opt.state[2]["exp_avg_sq"])


def test_bad_adamw_options_are_named() -> None:
    with pytest.raises(ValueError, match=r"^param_groups\[1\]\.betas\[1\]: expected"):
        gdfast.torch.Muon([dict(params=[torch.zeros(2, 2)]),
                           dict(params=[torch.zeros(3)], use_muon=False, betas=(0.9, 1.5))])
    with pytest.raises(ValueError, match=r"^adamw_lr: expected"):
        gdfast.Muon([np.zeros((2, 2))], adamw_lr=-1.0)
    with pytest.raises(ValueError, match=r"\[0\]: shares memory"):
        shared = np.zeros((4, 4))
        gdfast.Muon([dict(params=[shared]), dict(params=[shared[:2]], use_muon=False)])
    weight, bias = np.zeros((4, 4)), np.zeros(4)
    opt = gdfast.Muon([dict(params=[weight]), dict(params=[bias], use_muon=False)])
    grad = np.ones((4, 4))
    with pytest.raises(ValueError, match=r"^grads: a gradient shares memory with a param"):
        opt.step([grad, opt.state.get(0, {}).get("momentum_buffer", weight[0])])
    assert opt.state == {} and not weight.any()
    opt.step([grad, grad[0]])  # (gradients may share memory with each other)
    assert weight.any() and bias.any()


def test_clipping_by_norm_is_clip_grad_norm_then_the_step() -> None:
    """max_grad_norm over a Muon group and an AdamW group together: as clip_grad_norm_ over
    all their params, then the step (the factor is folded into phase 1 and AdamW's pass: the
    same bound as without clipping), and last_grad_norm is clip_grad_norm_'s norm (double
    sums against torch's float32 ones: 1e-6 relative)."""
    gen = torch.Generator().manual_seed(17)
    start = [torch.randn(s, generator=gen) for s in ((16, 24), (24,))]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    opt = gdfast.torch.Muon([dict(params=ours[:1], max_grad_norm=0.5),
                             dict(params=ours[1:], use_muon=False, max_grad_norm=0.5)], lr=0.02)
    ref_muon = torch.optim.Muon(theirs[:1], lr=0.02)
    ref_adamw = torch.optim.AdamW(theirs[1:], lr=3e-4, betas=(0.9, 0.95), eps=1e-10,
                                  weight_decay=0.0)
    for k in range(3):
        grads = [3 * torch.randn(p.shape, generator=gen) for p in start]
        for p, g in zip(ours + theirs, grads + grads):
            p.grad = g.clone()
        before = theirs[0].detach().clone()
        opt.step()
        norm = torch.nn.utils.clip_grad_norm_(theirs, 0.5).item()
        ref_muon.step()
        ref_adamw.step()
        assert opt.last_grad_norm == pytest.approx(norm, rel=1e-6)
        step = (theirs[0].detach() - before).abs().max().item()
        assert (ours[0] - theirs[0]).abs().max().item() <= 2.0**-4 * step * (k + 1)
        assert torch.allclose(ours[1], theirs[1], rtol=0, atol=1e-6)
    unclipped = gdfast.torch.Muon([torch.zeros(2, 2, requires_grad=True)])
    unclipped.param_groups[0]["params"][0].grad = torch.ones(2, 2)
    unclipped.step()
    assert unclipped.last_grad_norm is None and unclipped.last_norms is None


def test_monitoring_reports_the_steps_norms() -> None:
    """float64 NumPy class: the three norms over the monitored groups against NumPy's norms of
    the same arrays (the sums' order differs: 1e-12 relative)."""
    rng = np.random.default_rng(18)
    weight, bias, other = rng.standard_normal((12, 20)), rng.standard_normal(20), \
        rng.standard_normal((5, 5))
    opt = gdfast.Muon([dict(params=[weight], monitor=True),
                       dict(params=[bias], use_muon=False, monitor=True),
                       dict(params=[other])])
    grads = [rng.standard_normal(a.shape) for a in (weight, bias, other)]
    before = [weight.copy(), bias.copy()]
    opt.step(grads)
    assert opt.last_norms is not None
    expected = {
        "grad_norm": np.sqrt(sum(np.sum(g**2) for g in grads[:2])),
        "update_norm": np.sqrt(sum(np.sum((a - b)**2) for a, b in zip((weight, bias), before))),
        "param_norm": np.sqrt(np.sum(weight**2) + np.sum(bias**2))}
    for name, value in expected.items():
        assert opt.last_norms[name] == pytest.approx(value, rel=1e-12), name
    with pytest.raises(TypeError, match=r"^param_groups\[0\]\.monitor: expected True or False"):
        gdfast.Muon([dict(params=[weight], monitor=1)])
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\.max_grad_norm: expected"):
        gdfast.torch.Muon([torch.zeros(2, 2)], max_grad_norm=-1.0)


def test_clipping_by_value_is_clip_grad_value_then_the_step() -> None:
    """max_grad_value over a Muon group and an AdamW group: bitwise the same class's step on
    gradients clip_grad_value_ clamped first (phase 1 and AdamW's pass clamp as they load;
    phase 2's input, the iteration's output, is not clamped), and the gradients unchanged."""
    gen = torch.Generator().manual_seed(21)
    start = [torch.randn(s, generator=gen) for s in ((16, 24), (24,))]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.clone().requires_grad_() for p in start]
    opt = gdfast.torch.Muon([dict(params=ours[:1], max_grad_value=0.5),
                             dict(params=ours[1:], use_muon=False, max_grad_value=0.5)], lr=0.02)
    ref = gdfast.torch.Muon([dict(params=theirs[:1]),
                             dict(params=theirs[1:], use_muon=False)], lr=0.02)
    for _ in range(3):
        grads = [torch.randn(p.shape, generator=gen) for p in start]  # (about 60% clamped)
        for p, g in zip(ours + theirs, grads + grads):
            p.grad = g.clone()
        opt.step()
        torch.nn.utils.clip_grad_value_(theirs, 0.5)
        ref.step()
        for a, b, g in zip(ours, theirs, grads):
            assert torch.equal(a, b)
            assert torch.equal(a.grad, g)
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\.max_grad_value: expected None"):
        gdfast.torch.Muon([torch.zeros(2, 2)], max_grad_value=-1.0)
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\.max_grad_value and max_grad_norm"):
        gdfast.Muon([np.zeros((2, 2))], max_grad_value=1.0, max_grad_norm=1.0)


def test_the_op_clips_by_value_as_numpy_clip() -> None:
    """gdfast.ops.muon_ and gdfast.Muon (NumPy, float64) with max_grad_value: bitwise the step
    on np.clip's gradients."""
    rng = np.random.default_rng(22)
    params = [rng.standard_normal(s) for s in ((6, 10), (10, 6))]
    grads = [3 * rng.standard_normal(p.shape) for p in params]
    clamped = [np.clip(g, -1.0, 1.0) for g in grads]
    mine, theirs = [p.copy() for p in params], [p.copy() for p in params]
    gdfast.ops.muon_(mine, grads, [np.zeros_like(p) for p in params], max_grad_value=1.0)
    gdfast.ops.muon_(theirs, clamped, [np.zeros_like(p) for p in params])
    opt = gdfast.Muon(params, max_grad_value=1.0)
    opt.step(grads)
    for a, b, c in zip(mine, theirs, params):
        assert np.array_equal(a, b) and np.array_equal(a, c)
    with pytest.raises(ValueError, match=r"^max_grad_value and max_grad_norm"):
        gdfast.ops.muon_(mine, grads, [np.zeros_like(p) for p in params], max_grad_value=1.0,
                         max_grad_norm=1.0)


def test_the_op_clips_and_monitors_as_the_class() -> None:
    rng = np.random.default_rng(19)
    params = [rng.standard_normal(s) for s in ((6, 10), (10, 6))]
    grads = [3 * rng.standard_normal(p.shape) for p in params]
    mine = [p.copy() for p in params]
    got = gdfast.ops.muon_(mine, grads, [np.zeros_like(p) for p in params], max_grad_norm=1.0,
                           monitor=True)
    opt = gdfast.Muon(params, max_grad_norm=1.0, monitor=True)
    opt.step(grads)
    for a, b in zip(mine, params):
        assert np.array_equal(a, b)
    assert got == opt.last_norms
    assert opt.last_grad_norm == pytest.approx(np.sqrt(sum(np.sum(g**2) for g in grads)),
                                               rel=1e-12)


def test_empty_matrices_are_a_no_op() -> None:
    """(torch.optim.Muon divides by zero in its lr factor for a (5, 0) param)"""
    params = [np.zeros((0, 5), np.float32), np.zeros((5, 0), np.float32),
              np.ones((2, 3), np.float32)]
    opt = gdfast.Muon(params, lr=0.1)
    opt.step([np.ones(p.shape, np.float32) for p in params])
    assert params[2].max() < 1.0 and opt.state[1]["momentum_buffer"].shape == (5, 0)
    tensors = [torch.zeros(5, 0, requires_grad=True)]
    tensors[0].grad = torch.zeros(5, 0)
    gdfast.torch.Muon(tensors).step()
