"""Drop-in replacements for torch.optim.SGD, Adam, AdamW and lion-pytorch's Lion.

    opt = gdfast.torch.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

Same constructor arguments and defaults, param groups, ``zero_grad``, ``step(closure)``,
LR schedulers, ``torch.amp.GradScaler`` (unscaling happens inside the fused pass) and the same
``state`` layout, so a state_dict moves between torch.optim and gdfast in both directions.
Each param group is stepped by one kernel call (per dtype and step count). CPU tensors only in
this build. ``import gdfast`` never imports torch; this module does.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from . import ops
from ._spec import raise_invalid

__all__ = ["SGD", "Adam", "AdamW", "Lion"]


def _as_array(t: torch.Tensor) -> np.ndarray:
    """A zero-copy NumPy view of a CPU tensor (complex as real pairs, as torch.optim does)."""
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.detach().numpy()


class _GdfastOptimizer(torch.optim.Optimizer):
    """Shared plumbing: option checks, hyperparameter validation, AMP scaling, batching."""

    _spec_name = ""
    # GradScaler then hands us grad_scale/found_inf instead of unscaling in a separate pass.
    _step_supports_amp_scaling = True

    def __init__(self, params: Iterable[Any], defaults: Dict[str, Any], *,
                 foreach: Optional[bool] = None, fused: Optional[bool] = None,
                 capturable: bool = False, differentiable: bool = False) -> None:
        if differentiable:
            raise ValueError("differentiable=True: gdfast's fused steps are not differentiable; "
                             "use torch.optim for higher-order optimization")
        if capturable:
            raise ValueError("capturable=True: gdfast has no CUDA kernels in this build; "
                             "capturable steps are for CUDA graphs")
        # foreach/fused only choose torch's implementation; gdfast's is always fused.
        defaults.update(foreach=foreach, fused=fused, capturable=False, differentiable=False)
        raise_invalid(self._spec_name, self._hyper_values(defaults))
        super().__init__(params, defaults)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        raise_invalid(self._spec_name, self._hyper_values(group))
        for i, p in enumerate(group["params"]):
            if p.device.type != "cpu":
                raise ValueError(f"params[{i}]: is on {p.device}, but this gdfast build has no "
                                 "CUDA kernels; CPU tensors only")
            dtype = torch.view_as_real(p).dtype if p.is_complex() else p.dtype
            if dtype not in (torch.float32, torch.float64):
                raise TypeError(f"params[{i}]: expected float32 or float64 (or complex64/128), "
                                f"got {p.dtype}")

    def _hyper_values(self, group: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        if found_inf is not None and float(found_inf) != 0.0:
            return loss  # an AMP step with inf/nan gradients: skipped, step counts unchanged
        grad_scale = getattr(self, "grad_scale", None)
        scale = 1.0 if grad_scale is None else float(grad_scale)
        for group in self.param_groups:  # all groups first: an invalid one changes nothing
            raise_invalid(self._spec_name, self._hyper_values(group))
        for group in self.param_groups:
            batches: Dict[Tuple[Any, ...], List[torch.Tensor]] = {}
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                batches.setdefault(self._batch_key(p), []).append(p)
            for params in batches.values():
                self._step_batch(group, params, scale)
        return loss

    def _batch_key(self, p: torch.Tensor) -> Tuple[Any, ...]:
        return (p.dtype,)

    def _step_batch(self, group: Dict[str, Any], params: List[torch.Tensor],
                    grad_scale: float) -> None:
        raise NotImplementedError

    def _states(self, params: List[torch.Tensor], name: str,
                created: List[Tuple[torch.Tensor, str, torch.Tensor]],
                make: Callable[..., torch.Tensor] = torch.zeros_like) -> List[np.ndarray]:
        """The named state of each param as arrays. Missing ones are made with ``make``
        (torch's layout) and recorded in ``created``; :meth:`_commit` stores them once the
        step has succeeded, so a rejected step leaves no half-made state behind."""
        out = []
        for p in params:
            tensor = self.state[p].get(name)
            if tensor is None:
                tensor = make(p, memory_format=torch.preserve_format)
                created.append((p, name, tensor))
            out.append(_as_array(tensor))
        return out

    def _commit(self, created: List[Tuple[torch.Tensor, str, torch.Tensor]]) -> None:
        for p, name, tensor in created:
            self.state[p][name] = tensor


class SGD(_GdfastOptimizer):
    """torch.optim.SGD."""

    _spec_name = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, maximize: bool = False, foreach: Optional[bool] = None,
                 differentiable: bool = False, fused: Optional[bool] = None) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize),
                         foreach=foreach, fused=fused, differentiable=differentiable)

    def _hyper_values(self, group: Dict[str, Any]) -> Dict[str, Any]:
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening == 0")
        return {k: group[k] for k in ("lr", "momentum", "dampening", "weight_decay")}

    def _batch_key(self, p: torch.Tensor) -> Tuple[Any, ...]:
        return (p.dtype, self.state[p].get("momentum_buffer") is None)

    def _step_batch(self, group, params, grad_scale):  # type: ignore[no-untyped-def]
        buffers = None
        first = False
        created: List[Tuple[torch.Tensor, str, torch.Tensor]] = []
        if group["momentum"] != 0:
            first = self.state[params[0]].get("momentum_buffer") is None
            # torch.optim.SGD starts the buffer as a copy of the gradient: step 1 writes it.
            buffers = self._states(params, "momentum_buffer", created, make=torch.empty_like)
        ops.sgd_([_as_array(p) for p in params], [_as_array(p.grad) for p in params], buffers,
                 step=1 if first else 2, lr=float(group["lr"]), momentum=group["momentum"],
                 dampening=group["dampening"], nesterov=group["nesterov"],
                 weight_decay=group["weight_decay"], maximize=group["maximize"],
                 grad_scale=grad_scale)
        self._commit(created)


class Adam(_GdfastOptimizer):
    """torch.optim.Adam (``decoupled_weight_decay=True`` makes it AdamW)."""

    _spec_name = "adam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *,
                 foreach: Optional[bool] = None, maximize: bool = False,
                 capturable: bool = False, differentiable: bool = False,
                 fused: Optional[bool] = None, decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                                      amsgrad=amsgrad, maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay),
                         foreach=foreach, fused=fused, capturable=capturable,
                         differentiable=differentiable)

    def _hyper_values(self, group: Dict[str, Any]) -> Dict[str, Any]:
        beta1, beta2 = group["betas"]
        return {"lr": float(group["lr"]), "beta1": float(beta1), "beta2": float(beta2),
                "eps": group["eps"], "weight_decay": group["weight_decay"]}

    def _batch_key(self, p: torch.Tensor) -> Tuple[Any, ...]:
        step = self.state[p].get("step")
        return (p.dtype, 0 if step is None else int(step))

    def _step_batch(self, group, params, grad_scale):  # type: ignore[no-untyped-def]
        created: List[Tuple[torch.Tensor, str, torch.Tensor]] = []
        steps = []
        for p in params:
            step = self.state[p].get("step")
            if step is None:
                # As torch.optim.Adam: a float32 scalar tensor, so state_dicts interchange.
                step = torch.tensor(0.0, dtype=torch.float32)
                created.append((p, "step", step))
            steps.append(step)
        exp_avg = self._states(params, "exp_avg", created)
        exp_avg_sq = self._states(params, "exp_avg_sq", created)
        amsgrad = bool(group["amsgrad"])
        max_sq = self._states(params, "max_exp_avg_sq", created) if amsgrad else None
        beta1, beta2 = group["betas"]
        ops.adam_([_as_array(p) for p in params], [_as_array(p.grad) for p in params],
                  exp_avg, exp_avg_sq, step=int(steps[0]) + 1, lr=float(group["lr"]),
                  beta1=float(beta1), beta2=float(beta2), eps=group["eps"],
                  weight_decay=group["weight_decay"],
                  decoupled_weight_decay=bool(group.get("decoupled_weight_decay", False)),
                  amsgrad=amsgrad, max_exp_avg_sq=max_sq, maximize=bool(group["maximize"]),
                  grad_scale=grad_scale)
        self._commit(created)
        torch._foreach_add_(steps, 1)


class AdamW(Adam):
    """torch.optim.AdamW: decoupled weight decay, default 1e-2."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False, foreach: Optional[bool] = None,
                 capturable: bool = False, differentiable: bool = False,
                 fused: Optional[bool] = None) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)


class Lion(_GdfastOptimizer):
    """Lion (Chen et al. 2023) with lion-pytorch's arguments and state (``exp_avg``)."""

    _spec_name = "lion"

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: Tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay,
                                      maximize=maximize))

    def _hyper_values(self, group: Dict[str, Any]) -> Dict[str, Any]:
        beta1, beta2 = group["betas"]
        return {"lr": float(group["lr"]), "beta1": float(beta1), "beta2": float(beta2),
                "weight_decay": group["weight_decay"]}

    def _step_batch(self, group, params, grad_scale):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        created: List[Tuple[torch.Tensor, str, torch.Tensor]] = []
        ops.lion_([_as_array(p) for p in params], [_as_array(p.grad) for p in params],
                  self._states(params, "exp_avg", created), lr=float(group["lr"]),
                  beta1=float(beta1), beta2=float(beta2), weight_decay=group["weight_decay"],
                  maximize=bool(group.get("maximize", False)), grad_scale=grad_scale)
        self._commit(created)
