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

from typing import Any, Callable, Dict, Iterable, List, Optional, Tuple

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


def _as_array(t: torch.Tensor) -> Any:
    """What the kernels get: a zero-copy NumPy view of a CPU tensor (the fastest path in), the
    detached tensor itself on CUDA (through DLPack); complex as real pairs, as torch does."""
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.detach().numpy() if t.device.type == "cpu" else t.detach()


class _Batch:
    """One kernel call's tensors (params of one dtype and step count, their states and step
    counts) and the arrays handed to the kernel, kept across steps: making the arrays costs
    microseconds per tensor, checking that nothing was replaced a fraction of that."""

    __slots__ = ("names", "params", "ptrs", "shapes", "states", "steps", "param_arrays",
                 "state_arrays", "step_arrays", "written", "fast_grads", "first")

    def __init__(self, names: Tuple[str, ...], params: List[torch.Tensor],
                 states: List[List[torch.Tensor]], steps: List[torch.Tensor]) -> None:
        self.names = names
        self.params = params
        self.ptrs = [p.data_ptr() for p in params]
        self.shapes = [p.shape for p in params]
        self.states = states  # per param, in the order the kernel takes them
        self.steps = steps  # per param (Adam), else empty
        self.param_arrays = [_as_array(p) for p in params]
        self.state_arrays = [[_as_array(row[k]) for row in states]
                             for k in range(len(states[0]) if states else 0)]
        # Step counts on the host are read and written through NumPy (no torch dispatch).
        self.step_arrays = [_as_array(t) for t in steps if t.device.type == "cpu"]
        # Written in place by a step: their version counters are bumped, as torch.optim's
        # in-place ops do (autograd then catches a param modified between forward and backward).
        self.written = params + [t for row in states for t in row] + steps
        self.fast_grads = all(p.device.type == "cpu" and not p.is_complex() for p in params)
        self.first = False  # state (or step counts) made for this call, not stored yet

    def grad_arrays(self) -> List[Any]:
        """The params' current grads (every param of a batch has one)."""
        if self.fast_grads:
            try:
                return [p.grad.numpy() for p in self.params]  # type: ignore[union-attr]
            except (RuntimeError, TypeError):  # requires grad (create_graph=True), or on
                pass  # another device: the checks below name the problem
        return [_as_array(p.grad) for p in self.params]  # type: ignore[arg-type]

    def unchanged(self, optimizer: "_GdfastOptimizer", names: Tuple[str, ...]) -> bool:
        """Same param memory, same state and step tensors as when the arrays were made."""
        if names != self.names:  # e.g. amsgrad switched on
            return False
        state = optimizer.state
        for i, (p, ptr, shape) in enumerate(zip(self.params, self.ptrs, self.shapes)):
            if p.data_ptr() != ptr or p.shape != shape:  # p.data replaced or reshaped
                return False
            if not names and not self.steps:
                continue  # stateless (SGD without momentum)
            st = state.get(p)
            if st is None:
                return False
            for name, t in zip(names, self.states[i]):
                if st.get(name) is not t:
                    return False
            if self.steps and st.get("step") is not self.steps[i]:
                return False
        # One count per batch: none was changed in place (float(): ~8x faster than ==).
        return len(set(map(float, self.step_arrays))) <= 1


class _GdfastOptimizer(torch.optim.Optimizer):
    """Shared plumbing: option checks, hyperparameter validation, AMP scaling, batching."""

    _spec_name = ""
    _counts_steps = False  # keeps torch's per-param "step" tensor (Adam)
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
        # Per param group: (group, its params with grads, their batches), from the last step.
        self._batches: Dict[int, Tuple[Dict[str, Any], List[torch.Tensor], List[_Batch]]] = {}
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
    def step(  # type: ignore[override]  # torch.optim's runtime signature, not its overloads
        self, closure: Optional[Callable[[], float]] = None
    ) -> Optional[float]:
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
            params = []
            for p in group["params"]:
                grad = p.grad
                if grad is None:
                    continue
                if grad.is_sparse:
                    raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
                params.append(p)
            for batch in self._group_batches(group, params):
                self._step_batch(group, batch, amp)
        return loss

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        self._batches.clear()  # new state tensors (and param groups)
        super().load_state_dict(state_dict)

    def __setstate__(self, state: Dict[str, Any]) -> None:  # unpickling, copy.deepcopy
        super().__setstate__(state)
        self._batches = {}

    def _state_names(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        """The state tensors the kernel takes for this group, in its order."""
        raise NotImplementedError

    def _make_state(self, p: torch.Tensor, name: str) -> torch.Tensor:
        return torch.zeros_like(p, memory_format=torch.preserve_format)

    def _batch_key(self, p: torch.Tensor) -> Tuple[Any, ...]:
        return (p.dtype,)

    def _group_batches(self, group: Dict[str, Any],
                       params: List[torch.Tensor]) -> List[_Batch]:
        """The last step's batches if params and their tensors are the same, else new ones.
        New batches hold new state made with torch's layout; it is stored by :meth:`_commit`
        once the step has succeeded, so a rejected step leaves no half-made state behind."""
        names = self._state_names(group)
        cached = self._batches.get(id(group))
        if (cached is not None and cached[0] is group and len(cached[1]) == len(params)
                and all(a is b for a, b in zip(cached[1], params))
                and all(b.unchanged(self, names) for b in cached[2])):
            return cached[2]
        by_key: Dict[Tuple[Any, ...], List[torch.Tensor]] = {}
        for p in params:
            by_key.setdefault(self._batch_key(p), []).append(p)
        batches = []
        for members in by_key.values():
            states, steps, first = [], [], False
            for p in members:
                st = self.state.get(p, {})
                row = []
                for name in names:
                    t = st.get(name)
                    if t is None:
                        t = self._make_state(p, name)
                        first = True
                    row.append(t)
                states.append(row)
                if self._counts_steps:
                    step = st.get("step")
                    if step is None:
                        # As torch.optim.Adam: a float32 scalar tensor (on the param's device
                        # when capturable), so state_dicts interchange.
                        device = p.device if group["capturable"] else "cpu"
                        step = torch.tensor(0.0, dtype=torch.float32, device=device)
                        first = True
                    steps.append(step)
            batch = _Batch(names, members, states, steps)
            batch.first = first
            batches.append(batch)
        self._batches[id(group)] = (group, params, batches)
        return batches

    def _step_batch(self, group: Dict[str, Any], batch: _Batch, amp: Dict[str, Any]) -> None:
        """One kernel call for a batch; ``amp`` holds grad_scale (and on CUDA found_inf)."""
        raise NotImplementedError

    def _commit(self, group: Dict[str, Any], batch: _Batch) -> None:
        """After a successful kernel call: store the batch's tensors as state (new ones the
        first time) and bump the version counters of what was written."""
        if batch.first:
            names = self._state_names(group)
            for i, (p, row) in enumerate(zip(batch.params, batch.states)):
                st = self.state[p]
                st.update(zip(names, row))
                if batch.steps:
                    st["step"] = batch.steps[i]
            batch.first = False
        torch.autograd.graph.increment_version(batch.written)


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

    def _state_names(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        return ("momentum_buffer",) if group["momentum"] != 0 else ()

    def _make_state(self, p: torch.Tensor, name: str) -> torch.Tensor:
        # torch.optim.SGD starts the buffer as a copy of the gradient: step 1 writes it.
        return torch.empty_like(p, memory_format=torch.preserve_format)

    def _batch_key(self, p: torch.Tensor) -> Tuple[Any, ...]:
        return (p.dtype, self.state.get(p, {}).get("momentum_buffer") is None)

    def _step_batch(self, group, batch, amp):  # type: ignore[no-untyped-def]
        buffers = batch.state_arrays[0] if batch.state_arrays else None
        ops.sgd_(batch.param_arrays, batch.grad_arrays(), buffers,
                 step=1 if batch.first else 2, lr=float(group["lr"]),
                 momentum=group["momentum"], dampening=group["dampening"],
                 nesterov=group["nesterov"], weight_decay=group["weight_decay"],
                 maximize=group["maximize"], **amp)
        self._commit(group, batch)


class Adam(_GdfastOptimizer):
    """torch.optim.Adam (``decoupled_weight_decay=True`` makes it AdamW)."""

    _spec_name = "adam"
    _counts_steps = True

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

    def _state_names(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ())

    def _batch_key(self, p: torch.Tensor) -> Tuple[Any, ...]:
        step = self.state.get(p, {}).get("step")
        if step is None or self.defaults["capturable"]:
            return (p.dtype,)  # capturable: counts stay on the device, stepped together
        return (p.dtype, int(step))

    def _step_batch(self, group, batch, amp):  # type: ignore[no-untyped-def]
        steps = batch.steps
        capturable = bool(group["capturable"])
        if capturable:  # the kernel reads the count after this update from the device
            torch._foreach_add_(steps, 1)
            step: Any = steps[0]
        else:
            counts = batch.step_arrays
            step = int(counts[0]) + 1
        states = batch.state_arrays
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        # A device tensor when capturable: the kernel reads it there.
        lr_arg: Any = lr if capturable and torch.is_tensor(lr) else float(lr)
        ops.adam_(batch.param_arrays, batch.grad_arrays(), states[0], states[1], step=step,
                  lr=lr_arg,
                  beta1=float(beta1), beta2=float(beta2), eps=group["eps"],
                  weight_decay=group["weight_decay"],
                  decoupled_weight_decay=bool(group.get("decoupled_weight_decay", False)),
                  amsgrad=bool(group["amsgrad"]),
                  max_exp_avg_sq=states[2] if group["amsgrad"] else None,
                  maximize=bool(group["maximize"]), **amp)
        self._commit(group, batch)
        if not capturable:
            for c in counts:
                c[...] = step  # float32, as torch's count: exact below 2**24
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

    def _state_names(self, group: Dict[str, Any]) -> Tuple[str, ...]:
        return ("exp_avg",)

    def _step_batch(self, group, batch, amp):  # type: ignore[no-untyped-def]
        beta1, beta2 = group["betas"]
        ops.lion_(batch.param_arrays, batch.grad_arrays(), batch.state_arrays[0],
                  lr=float(group["lr"]), beta1=float(beta1), beta2=float(beta2),
                  weight_decay=group["weight_decay"],
                  maximize=bool(group.get("maximize", False)), **amp)
        self._commit(group, batch)
