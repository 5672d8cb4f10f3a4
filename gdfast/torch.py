"""Drop-in replacements for torch.optim.SGD, Adam, AdamW and lion-pytorch's Lion.

    opt = gdfast.torch.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

Same constructor arguments and defaults, param groups, ``zero_grad``, ``step(closure)``,
LR schedulers, ``torch.amp.GradScaler`` (unscaling happens inside the fused pass) and the same
``state`` layout, so a state_dict moves between torch.optim and gdfast in both directions.
Each param group is stepped by one kernel call (per dtype and step count). CUDA params need a
build with gdfast's CUDA kernels (then ``capturable=True`` keeps step counts, lr and the AMP
scalars on the device). ``import gdfast`` never imports torch; this module does.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np
import torch

from . import cuda, ops
from ._spec import raise_invalid

__all__ = ["SGD", "Adam", "AdamW", "Lion"]


def _host_number(x: Any) -> Any:
    """A hyperparameter as the range check sees it. A CUDA tensor (a capturable lr) is not
    read back: that would synchronise, and break CUDA-graph capture; the kernel reads it."""
    if torch.is_tensor(x):
        return 0.0 if x.device.type == "cuda" else float(x)
    return x


# NumPy views of params and states, reused across steps: making one costs microseconds per
# tensor, checking one is still right (same tensor, memory and shape) a fraction of that.
# Keyed by id() (tensors compare elementwise); a weak reference drops the entry with the tensor.
_views: Dict[int, Tuple["weakref.ref[torch.Tensor]", int, torch.Size, np.ndarray]] = {}


def _as_array(t: torch.Tensor, cache: bool = True) -> Any:
    """What the kernels get: a zero-copy NumPy view of a CPU tensor (the fastest path in), the
    detached tensor itself on CUDA (through DLPack); complex as real pairs, as torch does."""
    if t.device.type != "cpu":
        return (torch.view_as_real(t) if t.is_complex() else t).detach()
    key = id(t)
    if cache:
        hit = _views.get(key)
        if hit is not None and hit[0]() is t and hit[1] == t.data_ptr() and hit[2] == t.shape:
            return hit[3]
    view = (torch.view_as_real(t) if t.is_complex() else t).detach().numpy()
    if cache:
        ref = weakref.ref(t, lambda _, key=key: _views.pop(key, None))
        _views[key] = (ref, t.data_ptr(), t.shape, view)
    return view


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
        if capturable and not cuda.is_available():
            raise ValueError("capturable=True: needs gdfast's CUDA kernels and a GPU (capturable "
                             "steps are for CUDA graphs); this build or machine has none")
        # foreach/fused only choose torch's implementation; gdfast's is always fused.
        defaults.update(foreach=foreach, fused=fused, capturable=capturable,
                        differentiable=False)
        raise_invalid(self._spec_name, self._hyper_values(defaults))
        super().__init__(params, defaults)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        # Everything is checked before torch.optim adds the group: a rejected one adds nothing.
        params = param_group["params"]
        params = [params] if torch.is_tensor(params) else list(params)  # may be a generator
        param_group = {**param_group, "params": params}
        for i, p in enumerate(params):
            if p.device.type == "cuda" and not cuda.is_available():
                raise ValueError(f"params[{i}]: is on {p.device}, but gdfast's CUDA kernels are "
                                 "not available (CPU-only build, or no GPU)")
            if p.device.type not in ("cpu", "cuda"):
                raise ValueError(f"params[{i}]: is on {p.device}; gdfast steps CPU and CUDA "
                                 "tensors")
            dtype = torch.view_as_real(p).dtype if p.is_complex() else p.dtype
            if dtype not in (torch.float32, torch.float64):
                raise TypeError(f"params[{i}]: expected float32 or float64 (or complex64/128), "
                                f"got {p.dtype}")
        raise_invalid(self._spec_name, self._hyper_values({**self.defaults, **param_group}))
        super().add_param_group(param_group)

    def _hyper_values(self, group: Dict[str, Any]) -> Dict[str, Any]:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        found_inf = getattr(self, "found_inf", None)
        grad_scale = getattr(self, "grad_scale", None)
        if found_inf is None or found_inf.device.type == "cpu":
            if found_inf is not None and float(found_inf) != 0.0:
                return loss  # an AMP step with inf/nan gradients: skipped, counts unchanged
            amp = {"grad_scale": 1.0 if grad_scale is None else float(grad_scale)}
        else:  # CUDA: the kernels read the scale and the inf flag on the device (no sync)
            amp = {"grad_scale": 1.0 if grad_scale is None else grad_scale, "found_inf": found_inf}
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
                self._step_batch(group, params, amp)
        return loss

    def _batch_key(self, p: torch.Tensor) -> Tuple[Any, ...]:
        return (p.dtype,)

    def _step_batch(self, group: Dict[str, Any], params: List[torch.Tensor],
                    amp: Dict[str, Any]) -> None:
        """One kernel call for params; ``amp`` holds grad_scale (and on CUDA found_inf)."""
        raise NotImplementedError

    def _states(self, params: List[torch.Tensor], name: str,
                created: List[Tuple[torch.Tensor, str, torch.Tensor]],
                make: Callable[..., torch.Tensor] = torch.zeros_like) -> List[np.ndarray]:
        """The named state of each param as arrays. Missing ones are made with ``make``
        (torch's layout) and recorded in ``created``; :meth:`_commit` stores them once the
        step has succeeded, so a rejected step leaves no half-made state behind."""
        out = []
        for p in params:
            tensor = self.state.get(p, {}).get(name)
            if tensor is None:
                tensor = make(p, memory_format=torch.preserve_format)
                created.append((p, name, tensor))
            out.append(_as_array(tensor))
        return out

    def _commit(self, params: List[torch.Tensor],
                created: List[Tuple[torch.Tensor, str, torch.Tensor]]) -> None:
        """After a successful kernel call: store new state, and bump the version counters of
        what was written in place, as torch.optim's in-place ops do (autograd then catches a
        param modified between forward and backward)."""
        for p, name, tensor in created:
            self.state[p][name] = tensor
        written = list(params) + [t for p in params for t in self.state.get(p, {}).values()
                                  if torch.is_tensor(t) and t.dim() > 0]
        torch.autograd.graph.increment_version(written)


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
        values = {k: group[k] for k in ("lr", "momentum", "dampening", "weight_decay")}
        values["lr"] = _host_number(values["lr"])  # torch allows a tensor lr
        return values

    def _batch_key(self, p: torch.Tensor) -> Tuple[Any, ...]:
        return (p.dtype, self.state.get(p, {}).get("momentum_buffer") is None)

    def _step_batch(self, group, params, amp):  # type: ignore[no-untyped-def]
        buffers = None
        first = False
        created: List[Tuple[torch.Tensor, str, torch.Tensor]] = []
        if group["momentum"] != 0:
            first = self.state.get(params[0], {}).get("momentum_buffer") is None
            # torch.optim.SGD starts the buffer as a copy of the gradient: step 1 writes it.
            buffers = self._states(params, "momentum_buffer", created, make=torch.empty_like)
        ops.sgd_([_as_array(p) for p in params],
                 [_as_array(p.grad, cache=False) for p in params], buffers,
                 step=1 if first else 2, lr=float(group["lr"]), momentum=group["momentum"],
                 dampening=group["dampening"], nesterov=group["nesterov"],
                 weight_decay=group["weight_decay"], maximize=group["maximize"],
                 **amp)
        self._commit(params, created)


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
        return {"lr": _host_number(group["lr"]), "beta1": float(beta1), "beta2": float(beta2),
                "eps": group["eps"], "weight_decay": group["weight_decay"]}

    def _batch_key(self, p: torch.Tensor) -> Tuple[Any, ...]:
        step = self.state.get(p, {}).get("step")
        if step is None or self.defaults["capturable"]:
            return (p.dtype,)  # capturable: counts stay on the device, stepped together
        return (p.dtype, int(step))

    def _step_batch(self, group, params, amp):  # type: ignore[no-untyped-def]
        created: List[Tuple[torch.Tensor, str, torch.Tensor]] = []
        steps = []
        for p in params:
            step = self.state.get(p, {}).get("step")
            if step is None:
                # As torch.optim.Adam: a float32 scalar tensor (on the param's device when
                # capturable), so state_dicts interchange.
                device = p.device if group["capturable"] else "cpu"
                step = torch.tensor(0.0, dtype=torch.float32, device=device)
                created.append((p, "step", step))
            steps.append(step)
        exp_avg = self._states(params, "exp_avg", created)
        exp_avg_sq = self._states(params, "exp_avg_sq", created)
        amsgrad = bool(group["amsgrad"])
        max_sq = self._states(params, "max_exp_avg_sq", created) if amsgrad else None
        beta1, beta2 = group["betas"]
        capturable = bool(group["capturable"])
        if capturable:  # the kernel reads the count after this update from the device
            torch._foreach_add_(steps, 1)
        lr = group["lr"]
        ops.adam_([_as_array(p) for p in params], [_as_array(p.grad, cache=False) for p in params],
                  exp_avg, exp_avg_sq, step=steps[0] if capturable else int(steps[0]) + 1,
                  lr=lr if capturable and torch.is_tensor(lr) else float(lr),
                  beta1=float(beta1), beta2=float(beta2), eps=group["eps"],
                  weight_decay=group["weight_decay"],
                  decoupled_weight_decay=bool(group.get("decoupled_weight_decay", False)),
                  amsgrad=amsgrad, max_exp_avg_sq=max_sq, maximize=bool(group["maximize"]),
                  **amp)
        self._commit(params, created)
        if not capturable:
            torch._foreach_add_(steps, 1)
        elif "found_inf" in amp:
            torch._foreach_sub_(steps, [amp["found_inf"]] * len(steps))  # skipped: not counted


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
        return {"lr": _host_number(group["lr"]), "beta1": float(beta1), "beta2": float(beta2),
                "weight_decay": group["weight_decay"]}

    def _step_batch(self, group, params, amp):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        created: List[Tuple[torch.Tensor, str, torch.Tensor]] = []
        ops.lion_([_as_array(p) for p in params], [_as_array(p.grad, cache=False) for p in params],
                  self._states(params, "exp_avg", created), lr=float(group["lr"]),
                  beta1=float(beta1), beta2=float(beta2), weight_decay=group["weight_decay"],
                  maximize=bool(group.get("maximize", False)), **amp)
        self._commit(params, created)
