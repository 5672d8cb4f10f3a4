"""gdfast.schedules: each schedule against torch's lr_scheduler where torch has it (values in
double; torch's recursive forms differ in the last bits, hence rel=1e-12), at its defining
points where it has none, its argument checks, and ``lr=schedule`` in both front ends."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

import gdfast
from gdfast.schedules import (
    Constant,
    Cosine,
    InverseSqrt,
    LinearDecay,
    LinearWarmup,
    OneCycle,
    Piecewise,
    WarmupStableDecay,
)

torch = pytest.importorskip("torch")
import gdfast.torch as gt  # noqa: E402

REL = 1e-12


def _torch_lrs(make_scheduler, steps, lr=1.0):
    """The lr torch's scheduler gives each of `steps` steps (before the first, after each)."""
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=lr)
    scheduler = make_scheduler(opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    return lrs


@pytest.mark.parametrize("start_factor", [0.1, 0.5])
def test_linear_warmup_is_torch_linear_lr(start_factor):
    ours = LinearWarmup(0.3, warmup_steps=7, start_factor=start_factor)
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.LinearLR(
        o, start_factor=start_factor, end_factor=1.0, total_iters=7), 15, lr=0.3)
    assert [ours(i) for i in range(15)] == pytest.approx(theirs, rel=REL)


def test_cosine_without_warmup_is_torch_cosine_annealing_up_to_total_steps():
    ours = Cosine(0.1, total_steps=20, final_lr=0.01)
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(
        o, T_max=20, eta_min=0.01), 21, lr=0.1)
    assert [ours(i) for i in range(21)] == pytest.approx(theirs, rel=REL)
    assert ours(21) == ours(1000) == 0.01  # (torch's climbs again: a period is 2 * T_max)


@pytest.mark.parametrize("anneal", ["cos", "linear"])
@pytest.mark.parametrize("pct_start", [0.3, 0.5])
def test_one_cycle_is_torch_one_cycle_lr(anneal, pct_start):
    ours = OneCycle(0.2, total_steps=40, pct_start=pct_start, anneal=anneal)
    theirs = _torch_lrs(lambda o: torch.optim.lr_scheduler.OneCycleLR(
        o, max_lr=0.2, total_steps=40, pct_start=pct_start, anneal_strategy=anneal,
        cycle_momentum=False), 40)
    assert [ours(i) for i in range(40)] == pytest.approx(theirs, rel=REL)
    assert ours(40) == ours(39)  # (torch raises past total_steps; here the last value holds)


def test_warmup_then_decay_at_their_defining_points():
    for decay in (Cosine, LinearDecay):
        s = decay(0.4, total_steps=110, warmup_steps=10, final_lr=0.1)
        assert (s(0), s(5), s(10)) == (0.0, 0.2, 0.4)  # linear warmup from 0 (transformers')
        assert s(60) == pytest.approx(0.25, rel=REL)  # halfway down, both curves
        assert s(110) == pytest.approx(0.1, rel=REL) and s(500) == pytest.approx(0.1, rel=REL)
        after = [s(i) for i in range(10, 111)]
        assert all(a >= b for a, b in zip(after, after[1:]))
    cosine = Cosine(1.0, total_steps=100)
    assert cosine(25) == pytest.approx(0.5 + 0.5 * math.cos(math.pi / 4), rel=REL)


def test_inverse_sqrt_and_constant():
    s = InverseSqrt(0.8, warmup_steps=4)
    assert [s(i) for i in range(5)] == [0.0, 0.2, 0.4, 0.6000000000000001, 0.8]
    assert s(16) == pytest.approx(0.4, rel=REL) and s(64) == pytest.approx(0.2, rel=REL)
    assert Constant(0.3)(0) == Constant(0.3)(10 ** 9) == 0.3


@pytest.mark.parametrize("decay, quarter", [("linear", 0.75), ("cosine", 0.5 + 0.5 / 2 ** 0.5),
                                            ("1-sqrt", 0.5)])
def test_warmup_stable_decay(decay, quarter):
    s = WarmupStableDecay(1.0, warmup_steps=10, stable_steps=30, decay_steps=40, decay=decay)
    assert s(5) == 0.5 and s(10) == s(39) == 1.0
    assert s(50) == pytest.approx(quarter, rel=REL)  # a quarter into the decay
    assert s(80) == s(1000) == 0.0


def test_piecewise():
    s = Piecewise([10, 20], [0.3, 0.1, 0.01])
    assert [s(0), s(9), s(10), s(19), s(20), s(10 ** 6)] == [0.3, 0.3, 0.1, 0.1, 0.01, 0.01]


@pytest.mark.parametrize("make, error, message", [
    (lambda: Cosine(-0.1, 10), ValueError, "lr: expected a finite number >= 0, got -0.1"),
    (lambda: Cosine(math.nan, 10), ValueError, "lr: expected a finite number >= 0"),
    (lambda: Cosine("0.1", 10), TypeError, "lr: expected a finite number >= 0, got '0.1'"),
    (lambda: Cosine(0.1, 0), ValueError, "total_steps: expected an int >= 1, got 0"),
    (lambda: Cosine(0.1, 10.0), TypeError, "total_steps: expected an int >= 1, got 10.0"),
    (lambda: Cosine(0.1, 10, warmup_steps=10), ValueError,
     r"warmup_steps: expected fewer than total_steps \(10\), got 10"),
    (lambda: LinearWarmup(0.1, 5, start_factor=2), ValueError,
     "start_factor: expected a finite number >= 0 and <= 1, got 2"),
    (lambda: OneCycle(0.1, 10, anneal="cosine"), ValueError, "anneal: expected 'cos' or 'linear'"),
    (lambda: OneCycle(0.1, 10, div_factor=0), ValueError,
     "div_factor: expected a finite number > 0, got 0"),
    (lambda: OneCycle(0.1, 10, pct_start=0.05), ValueError, "leaves a phase without steps"),
    (lambda: WarmupStableDecay(0.1, 1, 1, 1, decay="exp"), ValueError, "decay: expected"),
    (lambda: Piecewise([5, 5], [1, 2, 3]), ValueError, "boundaries: expected increasing steps"),
    (lambda: Piecewise([5], [1]), ValueError, "values: expected 2 .one more than boundaries."),
    (lambda: Constant(0.1)(-1), ValueError, "step: expected an int >= 0, got -1"),
    (lambda: Constant(0.1)(True), TypeError, "step: expected an int >= 0, got True"),
])
def test_bad_arguments_are_named(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_schedules_compare_pickle_and_show_themselves():
    s = WarmupStableDecay(0.1, 2, 3, 4, final_lr=0.01, decay="cosine")
    assert pickle.loads(pickle.dumps(s)) == s and hash(s) == hash(pickle.loads(pickle.dumps(s)))
    assert s != WarmupStableDecay(0.1, 2, 3, 5, final_lr=0.01, decay="cosine")
    assert repr(s) == ("WarmupStableDecay(lr=0.1, warmup_steps=2, stable_steps=3, "
                       "decay_steps=4, final_lr=0.01, decay='cosine')")


# -- lr=schedule in the optimizer classes -----------------------------------------------------

def _grads(n, steps, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(np.float32) for _ in range(steps)]


def test_torch_class_with_a_schedule_matches_torch_with_its_scheduler():
    """fp32 params; torch's scheduler gives lr values that differ from the schedule's in the
    last bits of a double, so results agree to fp32 rounding, not bitwise."""
    params = [torch.nn.Parameter(torch.randn(50, generator=torch.Generator().manual_seed(1)))]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours = gt.AdamW(params, lr=Cosine(0.05, total_steps=20, final_lr=0.005), weight_decay=0.1)
    ref = torch.optim.AdamW(twins, lr=0.05, weight_decay=0.1)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(ref, T_max=20, eta_min=0.005)
    for g in _grads(50, 20):
        params[0].grad, twins[0].grad = torch.from_numpy(g), torch.from_numpy(g.copy())
        ours.step()
        ref.step()
        scheduler.step()
    torch.testing.assert_close(params[0], twins[0], rtol=1e-6, atol=1e-7)
    assert ours.param_groups[0]["lr_step"] == 20


@pytest.mark.parametrize("front", ["numpy", "torch"])
def test_schedule_is_the_same_as_setting_lr_by_hand(front):
    """Bitwise: the step takes schedule(steps taken), evaluated in double, as its lr."""
    schedule = OneCycle(0.1, total_steps=12)
    grads = _grads(33, 12)
    results = []
    for scheduled in (True, False):
        p = np.linspace(-1, 1, 33, dtype=np.float32)
        if front == "numpy":
            opt = gdfast.Adam([p], lr=schedule if scheduled else 0.0)
            step = lambda g: opt.step([g])  # noqa: E731
        else:
            t = torch.nn.Parameter(torch.from_numpy(p))
            opt = gt.Adam([t], lr=schedule if scheduled else 0.0)

            def step(g):
                t.grad = torch.from_numpy(g)
                opt.step()
        for i, g in enumerate(grads):
            if not scheduled:
                opt.param_groups[0]["lr"] = schedule(i)
            step(g)
        results.append(p.copy())
    np.testing.assert_array_equal(results[0], results[1])


def test_state_dict_keeps_the_schedule_and_its_count():
    schedule = LinearDecay(0.1, total_steps=10, warmup_steps=2)
    grads = _grads(9, 10)
    p_all = np.ones(9, np.float32)
    straight = gdfast.AdamW([p_all], lr=schedule)
    for g in grads:
        straight.step([g])
    p = np.ones(9, np.float32)
    first = gdfast.AdamW([p], lr=schedule)
    for g in grads[:4]:
        first.step([g])
    saved = pickle.loads(pickle.dumps(first.state_dict()))
    resumed = gdfast.AdamW([p], lr=0.5)
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["lr"] == schedule and resumed.param_groups[0]["lr_step"] == 4
    for g in grads[4:]:
        resumed.step([g])
    np.testing.assert_array_equal(p, p_all)


def test_a_skipped_amp_step_does_not_advance_the_schedule():
    t = torch.nn.Parameter(torch.ones(4))
    opt = gt.SGD([t], lr=Piecewise([1], [0.5, 0.25]))
    t.grad = torch.ones(4)
    opt.grad_scale, opt.found_inf = torch.tensor(1.0), torch.tensor(1.0)
    opt.step()  # skipped: inf/nan gradients
    assert "lr_step" not in opt.param_groups[0] and torch.equal(t.detach(), torch.ones(4))
    opt.found_inf = torch.tensor(0.0)
    opt.step()
    opt.step()
    assert opt.param_groups[0]["lr_step"] == 2
    assert torch.equal(t.detach(), torch.full((4,), 0.25))  # 1 - 0.5 - 0.25


def test_a_bad_count_is_named():
    opt = gdfast.SGD([np.ones(3, np.float32)], lr=Constant(0.1))
    opt.param_groups[0]["lr_step"] = -2
    with pytest.raises(ValueError, match=r"param_groups\[0\]: lr_step: expected an int >= 0"):
        opt.step([np.ones(3, np.float32)])


def _muon_run(front, lr, adamw_lr, by_hand, steps=6):
    """Muon (a 2-D matrix) and its AdamW group (a vector) with the given rates (schedules, or
    numbers set by hand before each step from ``by_hand``); the final arrays."""
    rng = np.random.default_rng(5)
    start = [rng.standard_normal((12, 20)).astype(np.float32),
             rng.standard_normal(30).astype(np.float32)]
    grads = [[rng.standard_normal(a.shape).astype(np.float32) for a in start]
             for _ in range(steps)]
    if front == "numpy":
        params = [a.copy() for a in start]
        opt = gdfast.Muon([{"params": params[:1], "lr": lr},
                           {"params": params[1:], "use_muon": False, "lr": adamw_lr}])
    else:
        params = [torch.nn.Parameter(torch.from_numpy(a.copy())) for a in start]
        opt = gt.Muon([{"params": params[:1], "lr": lr},
                       {"params": params[1:], "use_muon": False, "lr": adamw_lr}])
    for i, step_grads in enumerate(grads):
        if by_hand is not None:
            for group, schedule in zip(opt.param_groups, by_hand):
                group["lr"] = schedule(i)
        if front == "numpy":
            opt.step(step_grads)
        else:
            for p, g in zip(params, step_grads):
                p.grad = torch.from_numpy(g)
            opt.step()
    return opt, [p.detach().numpy().copy() if front == "torch" else p for p in params]


@pytest.mark.parametrize("front", ["numpy", "torch"])
def test_muon_takes_a_schedule_in_its_muon_and_adamw_groups(front):
    """Bitwise: Muon's groups (the Muon group and the AdamW one) step with their schedules'
    values at the steps taken, as when the rates are set by hand; lr_step counts the steps,
    and a state_dict carries the schedules and the count."""
    muon_lr, adamw_lr = Cosine(0.02, total_steps=6, warmup_steps=2), LinearDecay(1e-3, 6)
    opt, scheduled = _muon_run(front, muon_lr, adamw_lr, None)
    _, by_hand = _muon_run(front, 0.0, 0.0, (muon_lr, adamw_lr))
    for a, b in zip(scheduled, by_hand):
        np.testing.assert_array_equal(a, b)
    assert [g["lr_step"] for g in opt.param_groups] == [6, 6]
    saved = pickle.loads(pickle.dumps(opt.state_dict()))
    assert saved["param_groups"][0]["lr"] == muon_lr and saved["param_groups"][1]["lr_step"] == 6


def test_muon_names_a_bad_count():
    opt = gdfast.Muon([np.ones((3, 3), np.float32)], lr=Constant(0.1))
    opt.param_groups[0]["lr_step"] = -1
    with pytest.raises(ValueError, match=r"^param_groups\[0\]: lr_step: expected an int >= 0"):
        opt.step([np.ones((3, 3), np.float32)])
    assert not opt.state
