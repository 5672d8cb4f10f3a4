"""Drop-in replacements for torch.optim's elementwise optimizers, lion-pytorch's Lion and
pytorch_optimizer's Adan, AdEMAMix, ScheduleFreeAdamW, SophiaH and Lamb: ``gdfast.torch.SGD``,
``Adam``, ``AdamW``, ``Lion``, ``RMSprop``, ``Adagrad``, ``Adadelta``, ``Adamax``, ``NAdam``,
``RAdam``, ``ASGD``, ``Rprop``, ``Adan``, ``AdEMAMix``, ``ScheduleFreeAdamW``, ``SophiaH``,
``Lamb``; ``Muon`` (torch.optim.Muon's, gdfast/_muon_torch.py).

    opt = gdfast.torch.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-2)

Same constructor arguments and defaults, param groups (named parameters too), ``zero_grad``,
``step(closure)``, LR schedulers, ``torch.amp.GradScaler`` (unscaling happens inside the fused
pass) and the same ``state`` layout, so a state_dict moves between torch.optim and gdfast in
both directions. A step checks every group first, then steps all of them in one kernel call.
Params may be laid out densely in any order (channels_last): the step is elementwise, so such a
param, its grad and its states (which keep its layout, as torch.optim's do) are stepped as
flat views of their memory.
CUDA params need a build with gdfast's CUDA kernels (then ``capturable=True`` keeps step
counts, lr and the AMP scalars on the device). ``import gdfast`` never imports torch; this
module does.

bfloat16 and float16 params are stepped as torch's fused steps do them (states in the param's
dtype, math in float32, stores rounded to nearest); the precision options change that:
``state_dtype`` (torch.float32, torch.bfloat16 or torch.float16), ``master_weights`` (a float32
copy per param, ``state['master_param']``), ``stochastic_rounding`` with ``seed`` (drawn from
torch's default generator at construction unless given). load_state_dict keeps the master copy
and such states in their stored dtypes.
"""

from __future__ import annotations

import functools
import math
import sys
from itertools import chain
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Tuple

import numpy as np
import torch

from . import (
    _constructors,  # noqa: F401  (registers the constructors)
    _core,
    _device,
    cuda,
)
from ._in_backward import StepInBackward
from ._muon_torch import Muon
from ._sophia import estimate_list
from ._spec import State
from ._stepping import (
    ABSMAX,
    CONSTRUCTORS,
    EIGHT_BIT,
    GDFAST_OPTIONS,
    Batch,
    DeviceCall,
    Member,
    StepPath,
    absmax_size,
    check_param_precision,
    eight_bit_constructors,
    keep_unsaved_options,
    kept_dtype,
    make_class,
)

__all__ = ["Optimizer", "step_in_backward", "Muon"] + list(CONSTRUCTORS) + list(EIGHT_BIT)

_FLOAT32_MAX = float(np.finfo(np.float32).max)


_PARAM_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
_STATE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)


_PLAIN = (torch.Tensor, torch.nn.Parameter)


def _dtensor_class() -> Any:
    """torch's DTensor class once torch.distributed.tensor is imported (no DTensor exists
    before), else None."""
    return getattr(sys.modules.get("torch.distributed.tensor"), "DTensor", None)


def _is_dtensor(t: Any) -> bool:
    if type(t) in _PLAIN:  # (the usual case, without a lookup)
        return False
    dtensor = _dtensor_class()
    return dtensor is not None and isinstance(t, dtensor)


def _local(t: torch.Tensor) -> torch.Tensor:
    """A DTensor's shard on this rank, sharing its memory (the kernels step it in place, as
    torch.optim's ops on a DTensor update the shard); any other tensor as it is."""
    return t.to_local() if _is_dtensor(t) else t  # type: ignore[attr-defined]


def _local_grad(g: torch.Tensor, param: torch.Tensor) -> torch.Tensor:
    """A grad's part for the param's shard: a DTensor grad placed otherwise than its param
    (a partial sum, say) is redistributed like it first, as torch.optim's DTensor ops would."""
    if _is_dtensor(g) and g.placements != param.placements:  # type: ignore[attr-defined]
        g = g.redistribute(param.device_mesh, param.placements)  # type: ignore[attr-defined]
    return _local(g)


def _as_array(t: torch.Tensor) -> Any:
    """What the kernels get: a zero-copy NumPy view of a CPU tensor (the fastest path in), the
    detached tensor itself on CUDA and for bfloat16, which NumPy lacks (through DLPack);
    complex as real pairs, as torch does."""
    if t.is_complex():
        t = torch.view_as_real(t)
    return t.detach().numpy() if t.device.type == "cpu" and t.dtype is not torch.bfloat16 \
        else t.detach()


def _kept(array: Any) -> Any:
    """A param's or state's array as a batch keeps it between steps: a tensor the kernels
    would read anew on every step (CUDA, bfloat16) is read once, into a view of the extension
    (the batch's checks catch a replaced tensor or moved memory)."""
    if torch.is_tensor(array):
        view = _core.torch_view(array)
        if view is not None:
            return view
    return array


def _grad_array(g: torch.Tensor) -> Any:
    """A grad as the kernels get it; a non-contiguous one is read from a contiguous copy (the
    kernels read a grad, never write it), as torch.optim accepts it."""
    return _as_array(g if g.is_contiguous() else g.contiguous())


def _dense(t: torch.Tensor) -> bool:
    """Whether t's elements fill one block of memory without gaps or overlaps, in some order
    of its dimensions (contiguous, channels_last, any permutation of a contiguous tensor)."""
    expected = 1
    for stride, size in sorted((st, n) for n, st in zip(t.shape, t.stride()) if n != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _layout(t: torch.Tensor) -> Tuple[Any, ...]:
    """What must agree between tensors stepped as flat views of their memory: shape, device
    and the strides of the dimensions longer than 1 (the others are never stepped over). Not
    the dtype: states may be stored in another (the kernel checks which pair)."""
    return (t.shape, t.device, tuple(st for n, st in zip(t.shape, t.stride()) if n != 1))


def _describe(t: torch.Tensor) -> str:
    for name, fmt in (("channels_last", torch.channels_last),
                      ("channels_last_3d", torch.channels_last_3d)):
        if t.dim() == (4 if fmt is torch.channels_last else 5) and t.is_contiguous(
                memory_format=fmt):
            return name
    return "non-contiguous"


def _flat_array(t: torch.Tensor) -> Any:
    """A dense tensor's memory as the 1-D array the kernels step (elementwise, so any order
    works as long as param, grad and states share it); complex as real pairs."""
    t = t.detach()
    if t.is_complex():
        t = torch.view_as_real(t)
    return _as_array(t.as_strided((t.numel(),), (1,), t.storage_offset()))


def _scalar_dtype() -> torch.dtype:
    """The dtype of torch.optim's step counts and scalar states."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32


class Optimizer(StepPath, torch.optim.Optimizer):
    """Shared by every class of this module: the torch front end of gdfast's step path."""

    # Scalar states kept in float64 whatever torch's default dtype (torch.optim's own are in
    # it): sums over the whole run, such as Schedule-Free's weight_sum.
    _double_scalars: Tuple[str, ...] = ()

    # GradScaler then hands us grad_scale/found_inf instead of unscaling in a separate pass.
    _step_supports_amp_scaling = True
    _scalars_are_objects = True  # step counts and scalar states: tensors updated in place
    _converts_host_values = True  # a tensor lr (or betas) is checked as a number
    _float32 = torch.float32
    _uint8 = torch.uint8

    def __init__(self, params: Iterable[Any], *args: Any, **kwargs: Any) -> None:
        defaults = self._ctor.defaults(args, kwargs)
        name = type(self).__name__
        if defaults.get("differentiable"):
            raise ValueError("differentiable=True: gdfast's fused steps are not differentiable; "
                             "use torch.optim for higher-order optimization")
        if defaults.get("capturable"):
            if not cuda.is_available():
                raise ValueError("capturable=True: needs gdfast's CUDA kernels and a GPU "
                                 "(capturable steps are for CUDA graphs); this build or machine "
                                 "has none")
            if self._ctor.rule.scalar_states:
                raise ValueError(f"capturable=True: {name} keeps its scalar states on the host")
            if defaults.get("stochastic_rounding"):
                raise ValueError("capturable=True and stochastic_rounding=True: stochastic "
                                 "rounding is keyed by the step count on the host, which a "
                                 "captured step does not advance")
        lr = defaults.get("lr")
        if torch.is_tensor(lr) and lr.numel() != 1:  # (torch's words: its tests match them)
            raise ValueError(f"lr: Tensor lr must be 1-element, got shape {tuple(lr.shape)}")
        self._batch_cache, self._checked_cache = {}, {}
        self._dtensors = False  # some param is a DTensor: arrays are its local shard's
        self._with_seed(defaults)
        self._checked_group(defaults, "")
        if not torch.is_tensor(params):  # (torch.optim names a tensor itself)
            try:
                iter(params)
            except TypeError:
                raise TypeError("params: expected an iterable of tensors or of param group "
                                f"dicts, got {type(params).__name__}") from None
        torch.optim.Optimizer.__init__(self, params, defaults)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        # Everything is checked before torch.optim adds the group: a rejected one adds nothing.
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group must be a dict, but got {type(param_group)}")
        where = f"param_groups[{len(self.param_groups)}]"
        if "params" not in param_group:
            raise ValueError(f"{where}: has no 'params' entry")
        params = param_group["params"]
        if isinstance(params, set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, "
                            "but the ordering of tensors in sets will change between runs. "
                            "Please use a list instead.")
        try:
            params = [params] if torch.is_tensor(params) else list(params)  # may be a generator
        except TypeError:
            raise TypeError(f"{where}['params']: expected a tensor or an iterable of tensors, "
                            f"got {type(params).__name__}") from None
        param_group = {**param_group, "params": params}
        for i, p in enumerate(params):
            t = p[1] if isinstance(p, tuple) and len(p) == 2 else p  # (name, tensor)
            if torch.is_tensor(t) and _check_param(t, f"params[{i}]"):  # (anything else:
                self._dtensors = True  # torch.optim raises its own TypeError)
        self._with_seed(param_group, self.defaults)
        _, _, precision = self._checked_group({**self.defaults, **param_group},
                                              f"{where}: ")
        for i, p in enumerate(params):
            t = p[1] if isinstance(p, tuple) and len(p) == 2 else p
            if torch.is_tensor(t):
                check_param_precision(t.dtype, precision, f"{where}['params'][{i}]")
        for p in params:
            t = p[1] if isinstance(p, tuple) and len(p) == 2 else p
            if torch.is_tensor(t):  # torch updates an inference tensor in place only in
                self._inference_params = getattr(  # inference mode
                    self, "_inference_params", False) or t.is_inference()
        super().add_param_group(param_group)

    def _with_seed(self, group: Dict[str, Any],
                   defaults: Optional[Mapping[str, Any]] = None) -> None:
        """A seed drawn for a group (or the defaults) with stochastic rounding and none (the
        check that follows names a bad one)."""
        merged = {**(defaults or {}), **group}
        if merged.get("stochastic_rounding") is True and merged.get("seed") is None:
            group["seed"] = self._draw_seed()

    @staticmethod
    def profile_hook_step(func: Callable[..., Any]) -> Callable[..., Any]:
        """torch.optim's wrapper of every step (step hooks, the profiler's range and marker),
        taken only where it has something to do: while a profiler runs or a step hook is
        registered. Otherwise the step runs bare: the profiler range alone, opened through
        torch's op dispatch, cost about 30 us a step, a tenth of a 148-tensor step's host
        time."""
        hooked = torch.optim.Optimizer.profile_hook_step(func)
        module = sys.modules[torch.optim.Optimizer.__module__]
        global_pre = getattr(module, "_global_optimizer_pre_hooks", None)
        global_post = getattr(module, "_global_optimizer_post_hooks", None)
        if global_pre is None or global_post is None:  # a torch that keeps them elsewhere
            return hooked
        profiling = torch._C._autograd._profiler_enabled

        @functools.wraps(func)
        def step(self: Optimizer, *args: Any, **kwargs: Any) -> Any:
            if (profiling() or self._optimizer_step_pre_hooks or self._optimizer_step_post_hooks
                    or global_pre or global_post):
                return hooked(self, *args, **kwargs)
            out = func(self, *args, **kwargs)
            self._optimizer_step_code()  # (the marker torch's profiler hooks into)
            return out

        return step

    # One opaque call to torch.compile: traced into, the step's Python guarded on its step
    # counts and recompiled every step until Dynamo's limit (17-23 graph breaks, a first
    # call of seconds); here a compiled training step breaks its graph once, at the call.
    @torch.compiler.disable  # type: ignore[untyped-decorator]
    @torch.no_grad()
    def step(  # (torch.optim's runtime signature, not its overloads)
        self, closure: Optional[Callable[[], float]] = None
    ) -> Optional[float]:
        loss = None
        if closure is not None:
            if not callable(closure):
                raise TypeError(f"closure: expected a callable or None, got "
                                f"{type(closure).__name__}")
            with torch.enable_grad():
                loss = closure()
        if getattr(self, "_inference_params", False) and not torch.is_inference_mode_enabled():
            raise RuntimeError("params: some are inference tensors, which torch does not let "
                               "anything update in place outside torch.inference_mode() (as "
                               "torch.optim, which raises the same way): step inside it, or "
                               "clone them first")
        found_inf = getattr(self, "found_inf", None)
        grad_scale = getattr(self, "grad_scale", None)
        # (a two-pass rule makes its factors on the host: AMP's values are read back for it)
        if found_inf is None or found_inf.device.type == "cpu" or self._ctor.rule.tensor_sums:
            amp: Dict[str, Any] = {"grad_scale": 1.0 if grad_scale is None else float(grad_scale)}
            if found_inf is not None and float(found_inf) != 0.0:
                # An AMP step with inf/nan gradients: skipped, counts unchanged, but checked
                # like a step (a bad argument is an error whatever the gradients hold).
                self._step_all(self._members, amp, run=False)
                return loss
        else:  # CUDA: the kernels read the scale and the inf flag on the device (no sync)
            amp = {"grad_scale": 1.0 if grad_scale is None else grad_scale, "found_inf": found_inf}
        self._amp = amp
        self._step_all(self._members, amp)
        return loss

    # -- Sophia's hooks (gdfast/_sophia.py) -------------------------------------------------
    @staticmethod
    def _closure_first(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Any, ...]:
        closure = kwargs.pop("closure", args[0] if args else None)
        if closure is None:
            return None, (), kwargs
        if not callable(closure):
            raise TypeError(f"closure: expected a callable or None, got "
                            f"{type(closure).__name__}")
        with torch.enable_grad():
            return closure(), (), kwargs

    def _hessian_members(self, args: Tuple[Any, ...]) -> List[Tuple[Any, Any]]:
        return [(p, p) for g in self.param_groups for p in g["params"] if p.grad is not None]

    @staticmethod
    def _checked_hessian(hessian: Any, members: List[Tuple[Any, Any]]) -> List[Any]:
        estimates = estimate_list(hessian, len(members), "tensor")
        for i, (h, (_, p)) in enumerate(zip(estimates, members)):
            if not torch.is_tensor(h):
                raise TypeError(f"hessian[{i}]: expected a tensor, got {type(h).__name__}")
            if h.dtype != p.dtype or h.shape != p.shape or h.device != p.device:
                raise ValueError(f"hessian[{i}]: expected {p.dtype} of shape "
                                 f"{tuple(p.shape)} on {p.device} like its param, got "
                                 f"{h.dtype} of shape {tuple(h.shape)} on {h.device}")
        return [h.detach() for h in estimates]

    def _estimate(self, members: List[Tuple[Any, Any]]) -> Optional[List[Any]]:
        """Hutchinson's estimate of diag(H), drawn as pytorch_optimizer.SophiaH draws it (kept
        as state['hessian'] after the step, its state layout, and reused)."""
        if not members:
            return None
        params = [p for _, p in members]
        grads = [p.grad for p in params]
        if not all(g.requires_grad for g in grads):
            if self._dtensors:  # (FSDP2 reduce-scatters them outside autograd)
                raise RuntimeError("SophiaH: the Hessian estimate differentiates the gradients, "
                                   "and these DTensor params' gradients have no graph: call "
                                   "loss.backward(create_graph=True) (tensor parallelism), or "
                                   "pass step(hessian=[...]); under FSDP2 only the latter works "
                                   "(it reduce-scatters the gradients outside autograd)")
            raise RuntimeError("SophiaH: the Hessian estimate differentiates the gradients: "
                               "call loss.backward(create_graph=True), or pass "
                               "step(hessian=[...])")
        group = self.param_groups[0]
        samples, gaussian = group["num_samples"], group["hessian_distribution"] == "gaussian"
        estimates = [self.state[p].get("hessian") for p in params]
        estimates = [torch.zeros_like(p) if h is None else h.zero_()
                     for h, p in zip(estimates, params)]
        with torch.enable_grad():
            for i in range(samples):
                zs = [torch.randn_like(p) if gaussian else torch.randint_like(p, 0, 2) * 2.0 - 1.0
                      for p in params]
                products = torch.autograd.grad(grads, params, grad_outputs=zs,
                                               retain_graph=i < samples - 1)
                for h, hz, z in zip(estimates, products, zs):
                    h.addcmul_(hz.detach(), z, value=1.0 / samples)
        return estimates

    def _keep_estimates(self, estimates: Dict[Any, Any]) -> None:
        for p, h in estimates.items():  # (after the step: it made the param's state)
            self.state[p]["hessian"] = h

    def _state_items(self, group: Dict[str, Any]) -> List[Tuple[Any, Any]]:
        return [(p, self.state.get(p, {})) for p in group["params"]]

    @staticmethod
    def _lerp_(param: torch.Tensor, end: torch.Tensor, weight: float) -> None:
        with torch.no_grad():
            param.lerp_(end, weight)

    def _members(self, index: int, group: Dict[str, Any]) -> List[Tuple[Any, Any, Any, int]]:
        return [(p, p, g, i) for i, p in enumerate(group["params"]) if (g := p.grad) is not None]

    def _grad_arrays(self, batch: Batch, grads: List[Any]) -> List[Any]:
        if self._dtensors:
            grads = [_local_grad(g, m.param) for g, m in zip(grads, batch.members)]
        if batch.layouts is not None:  # a param stepped as a flat view (channels_last)
            return [self._laid_out_grad(batch, k, g) for k, g in enumerate(grads)]
        dtype = batch.members[0].param.dtype
        if (batch.on_device or dtype is torch.bfloat16) and not dtype.is_complex:
            views = _core.torch_grads(grads, dtype)  # (all plain: read once, in C++)
            if views is not None:
                return views
            # the grads as they are (the kernel call reads plain tensors' layout and checks
            # it); here only what torch requires of a .grad beyond that, and a copy or a
            # detached view where one is needed
            out = []
            for k, g in enumerate(grads):
                if g.dtype is not dtype or g.layout is not torch.strided or g.requires_grad or \
                        not g.is_contiguous():
                    g = self._checked_grad(batch, k, g)
                out.append(g)
            return out
        if batch.on_device or dtype.is_complex or dtype is torch.bfloat16:
            return [self._checked_grad(batch, k, g) for k, g in enumerate(grads)]
        out = []
        for k, g in enumerate(grads):
            if g.dtype is not dtype:  # (the kernels would take a float32 grad of a float16
                self._checked_grad(batch, k, g)  # param; torch.optim does not)
            try:  # the fast path: a dense, contiguous CPU grad that does not require grad
                array = g.numpy()
                if not array.flags.c_contiguous:
                    array = _grad_array(g)
            except (RuntimeError, TypeError):  # sparse, or requires grad (create_graph=True)
                array = self._checked_grad(batch, k, g)
            out.append(array)
        return out

    def _checked_grad(self, batch: Batch, k: int, g: torch.Tensor) -> Any:
        if g.layout != torch.strided:  # (RuntimeError, as torch.optim's)
            raise RuntimeError(f"{self._member_name(batch, k)}.grad: {type(self).__name__} does "
                               f"not support sparse gradients (layout {g.layout})")
        p = batch.members[k].param
        if g.dtype != p.dtype:  # as torch requires of .grad
            raise TypeError(f"{self._member_name(batch, k)}.grad: expected {p.dtype} like its "
                            f"param, got {g.dtype}")
        return _grad_array(g)

    def _laid_out_grad(self, batch: Batch, k: int, g: torch.Tensor) -> Any:
        """The grad of a param stepped as a flat view: a flat view of it if laid out as the
        param, else of a copy that is (the kernel checks only the flat arrays, so everything
        it would check of the tensors is checked here)."""
        layout = batch.layouts[k] if batch.layouts is not None else None
        if layout is None:  # this member is stepped as it is
            return self._checked_grad(batch, k, g)
        p = batch.members[k].param
        who = self._member_name(batch, k)
        if g.layout != torch.strided:
            self._checked_grad(batch, k, g)
        if g.dtype != p.dtype:
            raise TypeError(f"{who}.grad: expected {p.dtype} like its param, got {g.dtype}")
        if g.shape != p.shape or g.device != p.device:
            raise ValueError(f"{who}.grad: shape {tuple(g.shape)} on {g.device} does not match "
                             f"its param's {tuple(p.shape)} on {p.device}")
        if _layout(g) != layout:
            g = torch.empty_like(p).copy_(g)  # (empty_like keeps a dense param's strides)
        return _flat_array(g)

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch.optim's, except that the master copy, 8-bit states (uint8 codes, float32
        absmax) and the states the kernels take in their stored dtype with their param
        (float32, bfloat16, float16 of a float32, bfloat16 or float16 param) keep it
        (torch.optim casts every floating state to the param's dtype), scalar states kept in
        float64 (_double_scalars) stay float64, and a group lacking a
        precision option (a torch.optim state_dict) keeps this optimizer's."""
        self._batch_cache, self._checked_cache = {}, {}  # new state tensors and param groups
        before = self.param_groups
        super().load_state_dict(state_dict)
        saved_groups = state_dict["param_groups"]
        keep_unsaved_options(self.param_groups, saved_groups, before,
                             (*GDFAST_OPTIONS, "rounding_step"))
        saved_state = state_dict["state"]
        for saved_key, p in zip(chain.from_iterable(g["params"] for g in saved_groups),
                                chain.from_iterable(g["params"] for g in self.param_groups)):
            entry = saved_state.get(saved_key)
            if not isinstance(entry, Mapping) or p not in self.state:
                continue
            state = self.state[p]
            for name, value in entry.items():
                loaded = state.get(name)
                if (torch.is_tensor(value) and torch.is_tensor(loaded)
                        and (value.is_floating_point() or value.dtype == torch.uint8)
                        and value.dtype != loaded.dtype
                        and name.removesuffix(ABSMAX) in self._ctor.rule.state_names
                        + ("master_param",) and kept_dtype(p.dtype, name, value.dtype)):
                    dtype = torch.float32 if name == "master_param" else value.dtype
                    state[name] = value.to(dtype=dtype, device=p.device)
                elif name in self._double_scalars and torch.is_tensor(loaded):
                    state[name] = torch.as_tensor(value, dtype=torch.float64,
                                                  device=loaded.device)

    def __setstate__(self, state: Dict[str, Any]) -> None:  # unpickling, copy.deepcopy
        super().__setstate__(state)
        self._batch_cache, self._checked_cache = {}, {}
        self._dtensors = any(map(_is_dtensor, chain.from_iterable(
            g["params"] for g in self.param_groups)))

    def _check_group(self, group: Mapping[str, Any], where: str) -> Any:
        checked = super()._check_group(group, where)
        if self._dtensors and any(_is_dtensor(p[1] if isinstance(p, tuple) else p)
                                  for p in group.get("params", ())):
            # What needs all the shards of a param (or of all params) at once:
            if group.get("max_grad_norm") is not None:
                raise ValueError(f"{where}max_grad_norm: the params are DTensors, whose norm "
                                 "needs every rank's shards; clip with "
                                 "torch.nn.utils.clip_grad_norm_ (it reduces across ranks) "
                                 "before step()")
            if checked[2].bits8:
                raise ValueError(f"{where}optim_bits=8: the params are DTensors, whose shards "
                                 "would split the quantization blocks; use optim_bits=32")
        return checked

    # -- the hooks of the shared step path ---------------------------------------------------
    def _host(self, value: Any) -> Any:
        """A CUDA tensor (a capturable lr) is not read back: that would synchronise, and break
        CUDA-graph capture; the kernel reads it."""
        if torch.is_tensor(value):
            if value.numel() != 1:
                raise ValueError(f"expected a number or a 1-element tensor, got shape "
                                 f"{tuple(value.shape)}")
            return 0.0 if value.device.type == "cuda" else float(value)
        return value

    def _identities(self, params: List[Any]) -> Any:
        if self._dtensors:  # (a DTensor's data_ptr() is 0: its shard's memory is stepped)
            params = list(map(_local, params))
        return _core.torch_identities(params)  # p.data replaced or reshaped

    def _batch_key(self, param: Any) -> Hashable:
        return param.dtype, param.device

    def _array(self, tensor: Any) -> Any:
        return _kept(_as_array(tensor))

    def _new_state(self, param: Any, state: State, fill: float, dtype: Any) -> Any:
        keep = torch.preserve_format
        if state.init == "unset":  # SGD: step 1 writes the buffer
            return torch.empty_like(param, dtype=dtype, memory_format=keep)
        if fill:  # complex params: both parts, as torch.optim does
            return torch.full_like(param, complex(fill, fill) if param.is_complex() else fill,
                                   dtype=dtype, memory_format=keep)
        return torch.zeros_like(param, dtype=dtype, memory_format=keep)

    def _new_master(self, param: Any) -> Any:
        # (exact: float32 holds every bfloat16/float16; clone keeps a dense param's layout)
        return param.detach().to(torch.float32, memory_format=torch.preserve_format, copy=True)

    def _new_absmax(self, param: Any) -> Any:
        return torch.zeros(absmax_size(param), dtype=torch.float32, device=param.device)

    def _state_dtype(self, value: Any) -> Any:
        if value not in _STATE_DTYPES:
            raise TypeError("state_dtype: expected None or torch.float32, torch.bfloat16 or "
                            f"torch.float16, got {value!r}")
        return value

    def _draw_seed(self) -> int:
        # two 32-bit halves from torch's default generator (torch.manual_seed reproduces it)
        high, low = torch.randint(0, 2**32, (2,), dtype=torch.int64).tolist()
        return int(high) << 32 | int(low)

    def _new_scalar(self, param: Any, name: str, value: Any) -> Any:
        # As torch.optim: on the CPU, unless capturable keeps them on the param's device.
        device = param.device if self.defaults.get("capturable") else "cpu"
        dtype = torch.float64 if name in self._double_scalars else _scalar_dtype()
        return torch.tensor(float(value), dtype=dtype, device=device)

    def _read(self, holder: Any, name: str, where: str) -> Any:
        """A stored count or scalar state: a 1-element real tensor (as torch.optim keeps
        them), with a valid value unless it lives on the device (capturable)."""
        if not torch.is_tensor(holder) or holder.numel() != 1 or holder.is_complex() or (
                holder.dtype == torch.bool):
            shown = (f"a tensor of shape {tuple(holder.shape)} and dtype {holder.dtype}"
                     if torch.is_tensor(holder) else repr(holder))
            raise TypeError(f"{where}: state[{name!r}]: expected a 1-element real tensor (as "
                            f"torch.optim keeps it), got {shown}")
        if self._capturable_count(holder):
            return None
        if holder.device.type == "cpu":
            try:
                holder.detach().numpy()  # as _front reads and writes it
            except TypeError:
                raise TypeError(f"{where}: state[{name!r}]: dtype {holder.dtype} is not "
                                "supported; expected float32 or float64") from None
        value = float(holder)
        return self._checked_scalar(value, name, where)

    def _member_arrays(self, m: Member, where: str) -> Tuple[Any, List[Any]]:
        """A param and its states as they are if the param is contiguous (the usual case;
        the kernel checks them); if it is dense in another layout (channels_last), flat views
        of their memory, once all are checked to share its layout."""
        p = _local(m.param)
        names = [n for n, _ in m.objects[:len(m.states)]]  # (objects start with the states)
        for name, s in zip(names, m.states):
            if not torch.is_tensor(s):
                raise TypeError(f"{where}: state[{name!r}]: expected a tensor, got "
                                f"{type(s).__name__}")
            if _is_dtensor(s) != _is_dtensor(m.param):
                raise TypeError(f"{where}: state[{name!r}]: a {type(s).__name__} for a "
                                f"{type(m.param).__name__} param; a DTensor param's states are "
                                "DTensors placed like it (as torch.optim keeps them)")
        states = [_local(s) for s in m.states]
        if p.is_contiguous():
            for name, s in zip(names, states):
                if not s.is_contiguous():  # (else the kernel's message, with NumPy's advice)
                    raise ValueError(f"{where}: state[{name!r}]: is not contiguous (strides "
                                     f"{s.stride()}) like its param; make it so, e.g. "
                                     "state[name] = state[name].contiguous()")
            return self._array(p), [self._array(s) for s in states]
        if not _dense(p):
            raise ValueError(f"{where}: {_NOT_DENSE}")
        layout = _layout(p)
        for name, s in zip(names, states):
            if _layout(s) == layout or name.endswith(ABSMAX):  # (absmax: per block, 1-D)
                continue
            here = f"{where}: state[{name!r}]"
            if s.shape != p.shape or s.device != p.device:
                raise ValueError(f"{here}: shape {tuple(s.shape)} on {s.device} does not "
                                 f"match its param's {tuple(p.shape)} on {p.device}")
            raise ValueError(f"{here}: strides {s.stride()} differ from its param's "
                             f"{p.stride()} (a {_describe(p)} tensor); the step is elementwise "
                             "over memory, so a state must be laid out as its param: make the "
                             "param contiguous (p.data = p.data.contiguous()), or the state "
                             "like it (torch.empty_like(p).copy_(state))")
        m.layout = layout
        return _kept(_flat_array(p)), [_kept(_flat_array(s)) for s in states]

    def _capturable_count(self, holder: Any) -> bool:
        return bool(self.defaults.get("capturable")) and holder.device.type != "cpu"

    def _front(self, batch: Batch) -> Tuple[Dict[str, Optional[List[Any]]], List[torch.Tensor]]:
        """Per batch, made once: its step counts and scalar states as NumPy views (CPU; no torch
        dispatch to read or write them, ~8x faster) or tensors (None: a capturable count, never
        read on the host), and the tensors a step writes."""
        if batch.front is None:
            views: Dict[str, Optional[List[Any]]] = {}
            for name in batch.values:
                holders = [m.holders[name] for m in batch.members]
                views[name] = None if self._capturable_count(holders[0]) else [
                    h.detach().numpy() if h.device.type == "cpu" else h for h in holders]
            written = [t for m in batch.members
                       for t in (m.param, *m.states, *m.holders.values())]
            if self._dtensors:  # (a DTensor and its shard count their versions apart)
                written += [_local(t) for t in written if _is_dtensor(t)]
            batch.front = (views, written)
        return batch.front  # type: ignore[no-any-return]

    def _scalar_values(self, batch: Batch) -> Optional[Dict[str, Any]]:
        out: Dict[str, Any] = {}
        for name, views in self._front(batch)[0].items():
            if views is None:
                out[name] = None
                continue
            seen = set(map(float, views))
            if len(seen) != 1:
                return None
            out[name] = seen.pop()
        return out

    def _set_scalar_values(self, batch: Batch, values: Mapping[str, Any]) -> None:
        for name, views in self._front(batch)[0].items():
            if views is not None:
                value = values[name]
                if abs(value) > _FLOAT32_MAX and views[0].dtype == np.float32:
                    value = math.copysign(math.inf, value)  # as torch stores it, silently
                for view in views:
                    view[...] = value

    def _on_device(self, param: Any) -> bool:
        return bool(param.device.type != "cpu")

    def _device_call(self, batch: Batch, group: Mapping[str, Any], values: Dict[str, Any],
                     step: Any, amp: Mapping[str, Any]) -> DeviceCall:
        first = batch.members[0].param
        if step is None:  # capturable: the count after this step, computed on the device
            step = batch.members[0].holders["step"] + 1
        lr = group["lr"]
        lr_arg = lr if group.get("capturable") and torch.is_tensor(lr) else values["lr"]
        _, stream, scalars, grad_scale, lr_arg, step = _device.prepare(
            first, amp["grad_scale"], amp.get("found_inf"), lr_arg, step)
        return stream, scalars, {**values, "lr": lr_arg}, step, grad_scale

    def _after_step(self, batches: List[Batch]) -> None:
        written: List[torch.Tensor] = []
        for batch in batches:
            views, tensors = self._front(batch)
            written += tensors
            if views.get("step", []) is None:  # capturable counts advance on the device,
                steps = [m.holders["step"] for m in batch.members]  # unless found_inf skipped
                torch._foreach_add_(steps, 1)
                if "found_inf" in self._amp:
                    torch._foreach_sub_(steps, [self._amp["found_inf"]] * len(steps))
        # Version counters, as torch.optim's in-place ops bump them (autograd then catches a
        # param modified between forward and backward).
        torch.autograd.graph.increment_version(written)


_NOT_DENSE = ("has gaps or overlaps in memory (a view such as x[:, ::2] or an expanded "
              "tensor); gdfast steps contiguous tensors and dense layouts such as channels_last: "
              "make it one, e.g. p.data = p.data.contiguous()")


def _check_param(p: torch.Tensor, where: str) -> bool:
    """Raises naming the param if gdfast cannot step it; True for a DTensor (FSDP2's
    fully_shard, tensor parallelism), whose local shard is what is stepped and checked."""
    if _is_dtensor(p):
        _check_param(_local(p), where)
        return True
    # Any other subclass with its own dispatch has no memory of its own to step: refused here,
    # not at the first step with torch's words.
    if type(p).__torch_dispatch__ is not torch.Tensor.__torch_dispatch__:
        raise TypeError(f"{where}: is a {type(p).__name__}, a tensor subclass with its own "
                        "dispatch; gdfast steps plain tensors and DTensors (their local "
                        "shards): use torch.optim for these params")
    if p.layout != torch.strided:
        raise ValueError(f"{where}: is a sparse tensor ({p.layout}); gdfast steps dense "
                         "tensors (use p.to_dense(), or torch.optim.SparseAdam)")
    if not (p.is_contiguous() or _dense(p)):
        raise ValueError(f"{where}: {_NOT_DENSE}")
    if p.device.type == "cuda" and not cuda.is_available():
        raise ValueError(f"{where}: is on {p.device}, but gdfast's CUDA kernels are not "
                         "available (CPU-only build, or no GPU)")
    if p.device.type not in ("cpu", "cuda"):
        raise ValueError(f"{where}: is on {p.device}; gdfast steps CPU and CUDA tensors")
    if p.dtype not in ((torch.complex64, torch.complex128) if p.is_complex() else _PARAM_DTYPES):
        raise TypeError(f"{where}: expected float32 or float64 (or bfloat16, float16, "
                        f"complex64/128), got {p.dtype}")
    return False


for _ctor in (*CONSTRUCTORS.values(), *eight_bit_constructors()):
    globals()[_ctor.name] = make_class(_ctor, Optimizer, __name__)
del _ctor


def step_in_backward(optimizer: Optimizer) -> StepInBackward:
    """Steps each of the optimizer's params inside backward, as soon as its gradient has been
    accumulated, and frees that gradient at once: a training step then never holds every
    gradient. Returns the hooks' handle: ``with handle.accumulate():`` around the backward
    passes of all but the last micro-batch of a step; ``handle.remove()`` to stop. Not with
    ``max_grad_norm`` (ValueError) nor GradScaler, which need every gradient before any step
    (README "The step inside backward")."""
    return StepInBackward(optimizer)


def __getattr__(name: str) -> Any:
    """For static checkers: the optimizer classes above are made at import."""
    raise AttributeError(f"module 'gdfast.torch' has no attribute {name!r}")
