"""gdfast.torch.step_in_backward (issue 14): each param stepped inside backward as its gradient
is accumulated, the gradient freed at once. Every check compares against the same optimizer
stepped after backward, bitwise: the kernels step each element the same way whether a param
is stepped alone or in a list."""

from __future__ import annotations

from typing import Any, Callable, List, Tuple

import pytest

torch = pytest.importorskip("torch")
import gdfast.torch as gt  # noqa: E402
from gdfast.schedules import Cosine  # noqa: E402


def _model() -> Any:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.ReLU(), torch.nn.Linear(64, 4),
                               torch.nn.LayerNorm(4))


def _batches(n: int) -> List[Tuple[Any, Any]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(16, 32, generator=gen), torch.randint(0, 4, (16,), generator=gen))
            for _ in range(n)]


def _loss(model: Any, batch: Tuple[Any, Any]) -> Any:
    return torch.nn.functional.cross_entropy(model(batch[0]), batch[1])


def _assert_same(a: Any, oa: Any, b: Any, ob: Any) -> None:
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)
        assert oa.state[p].keys() == ob.state[q].keys()
        for name, value in oa.state[p].items():
            assert torch.equal(value, ob.state[q][name]), name


@pytest.mark.parametrize("make", [
    lambda ps: gt.AdamW(ps, lr=1e-2),
    lambda ps: gt.SGD(ps, lr=1e-2, momentum=0.9, nesterov=True),
    lambda ps: gt.Lion8bit(ps, lr=1e-3, min_8bit_size=100),
    lambda ps: gt.AdamW(ps, lr=Cosine(1e-2, total_steps=5, warmup_steps=2)),
], ids=["AdamW", "SGD", "Lion8bit", "AdamW-schedule"])
def test_equals_stepping_after_backward(make: Callable[[Any], Any]) -> None:
    """Three steps with a torch LR scheduler, or with a gdfast schedule (whose count advances
    once per backward pass, not once per param): the same params and states, bitwise; no
    gradient is left after backward."""
    a, b = _model(), _model()
    oa, ob = make(a.parameters()), make(b.parameters())
    scheduled = isinstance(oa.param_groups[0]["lr"], Cosine)
    schedulers = [] if scheduled else [torch.optim.lr_scheduler.StepLR(o, 1, gamma=0.5)
                                       for o in (oa, ob)]
    handle = gt.step_in_backward(ob)
    for batch in _batches(3):
        oa.zero_grad()
        _loss(a, batch).backward()
        oa.step()
        _loss(b, batch).backward()
        assert all(p.grad is None for p in b.parameters())
        for scheduler in schedulers:
            scheduler.step()
    _assert_same(a, oa, b, ob)
    assert oa.param_groups[0].get("lr_step") == ob.param_groups[0].get("lr_step")
    handle.remove()


def test_stochastic_rounding_counts_once_per_backward() -> None:
    """bfloat16 params with stochastic rounding (Lion keys it by the optimizer's count of
    rounded steps): bitwise the step after backward, so the count moved once per pass."""
    a, b = _model().to(torch.bfloat16), _model().to(torch.bfloat16)
    oa, ob = (gt.Lion(m.parameters(), lr=1e-3, stochastic_rounding=True, seed=3) for m in (a, b))
    gt.step_in_backward(ob)
    for x, y in _batches(3):
        oa.zero_grad()
        _loss(a, (x.to(torch.bfloat16), y)).backward()
        oa.step()
        _loss(b, (x.to(torch.bfloat16), y)).backward()
    _assert_same(a, oa, b, ob)
    assert ob.param_groups[0]["rounding_step"] == 3


def test_gradient_accumulation() -> None:
    """Micro-batches inside ``accumulate()`` keep their gradients; the last backward steps
    with the sum: the same as accumulating, then stepping."""
    a, b = _model(), _model()
    oa, ob = gt.Adam(a.parameters(), lr=1e-2), gt.Adam(b.parameters(), lr=1e-2)
    handle = gt.step_in_backward(ob)
    batches = _batches(6)
    for step in range(2):
        micro = batches[3 * step:3 * step + 3]
        oa.zero_grad()
        for batch in micro:
            _loss(a, batch).backward()
        oa.step()
        with handle.accumulate():
            for batch in micro[:-1]:
                _loss(b, batch).backward()
        assert all(p.grad is not None for p in b.parameters())
        _loss(b, micro[-1]).backward()
        assert all(p.grad is None for p in b.parameters())
    _assert_same(a, oa, b, ob)


def test_remove_and_state_dict() -> None:
    """After remove(), backward keeps the gradients for an ordinary step; the state_dict of a
    run stepped in backward resumes an ordinary run bitwise."""
    a, b = _model(), _model()
    oa, ob = gt.AdamW(a.parameters(), lr=1e-2), gt.AdamW(b.parameters(), lr=1e-2)
    handle = gt.step_in_backward(ob)
    batches = _batches(4)
    for batch in batches[:2]:
        oa.zero_grad()
        _loss(a, batch).backward()
        oa.step()
        _loss(b, batch).backward()
    handle.remove()
    resumed = gt.AdamW(b.parameters(), lr=1e-2)
    resumed.load_state_dict(ob.state_dict())
    for batch in batches[2:]:
        for model, opt in ((a, oa), (b, resumed)):
            opt.zero_grad()
            _loss(model, batch).backward()
            assert all(p.grad is not None for p in model.parameters())
            opt.step()
    _assert_same(a, oa, b, resumed)


def test_what_needs_every_gradient_first_is_refused() -> None:
    model = _model()
    with pytest.raises(ValueError, match=r"param_groups\[0\]: max_grad_norm: clipping by the "
                                         r"global norm needs every gradient"):
        gt.step_in_backward(gt.AdamW(model.parameters(), max_grad_norm=1.0))
    with pytest.raises(TypeError, match=r"optimizer: expected a gdfast.torch optimizer, got "
                                        r"AdamW"):
        gt.step_in_backward(torch.optim.AdamW(model.parameters()))
