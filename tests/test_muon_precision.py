"""gdfast.torch.Muon's precision options (README "Lower precision", issue 12): state_dtype,
master_weights, stochastic_rounding with seed, optim_bits with min_8bit_size, for the Muon
groups' momentum buffers and the AdamW groups' moments.

Each is checked bitwise against gdfast.torch.Muon on float32 params with the storage's
rounding applied by hand between steps (the kernels widen what they load and round what they
store, and the iteration rounds its input to bfloat16 either way), so no tolerance is needed:
- float32 buffers of bfloat16 params: the float32 run with its params rounded to nearest;
- master weights: the master is the float32 run's param, the param it rounded to nearest;
- 8-bit buffers: the float32 run with each buffer encoded and decoded by
  tests/quant8_reference.py after its step (the step uses the float32 buffer of its own pass).
"""

from __future__ import annotations

from typing import Any, Dict, List

import numpy as np
import pytest
import quant8_reference as q8

torch = pytest.importorskip("torch")
import gdfast  # noqa: E402
import gdfast.torch as gt  # noqa: E402

SHAPES = [(64, 96), (96, 64), (8, 8)]  # (the 8 x 8 matrix stays under min_8bit_size)
STEPS = 3


def _start(dtype: Any, seed: int = 0) -> List[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen).to(dtype).requires_grad_() for s in SHAPES]


def _bf16_grads(seed: int = 1) -> List[List[torch.Tensor]]:
    """Per step, a gradient per param, representable in bfloat16 (so that the bfloat16 and the
    float32 runs read the same values)."""
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen).bfloat16() for s in SHAPES] for _ in range(STEPS)]


def _run(params: List[torch.Tensor], grads: List[List[torch.Tensor]], between: Any = None,
         **options: Any) -> Any:
    opt = gt.Muon(params, lr=0.02, weight_decay=0.1, **options)
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.to(p.dtype)
        opt.step()
        if between is not None:
            between(opt)
    return opt


def _round_params(opt: Any) -> None:
    with torch.no_grad():
        for p in opt.param_groups[0]["params"]:
            p.copy_(p.bfloat16().float())


def test_float32_buffers_of_bfloat16_params() -> None:
    ours = _start(torch.bfloat16)
    theirs = [p.detach().float().requires_grad_() for p in ours]
    grads = _bf16_grads()
    opt = _run(ours, grads, state_dtype=torch.float32)
    ref = _run(theirs, grads, between=_round_params)
    for a, b in zip(ours, theirs):
        assert a.dtype == torch.bfloat16 and torch.equal(a.float(), b)
        assert opt.state[a]["momentum_buffer"].dtype == torch.float32
        assert torch.equal(opt.state[a]["momentum_buffer"], ref.state[b]["momentum_buffer"])


def test_master_weights_follow_the_float32_run() -> None:
    ours = _start(torch.bfloat16)
    theirs = [p.detach().float().requires_grad_() for p in ours]
    grads = _bf16_grads()
    opt = _run(ours, grads, master_weights=True)
    _run(theirs, grads)
    for a, b in zip(ours, theirs):
        master = opt.state[a]["master_param"]
        assert master.dtype == torch.float32 and torch.equal(master, b)
        assert torch.equal(a, b.bfloat16())  # (the master rounded to nearest)
        assert opt.state[a]["momentum_buffer"].dtype == torch.float32


def test_8bit_buffers_are_the_float32_run_requantized() -> None:
    ours = _start(torch.float32)
    theirs = [p.detach().clone().requires_grad_() for p in ours]
    grads = _bf16_grads()

    stored: Dict[int, Any] = {}  # (codes, absmax) of each big param's buffer, latest step

    def requantize(ref: Any) -> None:
        for k, p in enumerate(ref.param_groups[0]["params"][:2]):
            buffer = ref.state[p]["momentum_buffer"]
            stored[k] = q8.requantize(buffer.numpy().ravel(), True)
            buffer.copy_(torch.from_numpy(q8.decode(*stored[k], True).reshape(buffer.shape)))

    opt = _run(ours, grads, optim_bits=8)
    _run(theirs, grads, between=requantize)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert torch.equal(a, b), k
        state = opt.state[a]
        if k < 2:
            codes, absmax = stored[k]
            assert state["momentum_buffer"].dtype == torch.uint8
            assert np.array_equal(state["momentum_buffer"].numpy().ravel(), codes)
            assert np.array_equal(state["momentum_buffer_absmax"].numpy(), absmax)
        else:  # (64 elements < min_8bit_size: float32, as bitsandbytes keeps small ones)
            assert state["momentum_buffer"].dtype == torch.float32


def test_stochastic_rounding_is_reproducible_and_moves_small_updates() -> None:
    """bfloat16 params with stochastic rounding: the same seed gives the same bits; another
    seed other bits; and an update far below half a bfloat16 ulp, which rounding to nearest
    loses, moves the params on average (the mean change has the update's sign)."""
    grads = _bf16_grads()
    runs = [_start(torch.bfloat16) for _ in range(3)]
    for params, seed in zip(runs, (7, 7, 8)):
        _run(params, grads, stochastic_rounding=True, seed=seed)
    assert all(torch.equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(torch.equal(a, b) for a, b in zip(runs[0], runs[2]))

    p0 = torch.ones(64, 96, dtype=torch.bfloat16)
    moved = []
    for options in ({}, {"stochastic_rounding": True, "seed": 3}):
        p = p0.clone().requires_grad_()
        opt = gt.Muon([p], lr=1e-4, weight_decay=0.0, **options)  # (an ulp of 1 is 2**-7)
        for _ in range(20):
            p.grad = torch.ones_like(p)
            opt.step()
        moved.append((p.float() - 1.0).mean().item())
    assert moved[0] == 0.0 and moved[1] < 0.0
    assert opt.param_groups[0]["rounding_step"] == 20


def test_adamw_groups_take_the_options_too() -> None:
    """A use_muon=False group of bfloat16 params with master weights: the master follows
    the float32 AdamW group's params bitwise, and 8-bit moments a big 1-D param's."""
    gen = torch.Generator().manual_seed(4)
    start = [torch.randn(n, generator=gen).bfloat16() for n in (5000, 30)]
    ours = [p.clone().requires_grad_() for p in start]
    theirs = [p.float().requires_grad_() for p in start]
    opt = gt.Muon([dict(params=ours, use_muon=False, master_weights=True)])
    ref = gt.Muon([dict(params=theirs, use_muon=False)])
    eight = [p.float().requires_grad_() for p in start]
    opt8 = gt.Muon([dict(params=eight, use_muon=False, optim_bits=8)])
    for _ in range(STEPS):
        grads = [torch.randn(p.shape, generator=gen).bfloat16() for p in start]
        for ps, dtype in ((ours, torch.bfloat16), (theirs, torch.float32),
                          (eight, torch.float32)):
            for p, g in zip(ps, grads):
                p.grad = g.to(dtype)
        for o in (opt, ref, opt8):
            o.step()
    for a, b in zip(ours, theirs):
        assert torch.equal(opt.state[a]["master_param"], b) and torch.equal(a, b.bfloat16())
    assert opt8.state[eight[0]]["exp_avg"].dtype == torch.uint8
    assert opt8.state[eight[0]]["exp_avg_sq_absmax"].shape == (20,)
    assert opt8.state[eight[1]]["exp_avg"].dtype == torch.float32


@pytest.mark.parametrize("options", [{"master_weights": True}, {"optim_bits": 8},
                                     {"stochastic_rounding": True, "seed": 5}])
def test_state_dict_round_trip_continues_bitwise(options: Dict[str, Any]) -> None:
    """The master copy and 8-bit codes keep their dtypes through state_dict and
    load_state_dict (torch.optim's would cast them to the param's), and so do the seed and the
    rounding count: a resumed run continues bit for bit."""
    grads = _bf16_grads() + _bf16_grads(seed=2)
    straight = _start(torch.bfloat16)
    _run(straight, grads, **options)
    first = _start(torch.bfloat16)
    saved = _run(first, grads[:STEPS], **options).state_dict()
    resumed = [p.detach().clone().requires_grad_() for p in first]
    opt = gt.Muon(resumed, lr=0.02, weight_decay=0.1)  # (the options come with the groups)
    opt.load_state_dict(saved)
    for k, p in enumerate(resumed):
        for name, value in saved["state"][k].items():
            assert opt.state[p][name].dtype == value.dtype, name
    for step_grads in grads[STEPS:]:
        for p, g in zip(resumed, step_grads):
            p.grad = g
        opt.step()
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))


def test_master_copies_of_loaded_and_float64_params() -> None:
    """A torch.optim.Muon state_dict loaded into a master_weights=True optimizer gets its
    master copy at the next step (from the param); a kept master copy with
    master_weights=False raises, naming it, and changes nothing; a float64 param under
    min_8bit_size keeps float64 states with optim_bits=8 (and steps)."""
    p0 = torch.randn(16, 24, generator=torch.Generator().manual_seed(6)).bfloat16()
    theirs = p0.clone().requires_grad_()
    ref = torch.optim.Muon([theirs], lr=0.02)
    theirs.grad = torch.ones_like(theirs)
    ref.step()
    ours = theirs.detach().clone().requires_grad_()
    opt = gt.Muon([ours], lr=0.02, master_weights=True)
    opt.load_state_dict(ref.state_dict())
    assert opt.param_groups[0]["master_weights"] is True  # (torch's groups lack it: ours)
    ours.grad = torch.ones_like(ours)
    before = ours.detach().clone()
    opt.step()
    assert opt.state[ours]["master_param"].dtype == torch.float32
    assert torch.equal(ours, opt.state[ours]["master_param"].bfloat16())
    assert not torch.equal(ours, before)
    opt.param_groups[0]["master_weights"] = False
    kept = ours.detach().clone()
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\.params\[0\]: state\['master"):
        opt.step()
    assert torch.equal(ours, kept)

    small = torch.zeros(8, 8, dtype=torch.float64, requires_grad=True)
    opt64 = gt.Muon([small], optim_bits=8)
    small.grad = torch.ones_like(small)
    opt64.step()
    assert opt64.state[small]["momentum_buffer"].dtype == torch.float64 and small.any()


def test_options_changed_after_construction_are_checked_at_each_step() -> None:
    """master_weights turned on for a float32 param whose states exist: the next step raises
    by name (no master copy is made), and nothing changes."""
    p = torch.randn(16, 24, generator=torch.Generator().manual_seed(7)).requires_grad_()
    opt = gt.Muon([p], lr=0.02)
    p.grad = torch.ones_like(p)
    opt.step()
    kept = p.detach().clone()
    opt.param_groups[0]["master_weights"] = True
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\.params\[0\]: master_weights=True"):
        opt.step()
    assert torch.equal(p, kept) and "master_param" not in opt.state[p]


def test_stochastic_rounding_as_a_numpy_bool() -> None:
    """np.True_ is a bool to the checks, and rounds stochastically like True."""
    grads = _bf16_grads()
    runs = [_start(torch.bfloat16) for _ in range(2)]
    for params, flag in zip(runs, (True, np.True_)):
        _run(params, grads, stochastic_rounding=flag, seed=9)
    assert all(torch.equal(a, b) for a, b in zip(*runs))


@pytest.mark.parametrize("mode", ["master", "8bit", "stochastic"])
def test_the_op_takes_the_options_as_the_class(mode: str) -> None:
    """gdfast.ops.muon_ with master_param, absmax (8-bit buffers) or stochastic rounding (keyed
    by seed, step and the params' positions): bitwise the class's steps with the option."""
    grads = _bf16_grads()
    dtype = torch.float32 if mode == "8bit" else torch.bfloat16
    params = _start(dtype)
    mine = [p.detach().clone() for p in params]
    options = {"master": {"master_weights": True}, "8bit": {"optim_bits": 8, "min_8bit_size": 0},
               "stochastic": {"stochastic_rounding": True, "seed": 5}}[mode]
    opt = _run(params, grads, **options)
    eight = mode == "8bit"
    buffers = [torch.zeros_like(p, dtype=torch.uint8 if eight else torch.float32
                                if mode == "master" else p.dtype) for p in mine]
    extra: Dict[str, Any] = {}
    if mode == "master":
        extra["master_param"] = [p.float() for p in mine]
    if eight:
        extra["absmax"] = {"momentum_buffer": [torch.zeros(-(-p.numel() // 256)) for p in mine]}
    for step, step_grads in enumerate(grads, 1):
        if mode == "stochastic":
            extra.update(stochastic_rounding=True, seed=5, step=step)
        gdfast.ops.muon_(mine, [g.to(dtype) for g in step_grads], buffers, lr=0.02,
                         weight_decay=0.1, **extra)
    for k, (a, b) in enumerate(zip(params, mine)):
        assert torch.equal(a.detach(), b), k
        assert torch.equal(opt.state[a]["momentum_buffer"], buffers[k]), k
        if mode == "master":
            assert torch.equal(opt.state[a]["master_param"], extra["master_param"][k])


@pytest.mark.parametrize("make, error, message", [
    (lambda: gt.Muon([torch.zeros(4, 4)], master_weights=True), ValueError,
     r"^param_groups\[0\]\.params\[0\]: master_weights=True is for bfloat16 and float16"),
    (lambda: gt.Muon([torch.zeros(4, 4)], optim_bits=16), ValueError,
     r"^optim_bits: expected 32 or 8"),
    (lambda: gt.Muon([torch.zeros(4, 4)], state_dtype=torch.int8), TypeError,
     r"state_dtype: expected None or torch.float32"),
    (lambda: gt.Muon([torch.zeros(100, 100, dtype=torch.float64)], optim_bits=8), ValueError,
     r"^param_groups\[0\]\.params\[0\]: optim_bits=8 is for float32, bfloat16 and float16"),
    (lambda: gt.Muon([torch.zeros(4, 4, dtype=torch.bfloat16)], master_weights=True,
                     stochastic_rounding=True), ValueError, r"choose one"),
])
def test_bad_precision_options_are_named(make: Any, error: Any, message: str) -> None:
    with pytest.raises(error, match=message):
        make()
