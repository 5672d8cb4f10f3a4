"""``gdfast.torch.Muon``: torch.optim.Muon's constructor, checks, state (``momentum_buffer``)
and numerics (the Newton-Schulz iteration in bfloat16 through torch's matrix product, as
torch.optim.Muon runs it), with the elementwise work before and after the iteration fused
into one pass each (gdfast/_muon.py). Imports torch."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import torch

from . import _muon


def new_input(param: torch.Tensor) -> torch.Tensor:
    """The iteration's input, written by phase 1: bfloat16 (torch.optim.Muon rounds it so) for
    a float32 or bfloat16 param; a float64 one's is rounded by the iteration."""
    dtype = torch.float64 if param.dtype == torch.float64 else torch.bfloat16
    return torch.empty(param.shape, dtype=dtype, device=param.device)


def newton_schulz_bfloat16(x: torch.Tensor, group: Dict[str, Any]) -> torch.Tensor:
    """The iteration on a bfloat16 matrix, in torch.optim.Muon's operations and order (so that
    the same input gives the same bits); returns its output, in x's dtype."""
    a, b, c = group["ns_coefficients"]
    given = x.dtype
    x = x.bfloat16()  # (x itself when it is bfloat16)
    tall = x.size(0) > x.size(1)
    if tall:
        x = x.T
    x.div_(x.norm().clamp(min=group["eps"]))
    for _ in range(group["ns_steps"]):
        gram = x @ x.T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)
        x = torch.addmm(x, poly, x, beta=a)
    x = x.T.contiguous() if tall else x  # (phase 2 reads contiguous arrays)
    return x.to(given)


def _host(value: Any) -> Any:
    """A 1-element tensor option (torch.optim.Muon accepts a tensor lr) as a number."""
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon (2-D params only, as there), each step's elementwise work in two fused
    passes per param and its Newton-Schulz iteration in bfloat16 on torch's matrix product.
    A param group with ``use_muon=False`` is stepped with AdamW instead, as
    pytorch_optimizer.Muon steps it (any shape; options lr, betas, eps, weight_decay, their
    defaults the adamw_* arguments; state exp_avg, exp_avg_sq and the group's step), in one
    fused pass over the group. CPU tensors, float32, float64 or bfloat16, contiguous.
    ``max_grad_norm``, ``clip_per_group``, ``max_grad_value`` and ``monitor`` are param-group
    options as in every gdfast class (the clip factor folded into phase 1, which also clamps;
    the norms kept as ``last_grad_norm`` and ``last_norms``)."""

    last_grad_norm: Optional[float] = None
    last_norms: Optional[Dict[str, float]] = None

    def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
        defaults, self.adamw_defaults = _muon.options(*args, **kwargs)
        if isinstance(defaults["lr"], torch.Tensor) and defaults["lr"].numel() != 1:
            raise ValueError("lr: a tensor lr must have 1 element")
        _muon.check_group({k: _host(v) for k, v in defaults.items()})
        super().__init__(params, defaults)

    __init__.__signature__ = _muon.INIT_SIGNATURE  # type: ignore[attr-defined]

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        if isinstance(param_group, dict) and not _muon.is_muon(param_group):
            param_group = _muon.adamw_group(param_group, self.adamw_defaults)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        where = f"param_groups[{len(self.param_groups) - 1}]"
        try:
            options = {k: _host(v) for k, v in group.items()}
            _muon.check_step_options(options, where + ".")
            if not _muon.is_muon(group):
                _muon.check_adamw_group(options, where + ".")
                return
            _muon.check_group(options, where + ".")
            for i, p in enumerate(group["params"]):
                _muon.check_matrix(p.shape, f"{where}.params[{i}]")
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _work(self) -> List[_muon.GroupStep]:
        """Per group: the params with a gradient (detached: the same memory), their gradients
        and states (new ones not yet kept), all checked."""
        work = []
        for gi, group in enumerate(self.param_groups):
            names = _muon.state_names(group)
            params: List[Any] = []
            grads: List[Any] = []
            states: List[List[Any]] = [[] for _ in names]
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                where = f"param_groups[{gi}].params[{i}]"
                if p.is_complex() or p.grad.is_sparse or p.device.type != "cpu":
                    raise ValueError(f"{where}: Muon steps dense real CPU tensors here, got "
                                     f"{p.dtype} {p.grad.layout} on {p.device}")
                state = self.state.get(p, {})  # (a rejected step adds no entry)
                for name, arrays in zip(names, states):
                    value = state.get(name)
                    arrays.append(torch.zeros_like(p, memory_format=torch.preserve_format)
                                  if value is None else value)
                params.append(p.detach())
                grads.append(p.grad)
            options = {k: _host(v) for k, v in group.items() if k != "params"}
            work.append(_muon.GroupStep.checked(group, options, params, grads, states))
        return work

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        work = self._work()  # (all checked before any param or state changes)
        for w in work:
            stepped = (p for p in w.group["params"] if p.grad is not None)
            for k, p in enumerate(stepped):
                self.state[p].update((name, arrays[k])
                                     for name, arrays in zip(_muon.state_names(w.group),
                                                             w.states))
        self.last_grad_norm, self.last_norms = _muon.run_groups(work, new_input,
                                                                newton_schulz_bfloat16)
        return loss
