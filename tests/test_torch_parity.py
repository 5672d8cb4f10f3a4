"""gdfast against torch.optim (foreach=False), lion-pytorch and pytorch_optimizer (Adan,
AdEMAMix, ScheduleFreeAdamW; foreach=False): the same 100-step trajectories, built from the very
same constructor keyword arguments on both sides.

Two gdfast front ends take those arguments: the NumPy optimizers (``gdfast.SGD`` ...) and
the torch.optim drop-ins (``gdfast.torch.SGD`` ...). The drop-ins of torch.optim's classes are
compared with torch for every input of torch's own optimizer database in
test_torch_optim_db.py; here the torch front end runs the others (not in that database). Each
run has several parameters (1-D, 2-D, empty) in one param group, and both the parameters and
the optimizer states (by their names: momentum_buffer, exp_avg, exp_avg_sq, ...) are
compared.

Tolerance: cases.Tolerance, evaluated along the float64 reference trajectory, doubled:
gdfast and torch each stay within it of the exact result, in a different operation order
(torch's CPU kernels may fuse a*b+c), so they stay within twice it of each other. Lion: where
the sign argument is within rounding of zero either side may take either sign; those rare
elements get 2*lr per such step (see cases.Tolerance).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
import pytest

import gdfast

import cases
from cases import Case, ReferenceRun, check_close

torch = pytest.importorskip("torch")

STEPS = cases.STEPS
COMPARE_AT = (1, 2, 10, STEPS)
# One param group: a long vector (all SIMD tails are test_rules' business), a matrix, an
# empty tensor and two short vectors.
SHAPES: List[Tuple[int, ...]] = [(4099,), (3, 5), (0,), (1,), (7,)]


@pytest.fixture(autouse=True, scope="module")
def torch_single_threaded() -> Iterator[None]:
    """torch's intra-op threads would only compete with gdfast's for the cores on these small
    tensors; results do not depend on it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@dataclass(frozen=True)
class Parity:
    """One comparison: a torch optimizer and the gdfast one of the same name, built with the
    same keyword arguments; ``negate_for_torch``: the torch side has no ``maximize`` and gets
    the negated gradients instead (lion-pytorch)."""

    name: str  # the optimizer class name on both sides
    case: Case
    kwargs: Mapping[str, Any]  # constructor keyword arguments, torch style
    hyper: Mapping[str, Any]  # the same as gdfast.ops / reference keyword arguments
    negate_for_torch: bool = False


def _parities() -> List[Any]:
    out = []
    for v in cases.SGD.variants:
        hyper = cases.SGD.hyper(v)
        out.append((f"SGD-{v.name}",
                    Parity("SGD", cases.SGD, cases.constructor_kwargs(cases.SGD, hyper), hyper)))
    for v in cases.ADAM.variants:
        hyper = cases.ADAM.hyper(v)
        kw = cases.constructor_kwargs(cases.ADAM, hyper)
        out.append((f"Adam-{v.name}", Parity("Adam", cases.ADAM, kw, hyper)))
        if hyper.get("decoupled_weight_decay"):
            kw_w = {k: x for k, x in kw.items() if k != "decoupled_weight_decay"}
            out.append((f"AdamW-{v.name}", Parity("AdamW", cases.ADAM, kw_w, hyper)))
    # AdamW's own default weight decay (1e-2), given on neither side
    hyper = {"lr": 0.01, "weight_decay": 1e-2, "decoupled_weight_decay": True}
    out.append(("AdamW-default_weight_decay", Parity("AdamW", cases.ADAM, {"lr": 0.01}, hyper)))
    for v in cases.LION.variants:
        hyper = cases.LION.hyper(v)
        kw = cases.constructor_kwargs(cases.LION, hyper)
        negate = bool(kw.pop("maximize", False))
        out.append((f"Lion-{v.name}",
                    Parity("Lion", cases.LION, kw, hyper, negate_for_torch=negate)))
    for case in (cases.ADAN, cases.ADEMAMIX, cases.SCHEDULEFREE_ADAMW):
        (name,) = case.classes
        for v in case.variants:
            hyper = case.hyper(v)
            kw = cases.constructor_kwargs(case, hyper)
            # pytorch_optimizer's Adan starts previous_grad from the gradient before maximize
            # negates it (a first difference of 2g, not 0): it gets the negated gradients
            negate = name == "Adan" and bool(kw.pop("maximize", False))
            out.append((f"{name}-{v.name}", Parity(name, case, kw, hyper, negate_for_torch=negate)))
    # (the torch front end: every variant of Lion; pytorch_optimizer's classes share its step
    # path with the NumPy one, so their default and all-options variants)
    return [pytest.param(parity, frontend, id=f"{name}-{frontend}") for name, parity in out
            for frontend in ("numpy", "gdfast.torch")
            if frontend == "numpy" or parity.name == "Lion" or (
                parity.name not in TORCH_OPTIM and name.endswith(("-default", "-all")))]


TORCH_OPTIM = ("SGD", "Adam", "AdamW")


PARITIES = _parities()


# -- the two sides ----------------------------------------------------------------------------
def torch_optimizer(p: Parity, params: List[Any]) -> Any:
    if p.name == "Lion":
        lion_pytorch = pytest.importorskip("lion_pytorch")
        return lion_pytorch.Lion(params, **p.kwargs)
    if p.name not in TORCH_OPTIM:
        pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
        return getattr(pytorch_optimizer, p.name)(params, foreach=False, **p.kwargs)
    return getattr(torch.optim, p.name)(params, foreach=False, **p.kwargs)


def gdfast_kwargs(p: Parity) -> Dict[str, Any]:
    """The torch side's keyword arguments (plus maximize where torch's side lacks it)."""
    kw = dict(p.kwargs)
    if p.negate_for_torch:
        kw["maximize"] = True
    return kw


def gdfast_torch_optimizer(p: Parity, params: List[Any]) -> Any:
    gt = pytest.importorskip("gdfast.torch")
    return getattr(gt, p.name)(params, **gdfast_kwargs(p))


class TorchRun:
    """Params as torch tensors, stepped by a torch.optim-style optimizer."""

    def __init__(self, make: Callable[[List[Any]], Any], arrays: Sequence[np.ndarray],
                 negate: bool = False) -> None:
        self.params = [torch.from_numpy(a.copy()).requires_grad_() for a in arrays]
        self.opt = make(self.params)
        self.negate = negate

    def step(self, grads: Sequence[np.ndarray]) -> None:
        for p, g in zip(self.params, grads):
            p.grad = torch.from_numpy(-g if self.negate else g.copy())
        self.opt.step()

    def param(self, i: int) -> np.ndarray:
        return self.params[i].detach().numpy().copy()

    def state(self, i: int, name: str) -> Any:
        value = self.opt.state[self.params[i]][name]
        return float(value) if name == "step" else value.numpy().copy()


class NumpyRun:
    """Params as arrays, stepped by gdfast's NumPy optimizer of the same name."""

    def __init__(self, p: Parity, arrays: Sequence[np.ndarray]) -> None:
        self.params = [a.copy() for a in arrays]
        self.opt = getattr(gdfast, p.name)(self.params, **gdfast_kwargs(p))

    def step(self, grads: Sequence[np.ndarray]) -> None:
        self.opt.step(list(grads))

    def param(self, i: int) -> np.ndarray:
        return self.params[i].copy()

    def state(self, i: int, name: str) -> Any:
        value = self.opt.state[i][name]
        return float(value) if name == "step" else value.copy()


def gdfast_run(frontend: str, p: Parity, arrays: Sequence[np.ndarray]) -> Any:
    if frontend == "numpy":
        return NumpyRun(p, arrays)
    return TorchRun(lambda params: gdfast_torch_optimizer(p, params), arrays)


# -- the test ---------------------------------------------------------------------------------
@pytest.mark.parametrize("parity, frontend", PARITIES)
def test_trajectory_matches_torch(parity: Parity, dtype: Any, frontend: str) -> None:
    case, hyper, shapes = parity.case, parity.hyper, SHAPES
    sizes = [int(np.prod(s)) for s in shapes]
    arrays = [cases.initial_param(n, dtype, seed=k).reshape(s)
              for k, (n, s) in enumerate(zip(sizes, shapes))]
    theirs = TorchRun(lambda params: torch_optimizer(parity, params), arrays,
                      negate=parity.negate_for_torch)
    ours = gdfast_run(frontend, parity, arrays)
    u = float(np.finfo(dtype).eps)
    refs = [ReferenceRun(case, hyper, a.ravel(), u) for a in arrays]
    for t in range(1, STEPS + 1):
        grads = [cases.gradient(n, dtype, t, seed=k).reshape(s)
                 for k, (n, s) in enumerate(zip(sizes, shapes))]
        theirs.step(grads)
        ours.step(grads)
        for ref, g in zip(refs, grads):
            ref.step(g.ravel())
        if t not in COMPARE_AT:
            continue
        for i, ref in enumerate(refs):
            if sizes[i] == 0:
                assert ours.param(i).shape == shapes[i]
                continue
            check_close(f"param {i} after step {t}", ours.param(i).ravel(),
                        theirs.param(i).ravel(), ref.param_bound(factor=2.0))
            for name in ref.state_env:
                check_close(f"{name} of param {i} after step {t}", ours.state(i, name).ravel(),
                            theirs.state(i, name).ravel(), ref.state_bound(name, factor=2.0))
            if case.name == "adam":
                assert ours.state(i, "step") == theirs.state(i, "step") == t
