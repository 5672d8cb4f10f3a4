"""SophiaH's step around its rule (test_rules and the other generic tests cover the rule): the
Hessian estimate given to step(hessian=...) or made by Hutchinson's method every update_period
steps (torch front end), against pytorch_optimizer.SophiaH; the NumPy front end; bad input."""

from __future__ import annotations

from typing import Any, List

import numpy as np
import pytest

import gdfast

torch = pytest.importorskip("torch")
pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
import gdfast.torch as gt  # noqa: E402  (needs torch)

# Hutchinson's estimate needs backward(create_graph=True), which torch warns about (a reference
# cycle between a param and its grad); zero_grad(set_to_none=True) breaks it every step here.
pytestmark = pytest.mark.filterwarnings(
    r"ignore:Using backward\(\) with create_graph=True:UserWarning")


def _model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.Tanh(), torch.nn.Linear(5, 1)
                               ).double()


def _data(step: int) -> Any:
    g = torch.Generator().manual_seed(100 + step)
    return torch.randn(16, 6, generator=g, dtype=torch.float64), \
        torch.randn(16, 1, generator=g, dtype=torch.float64)


def _run(cls: Any, steps: int, given: bool, **kw: Any) -> Any:
    """A small tanh network trained with create_graph=True backward passes; the probes drawn
    after seeding torch with the step, so both implementations draw the same ones."""
    model = _model()
    opt = cls(model.parameters(), **kw)
    for t in range(1, steps + 1):
        x, y = _data(t)
        opt.zero_grad()
        loss = ((model(x) - y) ** 2).mean()
        loss.backward(create_graph=True)
        torch.manual_seed(t)
        if given:
            opt.step(hessian=[p.grad.detach() ** 2 + 0.1 for p in model.parameters()])
        else:
            opt.step()
    return model, opt


@pytest.mark.parametrize("given", [False, True], ids=["hutchinson", "given"])
@pytest.mark.parametrize("kw", [
    dict(lr=0.05, update_period=2, num_samples=2),
    dict(lr=0.05, update_period=1, hessian_distribution="rademacher", weight_decay=0.1,
         weight_decouple=False, p=0.5),
    dict(lr=0.02, update_period=3, weight_decay=0.01, fixed_decay=True, maximize=True),
], ids=["samples", "rademacher-coupled", "fixed-maximize"])
def test_matches_pytorch_optimizer(kw: Any, given: bool) -> None:
    """float64: params and every state within 1e-12 after 7 steps (Hutchinson's estimate is
    the same computation on both sides; the kernel differs from torch's ops in rounding)."""
    ours, opt = _run(gt.SophiaH, 7, given, **kw)
    theirs, ref = _run(pytorch_optimizer.SophiaH, 7, given, foreach=False, **kw)
    for p, q in zip(ours.parameters(), theirs.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-12, atol=1e-14)
        mine = opt.state[p]
        # (a given estimate is not kept; pytorch_optimizer keeps it as state['hessian'])
        assert set(mine) | ({"hessian"} if given else set()) == set(ref.state[q]) | {"step"}
        for name in ("momentum", "hessian_moment", *(() if given else ("hessian",))):
            torch.testing.assert_close(mine[name], ref.state[q][name], rtol=1e-12, atol=1e-14)
    assert opt.param_groups[0]["step"] == 7


def test_numpy_front_end_refreshes_only_with_an_estimate() -> None:
    rng = np.random.default_rng(0)
    p = rng.standard_normal(40).astype(np.float32)
    q = p.copy()
    m, h = np.zeros_like(p), np.zeros_like(p)
    opt = gdfast.SophiaH([p], lr=0.01, p=1.0)
    for t in range(1, 5):
        g = rng.standard_normal(40).astype(np.float32)
        est = np.abs(g) + np.float32(0.5)
        given = t % 2 == 1
        opt.step([g], hessian=[est] if given else None)
        gdfast.ops.sophia_(q, g, est, m, h, step=t, lr=0.01, p=1.0, update_hessian=given)
        np.testing.assert_array_equal(p, q)
        np.testing.assert_array_equal(opt.state[0]["hessian_moment"], h)
    assert opt.param_groups[0]["step"] == 4


def test_without_a_graph_the_estimate_is_refused_and_nothing_changes() -> None:
    model = _model()
    opt = gt.SophiaH(model.parameters())
    x, y = _data(1)
    ((model(x) - y) ** 2).mean().backward()  # no create_graph
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(RuntimeError, match=r"^SophiaH: the Hessian estimate differentiates the "
                                           r"gradients: call loss.backward\(create_graph=True\)"):
        opt.step()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p.detach(), b)
    assert opt.state == {} or all("momentum" not in s for s in opt.state.values())
    assert opt.param_groups[0].get("step", 0) == 0
    opt.step(hessian=[torch.ones_like(p) for p in model.parameters()])  # given: no graph needed


@pytest.mark.parametrize("hessian, error, match", [
    (lambda ps: [torch.ones_like(p) for p in ps][:-1], ValueError,
     r"^hessian: expected 4 tensors \(one per param with a gradient\), got 3$"),
    (lambda ps: [torch.ones(3, dtype=torch.float64)] * 4, ValueError,
     r"^hessian\[0\]: expected torch.float64 of shape \(5, 6\) on cpu like its param"),
    (lambda ps: [torch.ones_like(p).float() for p in ps], ValueError, r"^hessian\[0\]: expected "),
    (lambda ps: 5, TypeError, r"^hessian: expected a list of tensors"),
    (lambda ps: [np.ones(1)] * 4, TypeError, r"^hessian\[0\]: expected a tensor, got ndarray"),
])
def test_bad_estimates_are_named_and_change_nothing(hessian: Any, error: Any, match: str) -> None:
    model = _model()
    opt = gt.SophiaH(model.parameters())
    x, y = _data(1)
    ((model(x) - y) ** 2).mean().backward()
    params: List[Any] = list(model.parameters())
    before = [p.detach().clone() for p in params]
    with pytest.raises(error, match=match):
        opt.step(hessian=hessian(params))
    for p, b in zip(params, before):
        assert torch.equal(p.detach(), b)
    assert opt.param_groups[0].get("step", 0) == 0


@pytest.mark.parametrize("kw, match", [
    (dict(update_period=0), r"^update_period: expected an int >= 1 or None, got 0$"),
    (dict(num_samples=1.5), r"^num_samples: expected an int >= 1, got 1.5$"),
    (dict(hessian_distribution="uniform"), r"^hessian_distribution: expected one of "),
])
def test_bad_options_are_named(kw: Any, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        gdfast.SophiaH([np.zeros(3, np.float32)], **kw)
