"""Schedule-Free AdamW's train() and eval() (the param as the training iterate y or as the
average x), both front ends, against pytorch_optimizer; a step in eval mode is refused. The
step itself is tested with every other rule (test_rules, test_torch_parity)."""

from __future__ import annotations

import numpy as np
import pytest

import gdfast

import cases


def _grads(k: int):
    return [cases.gradient(n, np.float64, k, seed=i) for i, n in enumerate((257, 33))]


def _params():
    return [cases.initial_param(n, np.float64, seed=i) for i, n in enumerate((257, 33))]


def test_eval_and_train_match_pytorch_optimizer() -> None:
    """float64, so that both sides agree to ~1e-15: y after 5 steps, x after eval(), y again
    after train() (x -> y -> x is exact only up to rounding)."""
    torch = pytest.importorskip("torch")
    pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
    gt = pytest.importorskip("gdfast.torch")
    kw = dict(lr=1e-2, betas=(0.8, 0.99), weight_decay=0.01, warmup_steps=3)
    sides = {}
    for name, cls in (("ours", gt.ScheduleFreeAdamW),
                      ("theirs", pytorch_optimizer.ScheduleFreeAdamW),
                      ("numpy", gdfast.ScheduleFreeAdamW)):
        if name == "numpy":
            ps = _params()
            opt = cls(ps, **kw)
            for k in range(1, 6):
                opt.step(_grads(k))
            trail = [[p.copy() for p in ps]]
            opt.eval()
            trail.append([p.copy() for p in ps])
            opt.train()
            trail.append([p.copy() for p in ps])
        else:
            ts = [torch.tensor(p, requires_grad=True) for p in _params()]
            opt = cls(ts, foreach=False, **kw) if name == "theirs" else cls(ts, **kw)
            for k in range(1, 6):
                for t, g in zip(ts, _grads(k)):
                    t.grad = torch.tensor(g)
                opt.step()
            trail = [[t.detach().numpy().copy() for t in ts]]
            opt.eval()
            trail.append([t.detach().numpy().copy() for t in ts])
            opt.train()
            trail.append([t.detach().numpy().copy() for t in ts])
        sides[name] = trail
    for stage in range(3):
        for a, b, c in zip(sides["ours"][stage], sides["theirs"][stage], sides["numpy"][stage]):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)
            if stage == 0:  # the steps: one kernel, bitwise
                np.testing.assert_array_equal(a, c)
            else:  # torch's lerp_ may fuse its multiply-add: an ulp
                np.testing.assert_allclose(a, c, rtol=4e-16, atol=1e-300)
    # eval() really moved the params (x differs from y), train() brought them back
    assert not np.allclose(sides["ours"][0][0], sides["ours"][1][0], rtol=1e-6)
    np.testing.assert_allclose(sides["ours"][2][0], sides["ours"][0][0], rtol=1e-12, atol=1e-14)


def test_a_step_in_eval_mode_is_refused_and_changes_nothing() -> None:
    ps = _params()
    opt = gdfast.ScheduleFreeAdamW(ps, lr=1e-2)
    opt.step(_grads(1))
    opt.eval()
    before = [p.copy() for p in ps]
    with pytest.raises(RuntimeError, match=r"^param_groups\[0\]: stepped in eval mode; call "
                                           r"train\(\)"):
        opt.step(_grads(2))
    for a, b in zip(ps, before):
        np.testing.assert_array_equal(a, b)
    opt.eval()  # (a second eval() is a no-op)
    for a, b in zip(ps, before):
        np.testing.assert_array_equal(a, b)
    opt.train()
    opt.step(_grads(2))


def test_eval_before_any_step_changes_nothing() -> None:
    ps = _params()
    before = [p.copy() for p in ps]
    opt = gdfast.ScheduleFreeAdamW(ps)
    opt.eval()  # (no z yet: x = y)
    for a, b in zip(ps, before):
        np.testing.assert_array_equal(a, b)
    assert opt.param_groups[0]["train_mode"] is False
