"""gdfast.torch as a drop-in for torch.optim (and lion-pytorch): trajectories of a real model,
param groups, closures, state_dict interchange, LR schedulers, AMP GradScaler, torch.compile,
no_grad semantics, what is refused, and sharded training with torch.distributed (ZeRO, DDP).

The model is a small MLP (64-32-10, tanh) on scikit-learn's bundled 8x8 digits, trained on
minibatches of 128 in a fixed order, 50 steps.

Tolerances (after 50 steps, on params and optimizer state; assert_close: |a-b| <= atol +
rtol*|b|):
- float64, FP64 = rtol 1e-12, atol 1e-14: gdfast and torch compute the same formulas in
  different but equally exact operation orders (gdfast never contracts into FMA and writes
  Adam's last line as lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps*sqrt(bc2)); torch divides twice),
  so they differ by a few ulps per step; measured max |diff| 5e-16 after 50 steps (every case,
  both torch paths), 20x inside the bound. Any formula difference (a wrong bias correction,
  weight decay in the wrong place, a missed dampening) shows as >= 1e-4 relative, so float64
  is where the formulas are proved.
- float32, FP32 = rtol 1e-4, atol 1e-5: the same few-ulp differences (2^-24 ~ 6e-8 relative)
  fed back through 50 steps of gradients; measured max |diff| 6e-8 (SGD) to 7e-7 (Adam with
  maximize), at most 4% of the bound. The float32 runs prove that the float32 kernels (a
  separate instantiation) follow the float64 ones.
- Lion takes sign(): an element whose update argument is within rounding of 0 can flip and
  then differ by 2*lr. Measured: bitwise identical to lion-pytorch; allowed: the tolerance
  above, or a flip on at most 0.1% of the elements.
"""

from __future__ import annotations

import copy
import datetime
import gc
import inspect
import os
import pickle
import time
import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import gdfast  # noqa: E402
import gdfast.torch as gt  # noqa: E402
from gdfast import ops  # noqa: E402

FP32 = dict(rtol=1e-4, atol=1e-5)
FP64 = dict(rtol=1e-12, atol=1e-14)
STEPS = 50
BATCH = 128


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """The model is tiny: torch's thread pool buys nothing here, and on a loaded 2-core
    machine its spinning threads and gdfast's fight over the cores (10x slower runs)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tol(dtype):
    return FP64 if dtype in (torch.float64, torch.complex128) else FP32


# ---------------------------------------------------------------------------------------------
# The model and the training loop


@pytest.fixture(scope="module")
def digits():
    datasets = pytest.importorskip("sklearn.datasets")
    x, y = datasets.load_digits(return_X_y=True)
    return torch.tensor(x / 16.0, dtype=torch.float64), torch.tensor(y)


def mlp(dtype=torch.float32, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(64, 32), nn.Tanh(), nn.Linear(32, 10)).to(dtype)


def batch(data, i, dtype, size=BATCH):
    x, y = data
    start = (i * size) % (len(x) - size)
    return x[start:start + size].to(dtype), y[start:start + size]


def train(data, make_opt, *, dtype=torch.float32, steps=STEPS, model=None, opt=None,
          start=0, sign=1.0, scheduler=None, closure=False):
    """Trains `model` (default: a fresh MLP) with make_opt(model) for `steps` minibatches,
    calling scheduler(opt) after each step if given. Returns (model, opt, losses, lrs)."""
    model = mlp(dtype) if model is None else model
    opt = make_opt(model) if opt is None else opt
    losses, lrs = [], []
    for i in range(start, start + steps):
        x, y = batch(data, i, dtype)

        def loss_fn():
            opt.zero_grad()
            loss = sign * F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        if closure:
            loss = opt.step(loss_fn)
        else:
            loss = loss_fn()
            opt.step()
        losses.append(float(loss.detach()))
        lrs.append([g["lr"] for g in opt.param_groups])
        if scheduler is not None:
            scheduler(losses[-1])
    return model, opt, losses, lrs


def assert_params_close(a, b, dtype, msg=""):
    for i, (x, y) in enumerate(zip(a.parameters(), b.parameters())):
        torch.testing.assert_close(x.detach(), y.detach(), **tol(dtype), msg=lambda m: f"{msg} "
                                   f"param {i}: {m}")


def assert_state_close(opt_a, opt_b, dtype, msg=""):
    """Same state keys for every param, values within tolerance (``step`` exactly)."""
    # Params with an empty state are left to test_state_dict_layout_is_torch_optim.
    sa = {k: v for k, v in opt_a.state_dict()["state"].items() if v}
    sb = {k: v for k, v in opt_b.state_dict()["state"].items() if v}
    assert sa.keys() == sb.keys(), msg
    for k in sa:
        assert sa[k].keys() == sb[k].keys(), f"{msg} state of param {k}"
        for name, value in sa[k].items():
            other = sb[k][name]
            if name == "step":
                assert float(value) == float(other), f"{msg} step of param {k}"
            else:
                torch.testing.assert_close(value, other, **tol(dtype),
                                           msg=lambda m: f"{msg} {name} of param {k}: {m}")


# ---------------------------------------------------------------------------------------------
# Constructors: torch.optim's arguments and defaults


def test_lion_defaults_are_lion_pytorch():
    lion_pytorch = pytest.importorskip("lion_pytorch")
    theirs = inspect.signature(lion_pytorch.Lion.__init__).parameters
    ours = inspect.signature(gt.Lion.__init__).parameters
    for arg in ("params", "lr", "betas", "weight_decay"):
        assert ours[arg].default == theirs[arg].default, arg
    assert list(ours)[:5] == list(theirs)[:5]


def test_lion_is_a_torch_optimizer_with_amp_support():
    """(torch.optim's classes: test_torch_optim_db.test_signature_defaults_and_groups_are_torchs)"""
    cls = gt.Lion
    assert issubclass(cls, torch.optim.Optimizer)
    assert cls._step_supports_amp_scaling is True


# ---------------------------------------------------------------------------------------------
# Trajectories against torch.optim, foreach=False and fused=True


CASES = {
    "sgd": ("SGD", dict(lr=0.2)),
    "sgd-momentum-dampening-wd": ("SGD", dict(lr=0.1, momentum=0.9, dampening=0.1,
                                              weight_decay=1e-3)),
    "sgd-nesterov-wd": ("SGD", dict(lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    "sgd-maximize": ("SGD", dict(lr=0.05, momentum=0.5, maximize=True)),
    "adam": ("Adam", dict(lr=1e-2)),
    "adam-l2-amsgrad": ("Adam", dict(lr=1e-2, weight_decay=1e-2, amsgrad=True)),
    "adam-maximize-decoupled": ("Adam", dict(lr=1e-2, maximize=True, weight_decay=0.1,
                                             decoupled_weight_decay=True)),
    "adamw": ("AdamW", dict(lr=1e-2)),
    "adamw-amsgrad-maximize": ("AdamW", dict(lr=1e-2, amsgrad=True, maximize=True,
                                             weight_decay=0.1, betas=(0.8, 0.99), eps=1e-6)),
    "adamw-amsgrad": ("AdamW", dict(lr=3e-3, amsgrad=True, weight_decay=0.05)),
}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_trajectory_matches_torch_optim(digits, case, dtype):
    name, kwargs = CASES[case]
    ours = train(digits, lambda m: getattr(gt, name)(m.parameters(), **kwargs), dtype=dtype)
    for impl in (dict(foreach=False), dict(fused=True)):
        theirs = train(digits, lambda m: getattr(torch.optim, name)(m.parameters(), **kwargs,
                                                                    **impl), dtype=dtype)
        assert_params_close(ours[0], theirs[0], dtype, msg=f"{impl}")
        assert_state_close(ours[1], theirs[1], dtype, msg=f"{impl}")
        np.testing.assert_allclose(ours[2], theirs[2], rtol=tol(dtype)["rtol"])
    losses = ours[2]
    if not kwargs.get("maximize"):
        assert losses[-1] < 0.8 * losses[0]  # it trains


def assert_lion_close(model_a, model_b, dtype, lr, msg=""):
    for i, (a, b) in enumerate(zip(model_a.parameters(), model_b.parameters())):
        a, b = a.detach(), b.detach()
        t = tol(dtype)
        off = (a - b).abs() > t["atol"] + t["rtol"] * b.abs()
        # A sign flip moves an element by 2*lr per step it happens on.
        assert off.sum() <= max(1, a.numel() // 1000), f"{msg} param {i}: {int(off.sum())} off"
        assert ((a - b).abs()[off] <= 2 * lr * STEPS).all(), f"{msg} param {i}"


LION_CASES = {"defaults": {}, "lr-wd-betas": dict(lr=1e-3, weight_decay=0.1, betas=(0.95, 0.98))}


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("case", sorted(LION_CASES))
def test_lion_trajectory_matches_lion_pytorch(digits, case, dtype):
    lion_pytorch = pytest.importorskip("lion_pytorch")
    kwargs = LION_CASES[case]
    ours = train(digits, lambda m: gt.Lion(m.parameters(), **kwargs), dtype=dtype)
    theirs = train(digits, lambda m: lion_pytorch.Lion(m.parameters(), **kwargs), dtype=dtype)
    assert_lion_close(ours[0], theirs[0], dtype, kwargs.get("lr", 1e-4))
    assert ours[1].state_dict()["state"].keys() == theirs[1].state_dict()["state"].keys()
    for k, s in ours[1].state_dict()["state"].items():
        assert s.keys() == theirs[1].state_dict()["state"][k].keys() == {"exp_avg"}


def test_lion_maximize_is_descent_on_the_negated_loss(digits):
    lion_pytorch = pytest.importorskip("lion_pytorch")
    ours = train(digits, lambda m: gt.Lion(m.parameters(), lr=1e-3, maximize=True))
    theirs = train(digits, lambda m: lion_pytorch.Lion(m.parameters(), lr=1e-3), sign=-1.0)
    assert_lion_close(ours[0], theirs[0], torch.float32, 1e-3)
    assert ours[2][-1] > ours[2][0]


# ---------------------------------------------------------------------------------------------
# Param groups, add_param_group, zero_grad, closure, params without grad


def _two_groups(model, **second):
    return [{"params": model[0].parameters(), "lr": 1e-2},
            {"params": model[2].parameters(), **second}]


@pytest.mark.parametrize("name, kwargs", [("AdamW", dict(lr=3e-3)),
                                          ("SGD", dict(lr=0.05, momentum=0.9))],
                         ids=["adamw", "sgd-momentum"])
def test_param_groups_with_different_hyperparameters(digits, name, kwargs):
    def make(module):
        return lambda m: module(_two_groups(m, lr=1e-3, weight_decay=0.1), **kwargs)

    ours = train(digits, make(getattr(gt, name)))
    theirs = train(digits, make(lambda *a, **k: getattr(torch.optim, name)(*a, **k,
                                                                          foreach=False)))
    assert [g["lr"] for g in ours[1].param_groups] == [1e-2, 1e-3]
    assert_params_close(ours[0], theirs[0], torch.float32)
    assert_state_close(ours[1], theirs[1], torch.float32)


def test_add_param_group_mid_training(digits):
    def run(cls, **impl):
        model = mlp()
        opt = cls(model[0].parameters(), lr=1e-2, **impl)
        train(digits, None, model=model, opt=opt, steps=10)
        opt.add_param_group({"params": model[2].parameters(), "lr": 3e-3, "amsgrad": True})
        train(digits, None, model=model, opt=opt, steps=40, start=10)
        return model, opt

    ours = run(gt.AdamW)
    theirs = run(torch.optim.AdamW, foreach=False)
    assert len(ours[1].param_groups) == 2
    assert ours[1].param_groups[1]["weight_decay"] == 1e-2  # defaults filled in
    assert_params_close(ours[0], theirs[0], torch.float32)
    assert_state_close(ours[1], theirs[1], torch.float32)


@pytest.mark.parametrize("group, error", [
    ({"lr": -1.0}, ValueError),
    ({"betas": (1.5, 0.9)}, ValueError),
    ({"dtype": torch.float8_e5m2}, TypeError),
    ({"master_weights": True}, ValueError),  # (of a float32 param)
], ids=["negative-lr", "beta1-above-1", "float8", "master-weights-of-float32"])
def test_rejected_add_param_group_leaves_the_optimizer_unchanged(group, error):
    """A group that add_param_group refuses must not stay behind in param_groups (else every
    later step() fails, or steps a tensor gdfast cannot handle)."""
    p = nn.Parameter(torch.randn(3))
    opt = gt.AdamW([p], lr=0.1)
    group = dict(group)
    q = nn.Parameter(torch.randn(3).to(group.pop("dtype", torch.float32)))
    with pytest.raises(error):
        opt.add_param_group({"params": [q], **group})
    assert len(opt.param_groups) == 1
    p.grad = torch.ones(3)
    opt.step()  # still usable


def test_step_hooks_and_the_profiler_range_as_torch_optim(monkeypatch):
    """gdfast's step takes torch.optim's wrapper where it has work: a step hook (the
    optimizer's or a global one) runs as torch's do, in torch's order; a running profiler
    sees the step's range. Otherwise the step runs without opening that range."""
    from torch.optim.optimizer import (
        register_optimizer_step_post_hook,
        register_optimizer_step_pre_hook,
    )

    ranges = []
    real = torch.autograd.profiler.record_function
    monkeypatch.setattr(torch.autograd.profiler, "record_function",
                        lambda name, *rest: ranges.append(name) or real(name, *rest))
    p = torch.nn.Parameter(torch.ones(4))
    p.grad = torch.ones(4)
    opt = gt.SGD([p], lr=0.25)
    opt.step()
    assert ranges == [] and torch.equal(p.detach(), torch.full((4,), 0.75))

    calls = []
    handles = [register_optimizer_step_pre_hook(lambda o, a, k: calls.append("global pre")),
               opt.register_step_pre_hook(lambda o, a, k: calls.append("pre")),
               opt.register_step_post_hook(lambda o, a, k: calls.append("post")),
               register_optimizer_step_post_hook(lambda o, a, k: calls.append("global post"))]
    try:
        opt.step()
    finally:
        for handle in handles:
            handle.remove()
    assert calls == ["global pre", "pre", "post", "global post"]
    assert ranges == ["Optimizer.step#SGD.step"] and torch.equal(p.detach(),
                                                                 torch.full((4,), 0.5))
    # a pre-hook may replace the step's arguments (torch's args begin with the optimizer)
    handle = opt.register_step_pre_hook(lambda o, a, k: ((o, lambda: 7.0), {}))
    try:
        assert opt.step() == 7.0
    finally:
        handle.remove()
    ranges.clear()
    opt.step()
    assert ranges == []
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        opt.step()
    assert "Optimizer.step#SGD.step" in {event.name for event in prof.events()}
    assert torch.equal(p.detach(), torch.full((4,), -0.25))


def test_zero_grad():
    model = mlp()
    opt = gt.AdamW(model.parameters())
    model(torch.randn(4, 64)).sum().backward()
    opt.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.any() for p in model.parameters())
    opt.zero_grad()
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_closure(digits, name):
    kwargs = dict(lr=0.05, momentum=0.9) if name == "SGD" else dict(lr=1e-2)
    ours = train(digits, lambda m: getattr(gt, name)(m.parameters(), **kwargs), closure=True,
                 steps=20)
    theirs = train(digits, lambda m: getattr(torch.optim, name)(m.parameters(), **kwargs,
                                                                foreach=False), steps=20)
    assert ours[2] == pytest.approx(theirs[2], rel=1e-5)
    assert_params_close(ours[0], theirs[0], torch.float32)


def test_closure_runs_with_grad_enabled_under_no_grad():
    p = nn.Parameter(torch.ones(3))
    opt = gt.SGD([p], lr=0.5)
    calls = []

    def closure():
        calls.append(torch.is_grad_enabled())
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with torch.no_grad():
        loss = opt.step(closure)
    assert calls == [True]
    assert loss.requires_grad and float(loss.detach()) == 3.0
    torch.testing.assert_close(p.detach(), torch.zeros(3))  # 1 - 0.5 * 2


@pytest.mark.parametrize("make", [
    lambda ps: gt.SGD(ps, lr=0.1), lambda ps: gt.SGD(ps, lr=0.1, momentum=0.9),
    lambda ps: gt.Adam(ps, amsgrad=True), lambda ps: gt.AdamW(ps), lambda ps: gt.Lion(ps)],
    ids=["sgd", "sgd-momentum", "adam-amsgrad", "adamw", "lion"])
def test_params_without_grad_are_skipped(make):
    torch.manual_seed(0)
    used, unused = nn.Parameter(torch.randn(5)), nn.Parameter(torch.randn(4))
    before = unused.detach().clone()
    opt = make([used, unused])
    for _ in range(3):
        opt.zero_grad()
        (used * torch.arange(5.0)).sum().backward()
        assert unused.grad is None
        opt.step()
    assert torch.equal(unused.detach(), before)
    assert not opt.state.get(unused)  # no state created for it
    assert 1 not in opt.state_dict()["state"]
    assert not torch.equal(used.detach()[1:], torch.zeros(4))


def test_step_with_no_grads_at_all_is_a_no_op():
    p = nn.Parameter(torch.ones(3))
    opt = gt.AdamW([p])
    assert opt.step() is None
    assert torch.equal(p.detach(), torch.ones(3)) and not opt.state


def test_step_hooks_run_once_per_step():
    p = nn.Parameter(torch.ones(3))
    opt = gt.AdamW([p], lr=0.1)
    calls = []
    opt.register_step_pre_hook(lambda o, args, kwargs: calls.append("pre"))
    opt.register_step_post_hook(lambda o, args, kwargs: calls.append("post"))
    for _ in range(2):
        p.grad = torch.ones(3)
        opt.step()
    assert calls == ["pre", "post"] * 2


@pytest.mark.parametrize("name, kwargs", [("SGD", dict(lr=0.1)),
                                          ("SGD", dict(lr=0.1, momentum=0.9)),
                                          ("Adam", dict(amsgrad=True)), ("AdamW", {})],
                         ids=["sgd", "sgd-momentum", "adam-amsgrad", "adamw"])
def test_state_dict_layout_is_torch_optim(name, kwargs):
    """Same param indices with state, the same keys, and ``step`` a float32 scalar tensor."""
    def run(cls, **impl):
        torch.manual_seed(0)
        ps = [nn.Parameter(torch.randn(3)), nn.Parameter(torch.randn(2)),
              nn.Parameter(torch.randn(4))]
        opt = cls(ps, **kwargs, **impl)
        for _ in range(2):
            opt.zero_grad()
            (ps[0].sum() + ps[2].square().sum()).backward()
            opt.step()
        return opt.state_dict()

    ours = run(getattr(gt, name))
    theirs = run(getattr(torch.optim, name), foreach=False)
    assert ours["state"].keys() == theirs["state"].keys()
    for k in theirs["state"]:
        assert ours["state"][k].keys() == theirs["state"][k].keys()
        if "step" in theirs["state"][k]:
            step = ours["state"][k]["step"]
            assert isinstance(step, torch.Tensor) and step.dtype == torch.float32
            assert step.shape == () and float(step) == 2.0
    assert {k for k in ours["param_groups"][0]} >= {k for k in theirs["param_groups"][0]}


def test_one_kernel_call_per_step_one_batch_per_param_group(digits, monkeypatch):
    calls = []
    real = gdfast._core.step

    def counting(rule, batches, stream):
        calls.append([len(batch[0]) for batch in batches])
        return real(rule, batches, stream)

    monkeypatch.setattr(gdfast._core, "step", counting)
    model = mlp()
    opt = gt.AdamW(_two_groups(model, lr=1e-3))
    train(digits, None, model=model, opt=opt, steps=3)
    assert calls == [[2, 2]] * 3  # one call per step; two groups of two tensors


# ---------------------------------------------------------------------------------------------
# state_dict interchange with torch.optim, both ways, then continued training


@pytest.mark.parametrize("kwargs", [dict(lr=1e-2), dict(lr=1e-2, amsgrad=True,
                                                        weight_decay=0.1)],
                         ids=["adamw", "adamw-amsgrad"])
@pytest.mark.parametrize("impl", [dict(foreach=False), dict(fused=True)],
                         ids=["foreach=False", "fused"])
def test_state_dict_torch_to_gdfast_and_back(digits, kwargs, impl, tmp_path):
    reference = train(digits, lambda m: torch.optim.AdamW(m.parameters(), **kwargs, **impl),
                      steps=60)

    # torch.optim (25 steps) -> gdfast (25 steps) -> torch.optim (10 steps), through files and
    # torch.load's default weights_only=True.
    model, opt, *_ = train(digits, lambda m: torch.optim.AdamW(m.parameters(), **kwargs,
                                                               **impl), steps=25)
    torch.save(opt.state_dict(), tmp_path / "torch.pt")
    ours = gt.AdamW(model.parameters(), **kwargs)
    ours.load_state_dict(torch.load(tmp_path / "torch.pt"))
    assert float(ours.state[model[0].weight]["step"]) == 25.0
    train(digits, None, model=model, opt=ours, steps=25, start=25)
    torch.save(ours.state_dict(), tmp_path / "gdfast.pt")
    back = torch.optim.AdamW(model.parameters(), **kwargs, **impl)
    back.load_state_dict(torch.load(tmp_path / "gdfast.pt"))
    train(digits, None, model=model, opt=back, steps=10, start=50)

    assert_params_close(model, reference[0], torch.float32)
    assert_state_close(back, reference[1], torch.float32)


def test_state_dict_gdfast_to_torch_mid_training(digits):
    reference = train(digits, lambda m: gt.AdamW(m.parameters(), lr=1e-2), steps=50)
    model, opt, *_ = train(digits, lambda m: gt.AdamW(m.parameters(), lr=1e-2), steps=20)
    theirs = torch.optim.AdamW(model.parameters(), lr=1e-2, foreach=False)
    theirs.load_state_dict(opt.state_dict())
    train(digits, None, model=model, opt=theirs, steps=30, start=20)
    assert_params_close(model, reference[0], torch.float32)
    assert_state_close(theirs, reference[1], torch.float32)


def test_state_dict_interchange_lion(digits):
    lion_pytorch = pytest.importorskip("lion_pytorch")
    reference = train(digits, lambda m: lion_pytorch.Lion(m.parameters(), lr=1e-3))
    model, opt, *_ = train(digits, lambda m: lion_pytorch.Lion(m.parameters(), lr=1e-3),
                           steps=20)
    ours = gt.Lion(model.parameters(), lr=1e-3)
    ours.load_state_dict(opt.state_dict())
    train(digits, None, model=model, opt=ours, steps=15, start=20)
    back = lion_pytorch.Lion(model.parameters(), lr=1e-3)
    back.load_state_dict(ours.state_dict())
    train(digits, None, model=model, opt=back, steps=15, start=35)
    assert_lion_close(model, reference[0], torch.float32, 1e-3)


# ---------------------------------------------------------------------------------------------
# LR schedulers (they write group["lr"], and OneCycleLR / CyclicLR also betas / momentum)


S = torch.optim.lr_scheduler
SCHEDULERS = {
    "StepLR": lambda o: S.StepLR(o, step_size=7, gamma=0.5),
    "MultiStepLR": lambda o: S.MultiStepLR(o, milestones=[5, 12, 20], gamma=0.3),
    "ExponentialLR": lambda o: S.ExponentialLR(o, gamma=0.95),
    "CosineAnnealingLR": lambda o: S.CosineAnnealingLR(o, T_max=15, eta_min=1e-4),
    "CosineAnnealingWarmRestarts": lambda o: S.CosineAnnealingWarmRestarts(o, T_0=6, T_mult=2),
    "OneCycleLR": lambda o: S.OneCycleLR(o, max_lr=2e-2, total_steps=STEPS),  # cycles betas
    "LambdaLR": lambda o: S.LambdaLR(o, lambda k: 1.0 / (1 + k)),
    "MultiplicativeLR": lambda o: S.MultiplicativeLR(o, lambda k: 0.97),
    "ConstantLR": lambda o: S.ConstantLR(o, factor=0.25, total_iters=8),
    "LinearLR": lambda o: S.LinearLR(o, start_factor=0.1, total_iters=10),
    "PolynomialLR": lambda o: S.PolynomialLR(o, total_iters=40, power=2.0),
    "SequentialLR": lambda o: S.SequentialLR(o, [S.LinearLR(o, start_factor=0.2, total_iters=5),
                                                 S.ExponentialLR(o, gamma=0.9)], milestones=[5]),
    "ChainedScheduler": lambda o: S.ChainedScheduler([S.ConstantLR(o, factor=0.5, total_iters=4),
                                                      S.ExponentialLR(o, gamma=0.95)]),
    "CyclicLR": lambda o: S.CyclicLR(o, base_lr=1e-3, max_lr=2e-2, step_size_up=6,
                                     cycle_momentum=False),
    "ReduceLROnPlateau": lambda o: S.ReduceLROnPlateau(o, factor=0.5, patience=1,
                                                       threshold=0.2),
}


@pytest.mark.parametrize("name", sorted(SCHEDULERS))
def test_lr_scheduler_trajectory_matches_torch(digits, name):
    def run(make_opt):
        holder = {}

        def make(model):
            opt = make_opt(model)
            holder["sched"] = SCHEDULERS[name](opt)
            return opt

        def step(loss):
            if name == "ReduceLROnPlateau":
                holder["sched"].step(loss)
            else:
                holder["sched"].step()

        return train(digits, make, scheduler=step, steps=30)

    ours = run(lambda m: gt.AdamW(m.parameters(), lr=1e-2))
    theirs = run(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, foreach=False))
    assert ours[3] == theirs[3]  # the lr of every step, exactly
    assert len({lr[0] for lr in ours[3]}) > 1  # the schedule did change the lr
    assert_params_close(ours[0], theirs[0], torch.float32)
    assert_state_close(ours[1], theirs[1], torch.float32)


def test_cyclic_lr_with_momentum_cycling_on_sgd(digits):
    def run(cls, **impl):
        holder = {}

        def make(model):
            opt = cls(model.parameters(), lr=1e-2, momentum=0.9, **impl)
            holder["sched"] = S.CyclicLR(opt, base_lr=1e-3, max_lr=5e-2, step_size_up=5,
                                         cycle_momentum=True, base_momentum=0.8,
                                         max_momentum=0.95)
            return opt

        return train(digits, make, scheduler=lambda loss: holder["sched"].step(), steps=30)

    ours, theirs = run(gt.SGD), run(torch.optim.SGD, foreach=False)
    assert ours[3] == theirs[3]
    assert ours[1].param_groups[0]["momentum"] == theirs[1].param_groups[0]["momentum"]
    assert_params_close(ours[0], theirs[0], torch.float32)


# ---------------------------------------------------------------------------------------------
# AMP: torch.amp.GradScaler hands gdfast grad_scale / found_inf


def _amp_train(data, make_opt, steps=12, inf_at=(), clip=False, spy=None):
    model = mlp()
    opt = make_opt(model)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 12, growth_interval=4)
    snapshots = []
    for i in range(steps):
        x, y = batch(data, i, torch.float32)
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = model(x)
        scaler.scale(F.cross_entropy(out.float(), y)).backward()
        if i in inf_at:
            model[2].weight.grad[1, 2] = float("inf")
        if clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(model.parameters(), 0.5)
        if spy is not None:
            spy(opt, model)
        scaler.step(opt)
        scaler.update()
        snapshots.append(scaler.get_scale())
    return model, opt, snapshots


@pytest.mark.parametrize("clip", [False, True], ids=["plain", "unscale-and-clip"])
@pytest.mark.parametrize("impl", [dict(foreach=False), dict(fused=True)],
                         ids=["foreach=False", "fused"])
def test_grad_scaler_matches_torch(digits, impl, clip):
    ours = _amp_train(digits, lambda m: gt.AdamW(m.parameters(), lr=1e-2), inf_at=(5,),
                      clip=clip)
    theirs = _amp_train(digits, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, **impl),
                        inf_at=(5,), clip=clip)
    assert ours[2] == theirs[2]  # the same scale history: halved after the inf step
    assert ours[2][5] == ours[2][4] / 2
    assert_params_close(ours[0], theirs[0], torch.float32)
    assert_state_close(ours[1], theirs[1], torch.float32)
    assert float(ours[1].state[ours[0][0].weight]["step"]) == 11.0  # one step skipped


def test_grad_scaler_passes_scale_and_found_inf_to_gdfast(digits, monkeypatch):
    """The grads reach step() still scaled (no separate unscale pass) with grad_scale set;
    gdfast divides inside its pass."""
    seen = []
    real_step = gt.AdamW.step

    def spying_step(self, closure=None):
        seen.append((float(self.grad_scale), float(self.found_inf),
                     self.param_groups[0]["params"][0].grad.clone()))
        return real_step(self, closure)

    monkeypatch.setattr(gt.AdamW, "step", spying_step)
    expected = []

    def record_grads(opt, model):
        expected.append(model[0].weight.grad.clone())

    _amp_train(digits, lambda m: gt.AdamW(m.parameters(), lr=1e-2), steps=3,
               spy=record_grads)
    assert [s[:2] for s in seen] == [(4096.0, 0.0)] * 3
    for (_, _, grad), scaled in zip(seen, expected):
        assert torch.equal(grad, scaled)  # untouched by the scaler before step
        assert grad.abs().max() > 10  # and really scaled (unscaled they are < 1)


@pytest.mark.parametrize("make", [
    lambda ps: gt.SGD(ps, lr=0.1, momentum=0.9), lambda ps: gt.Adam(ps, amsgrad=True),
    lambda ps: gt.AdamW(ps), lambda ps: gt.Lion(ps)],
    ids=["sgd-momentum", "adam-amsgrad", "adamw", "lion"])
def test_inf_step_skipped_leaves_everything_unchanged(digits, make):
    snapshot = {}

    def spy(opt, model):
        if opt.state:
            snapshot["params"] = [p.detach().clone() for p in model.parameters()]
            snapshot["state"] = {k: {n: v.clone() for n, v in s.items()}
                                 for k, s in opt.state_dict()["state"].items()}

    def make_opt(model):
        return make(model.parameters())

    # Inf at the last step (index 3): compare with the state just before it.
    model, opt, scales = _amp_train(digits, make_opt, steps=4, inf_at=(3,), spy=spy)
    assert scales[3] == scales[2] / 2
    for a, b in zip(model.parameters(), snapshot["params"]):
        assert torch.equal(a.detach(), b)
    state = opt.state_dict()["state"]
    assert state.keys() == snapshot["state"].keys()
    for k in state:
        for n, v in state[k].items():
            assert torch.equal(v, snapshot["state"][k][n]), (k, n)


def test_ops_grad_scale_matches_unscaled_grads():
    rng = np.random.default_rng(0)
    p, g = rng.standard_normal(100).astype(np.float32), rng.standard_normal(100).astype(np.float32)
    a = [p.copy(), g.copy(), np.zeros(100, np.float32), np.zeros(100, np.float32)]
    b = [p.copy(), torch.from_numpy(g * 65536.0), torch.zeros(100), torch.zeros(100)]
    ops.adam_(*a, step=1, lr=1e-2)
    ops.adam_(*b, step=1, lr=1e-2, grad_scale=65536.0)
    np.testing.assert_array_equal(b[0], a[0])


# ---------------------------------------------------------------------------------------------
# torch.compile, no_grad semantics


def test_compiled_model_trains_with_gdfast_adamw(digits):
    torch._dynamo.reset()
    try:
        model = mlp()
        compiled = torch.compile(model, backend="aot_eager")
        opt = gt.AdamW(model.parameters(), lr=1e-2)
        losses = []
        for i in range(15):
            x, y = batch(digits, i, torch.float32)
            opt.zero_grad()
            loss = F.cross_entropy(compiled(x), y)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        torch._dynamo.reset()
    reference = train(digits, lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2,
                                                          foreach=False), steps=15)
    assert losses[-1] < 0.7 * losses[0]
    np.testing.assert_allclose(losses, reference[2], rtol=1e-4)
    assert_params_close(model, reference[0], torch.float32)


def test_compiled_training_step_compiles_once_and_matches_eager():
    """torch.compile over a whole training step (zero_grad, forward, backward, step): gdfast's
    step is one opaque call (torch.compiler.disable), so Dynamo makes its graphs on the first
    call and none after (traced into, the step's counts made it recompile every step), and the
    result is bitwise eager's."""
    from torch._dynamo.utils import counters

    x = torch.randn(32, 64, generator=torch.Generator().manual_seed(0))
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(1))
    results, graphs = [], []
    for compiled in (False, True):
        torch._dynamo.reset()
        counters.clear()
        model = mlp()
        opt = gt.AdamW(model.parameters(), lr=1e-2)

        def train_step(x, y):
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()  # (a loss kept past the step's graph
            opt.step()  # break would be a non-leaf whose .grad Dynamo reads: a warning)

        step = torch.compile(train_step, backend="aot_eager") if compiled else train_step
        try:
            for i in range(100):
                step(x, y)
                if i == 1:
                    graphs.append(counters["stats"]["unique_graphs"])
            graphs.append(counters["stats"]["unique_graphs"])
        finally:
            torch._dynamo.reset()
        results.append([p.detach().clone() for p in model.parameters()])
    assert graphs[2] == graphs[3] >= 1  # compiled: no graph made after the second step
    for a, b in zip(*results):
        assert torch.equal(a, b)


def test_dispatching_subclasses_are_refused_at_construction_plain_subclasses_stepped():
    """A tensor subclass with its own dispatch other than DTensor (whose local shard is
    stepped: tests/test_fsdp2.py) may hold no memory of its own: the constructor says so,
    rather than torch's '.numpy() is not supported for tensor subclasses' at the first step.
    A plain Python subclass is stepped."""

    class Dispatching(torch.Tensor):
        @classmethod
        def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
            def plain(x):
                return x.as_subclass(torch.Tensor) if isinstance(x, cls) else x
            return func(*map(plain, args), **(kwargs or {}))

    p = torch.Tensor._make_subclass(Dispatching, torch.ones(4, 2), True)
    with pytest.raises(TypeError, match=r"^params\[0\]: is a Dispatching, a tensor subclass "
                                        r"with its own dispatch; gdfast steps plain tensors and "
                                        r"DTensors"):
        gt.AdamW([p])

    class Plain(torch.Tensor):
        pass

    q = nn.Parameter(torch.ones(3).as_subclass(Plain))
    opt = gt.SGD([q], lr=0.5)
    q.grad = torch.ones(3)
    opt.step()
    assert torch.equal(q.detach().as_subclass(torch.Tensor), torch.full((3,), 0.5))


def test_step_builds_no_autograd_graph():
    torch.manual_seed(0)
    p = nn.Parameter(torch.randn(5))
    opt = gt.AdamW([p], lr=0.1)
    with torch.enable_grad():
        (p * p).sum().backward()
        opt.step()
    assert p.is_leaf and p.grad_fn is None and p.requires_grad
    for value in opt.state[p].values():
        assert not value.requires_grad and value.grad_fn is None


def test_step_bumps_the_version_counter_like_torch_optim():
    """torch.optim's in-place update bumps each param's version counter, so autograd raises
    when a graph that saved the old value is used after step(). gdfast must do the same, or
    such a backward silently computes gradients from the new weights."""
    for cls in (torch.optim.AdamW, gt.AdamW):
        p = nn.Parameter(torch.ones(3))
        opt = cls([p], lr=0.1)
        loss = (p * p).sum()  # saves p for backward
        loss.backward(retain_graph=True)
        before = p._version
        opt.step()
        assert p._version > before, cls
        with pytest.raises(RuntimeError, match="modified by an inplace operation"):
            loss.backward()


# ---------------------------------------------------------------------------------------------
# What is refused, what is accepted and ignored


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
# (foreach=True with fused=True: torch.optim raises; test_torch_optim_db.)
@pytest.mark.parametrize("impl", [dict(foreach=True), dict(fused=True), dict(foreach=False),
                                  dict(fused=False)],
                         ids=lambda d: ",".join(f"{k}={v}" for k, v in d.items()))
def test_foreach_and_fused_accepted_and_ignored_silently(digits, name, impl):
    kwargs = dict(lr=0.05, momentum=0.9) if name == "SGD" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = train(digits, lambda m: getattr(gt, name)(m.parameters(), **kwargs, **impl),
                     steps=5)
    plain = train(digits, lambda m: getattr(gt, name)(m.parameters(), **kwargs), steps=5)
    for a, b in zip(ours[0].parameters(), plain[0].parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("dtype", [torch.float8_e5m2, torch.int32])
def test_unsupported_params_rejected_naming_dtype(dtype):
    """(bfloat16 and float16 are stepped: tests/test_precision_stateful.py.)"""
    with pytest.raises(TypeError, match=rf"params\[1\]: .*{str(dtype)}"):
        gt.AdamW([nn.Parameter(torch.randn(2)),
                  nn.Parameter(torch.randn(2).to(dtype), requires_grad=False)])


def test_non_cpu_params_rejected():
    with pytest.raises(ValueError, match=r"params\[0\]: is on meta"):
        gt.AdamW([nn.Parameter(torch.empty(2, device="meta"))])


def test_channels_last_params_are_stepped():
    """Dense layouts other than contiguous are stepped as flat views of their memory, states
    keeping the param's layout as torch.optim's do (tests/test_bad_input_stateful.py compares
    them with contiguous twins bitwise and with torch.optim)."""
    conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
    conv(torch.randn(2, 3, 5, 5).to(memory_format=torch.channels_last)).sum().backward()
    opt = gt.AdamW(conv.parameters())
    before = conv.weight.detach().clone()
    opt.step()
    assert not torch.equal(conv.weight.detach(), before)
    assert opt.state[conv.weight]["exp_avg"].is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
def test_tensor_lr_accepted_as_torch_does(digits, name):
    """torch.optim takes ``lr: float | Tensor`` (with foreach=False / fused)."""
    kwargs = dict(momentum=0.9) if name == "SGD" else {}
    ours = train(digits, lambda m: getattr(gt, name)(m.parameters(), lr=torch.tensor(0.01),
                                                     **kwargs), steps=10)
    theirs = train(digits, lambda m: getattr(torch.optim, name)(
        m.parameters(), lr=torch.tensor(0.01), foreach=False, **kwargs), steps=10)
    assert_params_close(ours[0], theirs[0], torch.float32)


def test_mixed_dtype_params_in_one_group(digits):
    torch.manual_seed(0)
    ps = [nn.Parameter(torch.randn(4)), nn.Parameter(torch.randn(4, dtype=torch.float64))]
    qs = [nn.Parameter(p.detach().clone()) for p in ps]
    ours, theirs = gt.AdamW(ps, lr=0.1), torch.optim.AdamW(qs, lr=0.1, foreach=False)
    for _ in range(5):
        for opt, params in ((ours, ps), (theirs, qs)):
            opt.zero_grad()
            sum((p * p).sum() for p in params).backward()
            opt.step()
    torch.testing.assert_close(ps[0].detach(), qs[0].detach(), **FP32)
    torch.testing.assert_close(ps[1].detach(), qs[1].detach(), **FP64)


# ---------------------------------------------------------------------------------------------
# torch.distributed: ZeroRedundancyOptimizer and DDP, gloo, 2 processes on localhost


DIST_STEPS = 20
DIST_BATCH = 32  # per rank
DIST_KWARGS = dict(lr=1e-2, weight_decay=0.1)


def _dist_batch(x, y, i, rank, world):
    start = (i * DIST_BATCH * world) % (len(x) - DIST_BATCH * world) + rank * DIST_BATCH
    return x[start:start + DIST_BATCH], y[start:start + DIST_BATCH]


def _dist_worker(rank, world, port, out, x, y):
    """One rank: DDP training with ZeroRedundancyOptimizer(optimizer_class=gdfast AdamW),
    then with a plain gdfast AdamW. Rank 0 saves the params; every rank its shard size."""
    import torch.distributed as dist
    from torch.distributed.optim import ZeroRedundancyOptimizer
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    gdfast.set_num_threads(1)
    timeout = datetime.timedelta(seconds=60)
    store = dist.TCPStore("127.0.0.1", port, is_master=False, timeout=timeout)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=timeout)
    try:
        for mode in ("zero", "ddp"):
            model = DistributedDataParallel(mlp())
            if mode == "zero":
                opt = ZeroRedundancyOptimizer(model.parameters(), optimizer_class=gt.AdamW,
                                              **DIST_KWARGS)
                local = opt.optim
                shard = [p.numel() for g in local.param_groups for p in g["params"]]
                torch.save({"type": type(local).__name__, "shard": shard},
                           os.path.join(out, f"shard{rank}.pt"))
            else:
                opt = gt.AdamW(model.parameters(), **DIST_KWARGS)
            for i in range(DIST_STEPS):
                xb, yb = _dist_batch(x, y, i, rank, world)
                opt.zero_grad()
                F.cross_entropy(model(xb), yb).backward()
                opt.step()
            if mode == "zero":
                assert len(local.state) == len(shard)  # this rank stepped only its shard
            if rank == 0:
                torch.save([p.detach().clone() for p in model.module.parameters()],
                           os.path.join(out, f"{mode}.pt"))
            # Free DDP and ZeRO while the process group lives: torch 2.13 hangs now and then
            # (5 runs in 16, with torch.optim.AdamW as well) in their destructors when they
            # outlive destroy_process_group().
            del model, opt
            gc.collect()
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_run(digits, tmp_path_factory):
    dist = pytest.importorskip("torch.distributed")
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("this torch build has no gloo backend")
    import torch.multiprocessing as mp

    out = str(tmp_path_factory.mktemp("dist"))
    x, y = digits[0].float(), digits[1]
    # The rendezvous store lives here, on a port the OS picked on 127.0.0.1 (no race with
    # other processes for a port chosen in advance); the two ranks connect to it.
    store = dist.TCPStore("127.0.0.1", 0, is_master=True, wait_for_workers=False,
                          timeout=datetime.timedelta(seconds=60))
    context = mp.spawn(_dist_worker, args=(2, store.port, out, x, y), nprocs=2, join=False)
    deadline = time.monotonic() + 90
    while not context.join(timeout=0.5):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail("distributed workers did not finish within 90 s")
    del store
    shards = [torch.load(os.path.join(out, f"shard{r}.pt")) for r in range(2)]
    return {"zero": torch.load(os.path.join(out, "zero.pt")),
            "ddp": torch.load(os.path.join(out, "ddp.pt")), "shards": shards}


def _single_process_reference(digits):
    x, y = digits[0].float(), digits[1]
    model = mlp()
    opt = torch.optim.AdamW(model.parameters(), **DIST_KWARGS, foreach=False)
    for i in range(DIST_STEPS):
        # The union of both ranks' batches; mean loss = the mean of the ranks' means, which is
        # what DDP's gradient averaging computes.
        parts = [_dist_batch(x, y, i, r, 2) for r in range(2)]
        xb, yb = torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
        opt.zero_grad()
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
    return [p.detach() for p in model.parameters()]


def test_zero_redundancy_optimizer_with_gdfast_adamw(digits, distributed_run):
    shards = distributed_run["shards"]
    assert [s["type"] for s in shards] == ["AdamW", "AdamW"]
    total = sum(p.numel() for p in mlp().parameters())
    assert sum(sum(s["shard"]) for s in shards) == total  # the shards partition the model
    assert all(0 < sum(s["shard"]) < total for s in shards)
    for a, b in zip(distributed_run["zero"], _single_process_reference(digits)):
        torch.testing.assert_close(a, b, **FP32)


def test_ddp_with_gdfast_adamw(digits, distributed_run):
    for a, b in zip(distributed_run["ddp"], _single_process_reference(digits)):
        torch.testing.assert_close(a, b, **FP32)


def test_import_gdfast_does_not_import_torch():
    from conftest import run_python

    out = run_python("import sys, gdfast, gdfast.ops; print('torch' in sys.modules)")
    assert out.stdout.strip() == "False", out.stderr



# float32 CPU params are kept as NumPy views between steps, bfloat16 ones as the extension's
# views of the tensors (as CUDA params are): both must follow a replaced p.data.
KEPT_DTYPES = pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])


@KEPT_DTYPES
def test_param_data_replaced_between_steps_is_followed(dtype):
    """gdfast.torch reuses views of params across steps; replacing ``p.data`` (new memory, or a
    new shape) must be noticed, not written through a stale view. (Values exact in bfloat16.)"""
    p = torch.nn.Parameter(torch.ones(8, dtype=dtype))
    opt = gt.SGD([p], lr=0.5)
    p.grad = torch.ones(8, dtype=dtype)
    opt.step()
    assert torch.equal(p.detach(), torch.full((8,), 0.5, dtype=dtype))
    p.data = torch.full((8,), 5.0, dtype=dtype)
    opt.step()
    assert torch.equal(p.detach(), torch.full((8,), 4.5, dtype=dtype))
    p.data = torch.ones(4, dtype=dtype)
    p.grad = torch.ones(4, dtype=dtype)
    opt.step()
    assert torch.equal(p.detach(), torch.full((4,), 0.5, dtype=dtype))


@KEPT_DTYPES
def test_param_reshaped_in_place_between_steps_is_followed(dtype):
    p = torch.nn.Parameter(torch.ones(8, dtype=dtype))
    opt = gt.SGD([p], lr=0.5)
    p.grad = torch.ones(8, dtype=dtype)
    opt.step()
    p.data = p.data.view(2, 4)  # same memory, new shape
    p.grad = torch.ones(2, 4, dtype=dtype)
    opt.step()
    assert torch.equal(p.detach(), torch.zeros(2, 4, dtype=dtype))


def test_torch_view_takes_only_what_the_kernels_may_keep():
    """The extension's kept view of a tensor: made for a contiguous float tensor that does
    not require grad; anything else is left to the full read (None), which names problems."""
    from gdfast import _core

    class Subclass(torch.Tensor):
        pass

    with torch.inference_mode():
        inference = torch.zeros(4)  # (written by a step: torch forbids that outside the mode)
    assert _core.torch_view(torch.zeros(4, dtype=torch.bfloat16)) is not None
    for refused in (torch.zeros(4, requires_grad=True), torch.zeros(4, 2).t(),
                    torch.zeros(4, dtype=torch.int32), np.zeros(4, np.float32), inference,
                    torch.zeros(4).as_subclass(Subclass), torch.zeros(4, 2)[:, 0]):
        assert _core.torch_view(refused) is None


def test_torch_grads_reads_plain_grads_of_the_dtype_else_leaves_them_to_python():
    """_core.torch_grads: the grads of a batch read in one pass, when every one is a plain
    contiguous tensor of the param dtype; None if any is not (the Python path then copies,
    detaches or names it)."""
    from gdfast import _core

    class Subclass(torch.Tensor):
        pass

    plain = [torch.zeros(4, dtype=torch.bfloat16), torch.zeros(2, 3, dtype=torch.bfloat16)]
    views = _core.torch_grads(plain, torch.bfloat16)
    assert isinstance(views, list) and len(views) == 2
    assert all(type(v).__name__ == "PyCapsule" for v in views)
    assert _core.torch_grads([], torch.bfloat16) == []
    with warnings.catch_warnings():  # (sparse CSR is in beta)
        warnings.simplefilter("ignore", UserWarning)
        csr = torch.zeros(2, 2, dtype=torch.bfloat16).to_sparse_csr()
    for odd in (torch.zeros(4), torch.zeros(4, 2, dtype=torch.bfloat16).t(), csr,
                torch.zeros(4, dtype=torch.bfloat16, requires_grad=True),
                torch.zeros(4, dtype=torch.bfloat16).as_subclass(Subclass),
                torch.zeros(4, dtype=torch.bfloat16).to_sparse()):
        assert _core.torch_grads([plain[0], odd], torch.bfloat16) is None, odd
    assert _core.torch_grads(plain, torch.float16) is None  # not the param dtype
    assert _core.torch_grads(tuple(plain), torch.bfloat16) is None  # (a list only)


def test_bfloat16_grads_off_the_fast_path_step_as_plain_copies():
    """A transposed grad and one that requires grad (create_graph=True) step a bfloat16
    param as contiguous, detached copies of them would; a grad of another dtype or a sparse
    one is refused as torch.optim refuses it, with nothing written."""
    def stepped(grad):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 8, dtype=torch.bfloat16).view(4, 2))
        opt = gt.SGD([p], lr=0.5)  # (the update is the grad itself: its order shows)
        p.grad = grad
        opt.step()
        return p.detach()

    base = torch.arange(8, dtype=torch.bfloat16).view(2, 4)
    expected = stepped(base.t().contiguous())
    assert not torch.equal(expected, stepped(base.view(4, 2)))  # (the order matters)
    assert torch.equal(stepped(base.t()), expected)
    assert torch.equal(stepped(base.t().contiguous().requires_grad_()), expected)
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    opt = gt.Adam([p], lr=0.1)
    p.grad = torch.ones(4, dtype=torch.bfloat16).to_sparse()
    with pytest.raises(RuntimeError, match="does not support sparse gradients"):
        opt.step()
    with torch.no_grad():  # (torch's .grad setter refuses another dtype; .data does not)
        p.grad = torch.ones(4, dtype=torch.bfloat16)
        p.grad.data = torch.ones(4)
    with pytest.raises(TypeError, match=r"\.grad: expected torch\.bfloat16 like its param"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(4, dtype=torch.bfloat16))


def test_bfloat16_batches_keep_views_and_step_as_torch():
    params = [torch.nn.Parameter(torch.randn(n, dtype=torch.bfloat16)) for n in (5, 64)]
    twins = [torch.nn.Parameter(p.detach().clone()) for p in params]
    ours, ref = gt.AdamW(params, lr=1e-2), torch.optim.AdamW(twins, lr=1e-2, fused=True)
    for _ in range(3):
        for p, t in zip(params, twins):
            p.grad = torch.randn_like(p)
            t.grad = p.grad.clone()
        ours.step()
        ref.step()
    (batch,) = next(iter(ours._batch_cache.values()))[2]
    assert all(type(a).__name__ == "PyCapsule" for a in batch.param_arrays)
    for p, t in zip(params, twins):  # both round to nearest from float32 math
        torch.testing.assert_close(p, t, rtol=0, atol=0)


def _edit_first_step(opt):
    opt.state[next(iter(opt.state))]["step"].fill_(10.0)  # one param's count, in place


def _replace_first_exp_avg(opt):
    st = opt.state[next(iter(opt.state))]
    st["exp_avg"] = torch.full_like(st["exp_avg"], 0.01)


@pytest.mark.parametrize("edit", [lambda opt: opt.state.clear(), _edit_first_step,
                                  _replace_first_exp_avg],
                         ids=["state-cleared", "one-step-count-edited", "exp-avg-replaced"])
def test_state_edited_between_steps_is_followed(digits, edit):
    """gdfast.torch keeps its kernel arguments across steps; state a user clears, edits in
    place or replaces must be seen exactly as torch.optim sees it."""
    results = []
    for cls, impl in ((torch.optim.Adam, dict(foreach=False)), (gt.Adam, {})):
        model, opt, _, _ = train(digits, lambda m: cls(m.parameters(), lr=1e-2, **impl),
                                 steps=3)
        edit(opt)
        train(digits, None, model=model, opt=opt, steps=3, start=3)
        results.append((model, opt))
    (ref_model, ref_opt), (model, opt) = results
    assert_params_close(model, ref_model, torch.float32)
    assert_state_close(opt, ref_opt, torch.float32)


@pytest.mark.parametrize("how", ["deepcopy", "pickle"])
def test_copied_optimizer_steps_its_own_params(digits, how):
    model, opt, _, _ = train(digits, lambda m: gt.AdamW(m.parameters(), lr=1e-2), steps=2)
    both = copy.deepcopy({"model": model, "opt": opt}) if how == "deepcopy" else \
        pickle.loads(pickle.dumps({"model": model, "opt": opt}))
    before = [p.detach().clone() for p in model.parameters()]
    train(digits, None, model=both["model"], opt=both["opt"], steps=2, start=2)
    for p, b in zip(model.parameters(), before):  # the original is not written through
        assert torch.equal(p.detach(), b)
    train(digits, None, model=model, opt=opt, steps=2, start=2)
    assert_params_close(both["model"], model, torch.float32)


@pytest.mark.parametrize("name", ["SGD", "Adam", "Lion"])
def test_grads_that_require_grad_are_read(name):
    """backward(create_graph=True) leaves grads that require grad: read like any other."""
    results = []
    for cls in (getattr(gt, name), getattr(gt, name)):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 5))
        opt = cls([p], lr=0.1)
        for _ in range(2):
            opt.zero_grad()
            with warnings.catch_warnings():  # torch warns of the grad <-> param cycle
                warnings.simplefilter("ignore", UserWarning)
                (p ** 3).sum().backward(create_graph=len(results) == 0)
            assert p.grad.requires_grad == (len(results) == 0)
            opt.step()
        results.append(p.detach().clone())
    assert torch.equal(results[0], results[1])
    assert not torch.equal(results[0], torch.linspace(-1, 1, 5))
