"""Fused clipping by the gradients' L2 norm (max_grad_norm) and the deterministic reduction it
stands on (_core.sum_squares).

- The reduction is checked bitwise against a NumPy rendering of its contract (chunks of 16384
  elements, each summed in double in an order fixed by csrc/cpu/kernels/reduce.h; chunks added
  in order), on every ISA level and thread count.
- A clipped step is checked bitwise against the same op called with the clip factor folded
  into grad_scale by hand, from that reference norm: the fused path adds nothing else.
- Against torch.nn.utils.clip_grad_norm_ then the step: torch sums its norm in float32 in its
  own order, so its clip factor may differ from ours in the last bits (ours sums in double);
  the comparison allows 4 float32 ulps of the factor (rtol 5e-7 on the gradients), which after a
  few Adam steps stays under rtol 1e-5 on the params.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import gdfast
from gdfast import _core

CHUNK = 16384
SIZES = [0, 1, 15, 16, 17, 255, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK + 17, 100_003]


def reference_sum_squares(x: np.ndarray) -> float:
    """The contract of _core.sum_squares for one array, in NumPy (float64 arithmetic)."""
    squares = x.astype(np.float64) ** 2  # exact for float32/bfloat16/float16 values
    total = 0.0
    for start in range(0, len(squares), CHUNK):
        chunk = squares[start:start + CHUNK]
        q = len(chunk) // 64 * 16  # four streams of q elements, 16 accumulators each
        acc = np.zeros((4, 16))
        for i in range(0, q, 16):  # each accumulator adds its elements in order
            for s in range(4):
                acc[s] += chunk[s * q + i:s * q + i + 16]
        for r, value in enumerate(chunk[4 * q:]):
            acc[0, r % 16] += value
        for s in (1, 2, 3):
            acc[0] += acc[s]
        for width in (8, 4, 2, 1):
            acc[0, :width] += acc[0, width:2 * width]
        total += acc[0, 0]
    return float(total)


def _arrays(kind: str, sizes, seed: int = 0):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(n) * rng.uniform(0.1, 10) for n in sizes]
    if kind == "bfloat16":
        ml_dtypes = pytest.importorskip("ml_dtypes")
        return [a.astype(ml_dtypes.bfloat16) for a in out]
    return [a.astype(kind) for a in out]


@pytest.mark.parametrize("kind", ["float32", "float64", "bfloat16", "float16"])
def test_sum_squares_matches_its_contract_bitwise(kind, isa, threads):
    arrays = _arrays(kind, SIZES)
    got = _core.sum_squares(arrays)
    assert got == [reference_sum_squares(a) for a in arrays]
    assert _core.sum_squares(arrays[-1]) == [got[-1]]  # one array as a one-element list


def test_sum_squares_of_large_arrays_is_the_same_for_any_thread_count():
    arrays = _arrays("float32", [1_000_003, 70_000, 5])
    results = []
    for n in (1, 2, 3):
        previous = gdfast.get_num_threads()
        gdfast.set_num_threads(n)
        try:
            results.append(_core.sum_squares(arrays))
        finally:
            gdfast.set_num_threads(previous)
    assert results[0] == results[1] == results[2]
    assert results[0][0] == reference_sum_squares(arrays[0])


def test_sum_squares_checks_its_arrays():
    with pytest.raises(TypeError, match=r"grad\[1\]: expected float32, float64, bfloat16 or "
                                        r"float16"):
        _core.sum_squares([np.zeros(3, np.float32), np.zeros(3, np.int16)])
    with pytest.raises(ValueError, match=r"grad: must be C-contiguous"):
        _core.sum_squares(np.zeros(8, np.float32)[::2])


def _clip_scale(grads, max_norm: float, float64: bool = False, grad_scale: float = 1.0) -> float:
    """The grad_scale that clips, by hand from the reference norm (torch's formula)."""
    norm = math.sqrt(sum(reference_sum_squares(g) for g in grads)) / grad_scale
    if float64:
        factor = min(max_norm / (norm + 1e-6), 1.0)
    else:
        factor = float(min(np.float32(max_norm) / (np.float32(norm) + np.float32(1e-6)),
                           np.float32(1.0)))
    return grad_scale / factor


def _problem(dtype, sizes=(1000, 7, 40_000), seed=1):
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(dtype) for n in sizes]
    grads = [rng.standard_normal(n).astype(dtype) * 3 for n in sizes]
    return params, grads


@pytest.mark.parametrize("max_norm", [0.5, 1e9])
def test_clipped_op_is_the_op_with_the_factor_in_grad_scale(dtype, max_norm):
    params, grads = _problem(dtype)
    states = [[np.zeros_like(p) for p in params] for _ in range(2)]
    twin = [p.copy() for p in params], [[s.copy() for s in st] for st in states]
    for step in (1, 2, 3):
        gdfast.ops.adam_(params, grads, *states, step=step, lr=1e-2, max_grad_norm=max_norm)
        scale = _clip_scale(grads, max_norm, float64=dtype == np.float64)
        gdfast.ops.adam_(twin[0], grads, *twin[1], step=step, lr=1e-2, grad_scale=scale)
    for a, b in zip(params, twin[0]):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rule", ["sgd", "adam", "rmsprop"])
def test_clipped_op_matches_torch_clip_grad_norm_then_step(rule):
    torch = pytest.importorskip("torch")
    params, grads = _problem(np.float32)
    ours = [p.copy() for p in params]
    theirs = [torch.tensor(p, requires_grad=True) for p in params]
    opt = {"sgd": lambda ps: torch.optim.SGD(ps, lr=0.1, momentum=0.9),
           "adam": lambda ps: torch.optim.Adam(ps, lr=1e-2),
           "rmsprop": lambda ps: torch.optim.RMSprop(ps, lr=1e-2)}[rule](theirs)
    states = {"sgd": [[np.zeros_like(p) for p in params]],
              "adam": [[np.zeros_like(p) for p in params] for _ in range(2)],
              "rmsprop": [[np.zeros_like(p) for p in params]]}[rule]
    hyper = {"sgd": dict(lr=0.1, momentum=0.9), "adam": dict(lr=1e-2),
             "rmsprop": dict(lr=1e-2)}[rule]
    op = getattr(gdfast.ops, rule + "_")
    for step in (1, 2, 3, 4):
        for t, g in zip(theirs, grads):
            t.grad = torch.tensor(g * step)
        norm = torch.nn.utils.clip_grad_norm_(theirs, max_norm=1.0)
        opt.step()
        op(ours, [g * step for g in grads], *states, step=step, **hyper, max_grad_norm=1.0)
        expected = math.sqrt(sum(reference_sum_squares(g * step) for g in grads))
        assert float(norm) == pytest.approx(expected, rel=1e-6)
    for a, t in zip(ours, theirs):
        np.testing.assert_allclose(a, t.detach().numpy(), rtol=1e-5, atol=1e-7)


def test_clipping_composes_with_amp_unscaling():
    params, grads = _problem(np.float32)
    scaled = [g * np.float32(1024) for g in grads]
    a = [p.copy() for p in params]
    b = [p.copy() for p in params]
    sa = [[np.zeros_like(p) for p in params] for _ in range(2)]
    sb = [[np.zeros_like(p) for p in params] for _ in range(2)]
    gdfast.ops.adam_(a, grads, *sa, step=1, lr=1e-2, max_grad_norm=0.5)
    gdfast.ops.adam_(b, scaled, *sb, step=1, lr=1e-2, max_grad_norm=0.5, grad_scale=1024.0)
    for x, y in zip(sa[0] + a, sb[0] + b):  # a power-of-two scale: the same factor, up to 1 ulp
        np.testing.assert_allclose(x, y, rtol=3e-7, atol=0)


def test_non_finite_norm_gives_torchs_result():
    torch = pytest.importorskip("torch")
    p = np.ones(8, np.float32)
    g = np.arange(8, dtype=np.float32)
    g[3] = np.inf
    t = torch.tensor(p, requires_grad=True)
    t.grad = torch.tensor(g)
    torch.nn.utils.clip_grad_norm_([t], max_norm=1.0)  # the factor is 0: inf * 0 is NaN
    torch.optim.SGD([t], lr=0.1).step()
    gdfast.ops.sgd_(p, g, step=1, lr=0.1, max_grad_norm=1.0)
    np.testing.assert_array_equal(p, t.detach().numpy())  # (NaN where torch has NaN)


@pytest.mark.parametrize("value, error, message", [
    (-1.0, ValueError, r"max_grad_norm: expected None or a finite number >= 0, got -1.0"),
    (math.inf, ValueError, r"max_grad_norm: expected None or a finite number >= 0, got inf"),
    ("1", TypeError, r"max_grad_norm: expected None or a number >= 0, got '1'"),
    (True, TypeError, r"max_grad_norm: expected None or a number >= 0, got True"),
])
def test_bad_max_grad_norm_is_named_and_writes_nothing(value, error, message):
    params, grads = _problem(np.float32)
    states = [[np.zeros_like(p) for p in params] for _ in range(2)]
    before = [p.copy() for p in params]
    with pytest.raises(error, match=message):
        gdfast.ops.adam_(params, grads, *states, step=1, lr=1e-2, max_grad_norm=value)
    for a, b in zip(params, before):
        np.testing.assert_array_equal(a, b)
    assert not any(s.any() for st in states for s in st)


def test_a_bad_array_with_clipping_writes_nothing():
    params, grads = _problem(np.float32)
    states = [[np.zeros_like(p) for p in params] for _ in range(2)]
    states[1][2] = np.zeros(5, np.float32)  # wrong shape: found after the norm pass
    before = [p.copy() for p in params]
    with pytest.raises(ValueError, match=r"exp_avg_sq\[2\]: shape \(5,\) does not match"):
        gdfast.ops.adam_(params, grads, *states, step=1, lr=1e-2, max_grad_norm=0.1)
    for a, b in zip(params, before):
        np.testing.assert_array_equal(a, b)


# -- the classes --------------------------------------------------------------------------------

def _model(torch, seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(20, 64), torch.nn.Tanh(), torch.nn.Linear(64, 3))


def _train(torch, model, opt, clip=None, steps=8):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(128, 20, generator=gen) * 5
    y = torch.randint(0, 3, (128,), generator=gen)
    norms = []
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        if clip is not None:
            norms.append(float(clip()))
        opt.step()
        if clip is None:
            norms.append(opt.last_grad_norm)
    return norms


def test_torch_class_matches_clip_grad_norm_then_adamw():
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    ours, theirs = _model(torch), _model(torch)
    opt = gt.AdamW(ours.parameters(), lr=1e-2, max_grad_norm=0.25)
    ref = torch.optim.AdamW(theirs.parameters(), lr=1e-2, foreach=False)
    our_norms = _train(torch, ours, opt)
    their_norms = _train(torch, theirs, ref,
                         clip=lambda: torch.nn.utils.clip_grad_norm_(theirs.parameters(), 0.25))
    np.testing.assert_allclose(our_norms, their_norms, rtol=1e-5)
    assert max(their_norms) > 0.25  # the clipping acted
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_per_group_clipping_and_unclipped_groups():
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    ours, theirs = _model(torch), _model(torch)
    layers = list(ours), list(theirs)
    opt = gt.SGD([{"params": layers[0][0].parameters(), "max_grad_norm": 0.1,
                   "clip_per_group": True},
                  {"params": layers[0][2].parameters(), "max_grad_norm": 0.2,
                   "clip_per_group": True}], lr=0.5)
    ref = torch.optim.SGD(theirs.parameters(), lr=0.5)

    def clip():
        a = torch.nn.utils.clip_grad_norm_(layers[1][0].parameters(), 0.1)
        torch.nn.utils.clip_grad_norm_(layers[1][2].parameters(), 0.2)
        return a
    _train(torch, ours, opt)
    _train(torch, theirs, ref, clip=clip)
    assert opt.last_grad_norm is None  # no group was clipped by the shared norm
    for a, b in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_numpy_class_clips_and_checks_its_option():
    params, grads = _problem(np.float32)
    twin = [p.copy() for p in params]
    opt = gdfast.Adam(params, lr=1e-2, max_grad_norm=0.5)
    states = [[np.zeros_like(p) for p in params] for _ in range(2)]
    for step in (1, 2):
        opt.step(grads)
        gdfast.ops.adam_(twin, grads, *states, step=step, lr=1e-2, max_grad_norm=0.5)
    for a, b in zip(params, twin):
        np.testing.assert_array_equal(a, b)
    assert opt.last_grad_norm == math.sqrt(sum(reference_sum_squares(g) for g in grads))
    with pytest.raises(ValueError, match=r"param_groups\[0\]: max_grad_norm: expected None or "
                                         r"a finite number >= 0, got -2.0"):
        gdfast.Adam(params, lr=1e-2, max_grad_norm=-2.0).step(grads)


# -- per-tensor and global norms ---------------------------------------------------------------

def test_norms_are_the_square_roots_of_the_exact_sums(threads):
    arrays = _arrays("float32", [0, 1, 17, 70_001], seed=4)
    assert gdfast.norms(arrays) == [math.sqrt(reference_sum_squares(a)) for a in arrays]
    assert gdfast.norms(arrays[3]) == gdfast.norms(arrays)[3:]
    # the global norm sums the per-array sums in order: the one max_grad_norm clips by
    total = 0.0
    for a in arrays:
        total += reference_sum_squares(a)
    assert gdfast.global_norm(arrays) == math.sqrt(total)


def test_global_norm_is_what_clipping_reports_and_torch_computes():
    torch = pytest.importorskip("torch")
    params, grads, *_ = _problem(np.float32)
    opt = gdfast.SGD(params, lr=0.1, max_grad_norm=1.0)
    opt.step(grads)
    assert gdfast.global_norm(grads) == opt.last_grad_norm  # bitwise: the same sums
    expected = float(torch.nn.utils.get_total_norm([torch.from_numpy(g) for g in grads]))
    assert gdfast.global_norm(grads) == pytest.approx(expected, rel=1e-6)  # torch: float32 sums


def test_norms_name_bad_arrays():
    with pytest.raises(TypeError, match=r"arrays\[1\]: expected float32"):
        gdfast.norms([np.ones(3, np.float32), np.ones(3, np.int32)])


def test_adan_max_grad_norm_matches_pytorch_optimizer():
    """Adan's own max_grad_norm (pytorch_optimizer's argument): 0 is no clipping, a positive
    one clips by the global norm; pytorch_optimizer divides by norm + eps (1e-8 here) where
    gdfast divides by norm + 1e-6, a 1e-7 relative difference at these norms (~170)."""
    torch = pytest.importorskip("torch")
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    gt = pytest.importorskip("gdfast.torch")
    params, grads = _problem(np.float32)
    runs = {}
    for max_norm in (0.0, 1.0):
        for name, cls in (("ours", gt.Adan), ("theirs", pytorch_optimizer.Adan),
                          ("unclipped", gt.Adan)):
            ts = [torch.tensor(p, requires_grad=True) for p in params]
            opt = cls(ts, lr=1e-2, max_grad_norm=0.0 if name == "unclipped" else max_norm,
                      foreach=False)
            for step in (1, 2, 3):
                for t, g in zip(ts, grads):
                    t.grad = torch.tensor(g * step)
                opt.step()
            runs[name, max_norm] = [t.detach().numpy() for t in ts]
    for a, b in zip(runs["ours", 0.0], runs["unclipped", 0.0]):
        np.testing.assert_array_equal(a, b)
    for a, b, c in zip(runs["ours", 1.0], runs["theirs", 1.0], runs["unclipped", 1.0]):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
        assert not np.allclose(a, c, rtol=1e-5, atol=1e-7)  # (the clipping did act)
