"""``gdfast.torch.Muon``: torch.optim.Muon's constructor, checks, state (``momentum_buffer``)
and numerics (the Newton-Schulz iteration in bfloat16 through torch's matrix product, as
torch.optim.Muon runs it), with the elementwise work before and after the iteration fused
into one pass each (gdfast/_muon.py), and gdfast's precision options. Imports torch."""

from __future__ import annotations

from itertools import chain
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple

import torch

from . import _muon
from ._stepping import (
    ABSMAX,
    DEFAULT_PRECISION,
    PRECISION_OPTIONS,
    Precision,
    absmax_size,
    advance_schedules,
    check_precision,
    keep_unsaved_options,
    kept_dtype,
)

_STATE_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
_NARROW = (torch.bfloat16, torch.float16)


def new_input(param: torch.Tensor, wide: bool = False) -> torch.Tensor:
    """The iteration's input, written by phase 1: bfloat16 (torch.optim.Muon rounds it so) for
    a float32, bfloat16 or float16 param; a float64 one's, and with ``wide`` (stores rounding
    stochastically) a float32 one, is rounded to nearest by the iteration."""
    dtype = torch.float64 if param.dtype == torch.float64 else \
        torch.float32 if wide else torch.bfloat16
    return torch.empty(param.shape, dtype=dtype, device=param.device)


def newton_schulz_bfloat16(x: torch.Tensor, group: Dict[str, Any]) -> torch.Tensor:
    """The iteration on x rounded to bfloat16 (x itself when it is bfloat16), in
    torch.optim.Muon's operations and order (so that the same input gives the same bits);
    returns its output in bfloat16, which phase 2 widens exactly, or in float64 for a float64
    x (phase 2 of a float64 param is a float64 call)."""
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
    return x.double() if given == torch.float64 else x


def _host(value: Any) -> Any:
    """A 1-element tensor option (torch.optim.Muon accepts a tensor lr) as a number."""
    return value.item() if isinstance(value, torch.Tensor) and value.numel() == 1 else value


def _state_dtype(value: Any) -> Any:
    if value not in _STATE_DTYPES:
        raise TypeError("state_dtype: expected None or torch.float32, torch.bfloat16 or "
                        f"torch.float16, got {value!r}")
    return value


def _new_states(p: torch.Tensor, names: Tuple[str, ...], precision: Precision,
                ) -> Dict[str, torch.Tensor]:
    """A param's first states as its group's precision options make them
    (_muon.new_state_dtype): zeros, or 8-bit codes and their blocks' maxima."""
    out: Dict[str, torch.Tensor] = {}
    keep = torch.preserve_format
    dtype = _muon.new_state_dtype(p.dtype, p.numel(), precision, torch.float32)
    for name in names:
        if dtype is None:
            out[name] = torch.zeros_like(p, dtype=torch.uint8, memory_format=keep)
            out[name + ABSMAX] = torch.zeros(absmax_size(p), dtype=torch.float32,
                                             device=p.device)
        else:
            out[name] = torch.zeros_like(p, dtype=dtype, memory_format=keep)
    return out


def _new_master(p: torch.Tensor) -> torch.Tensor:
    return p.detach().to(torch.float32, memory_format=torch.preserve_format, copy=True)


def _precision_of(options: Mapping[str, Any], where: str) -> Precision:
    try:
        return check_precision(options, _state_dtype)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}{e}") from None


class Muon(torch.optim.Optimizer):
    """torch.optim.Muon (2-D params only, as there), each step's elementwise work in two fused
    passes per param and its Newton-Schulz iteration in bfloat16 on torch's matrix product.
    A param group with ``use_muon=False`` is stepped with AdamW instead, as
    pytorch_optimizer.Muon steps it (any shape; options lr, betas, eps, weight_decay, their
    defaults the adamw_* arguments; state exp_avg, exp_avg_sq and the group's step), in one
    fused pass over the group. CPU or CUDA tensors (a group's on one device), float32,
    float64, bfloat16 or float16, contiguous.
    ``max_grad_norm``, ``clip_per_group``, ``max_grad_value`` and ``monitor`` are param-group
    options as in every gdfast class (the clip factor folded into phase 1, which also clamps;
    the norms kept as ``last_grad_norm`` and ``last_norms``), and so are the precision options
    of every gdfast.torch class (``state_dtype``, ``master_weights``, ``stochastic_rounding``
    with ``seed``, ``optim_bits`` with ``min_8bit_size``; README "Lower precision"), for the
    Muon groups' momentum buffers and the AdamW groups' moments alike."""

    last_grad_norm: Optional[float] = None
    last_norms: Optional[Dict[str, float]] = None

    def __init__(self, params: Any, *args: Any, state_dtype: Any = None,
                 master_weights: bool = False, stochastic_rounding: bool = False,
                 seed: Optional[int] = None, optim_bits: int = 32, min_8bit_size: int = 4096,
                 **kwargs: Any) -> None:
        defaults, self.adamw_defaults = _muon.options(*args, **kwargs)
        if isinstance(defaults["lr"], torch.Tensor) and defaults["lr"].numel() != 1:
            raise ValueError("lr: a tensor lr must have 1 element")
        defaults.update(state_dtype=state_dtype, master_weights=master_weights,
                        stochastic_rounding=stochastic_rounding, seed=seed,
                        optim_bits=optim_bits, min_8bit_size=min_8bit_size)
        _muon.check_group({k: _host(v) for k, v in defaults.items()})
        self._with_seed(defaults)
        _precision_of(defaults, "")
        super().__init__(params, defaults)

    __init__.__signature__ = _muon.INIT_SIGNATURE  # type: ignore[attr-defined]

    @staticmethod
    def _with_seed(group: Dict[str, Any], defaults: Optional[Mapping[str, Any]] = None) -> None:
        """A seed drawn from torch's default generator (torch.manual_seed reproduces it) for a
        group with stochastic rounding and none, as the other gdfast.torch classes draw it."""
        merged = {**(defaults or {}), **group}
        if bool(merged.get("stochastic_rounding")) and merged.get("seed") is None:
            high, low = torch.randint(0, 2**32, (2,), dtype=torch.int64).tolist()
            group["seed"] = int(high) << 32 | int(low)

    def add_param_group(self, param_group: Dict[str, Any]) -> None:
        if isinstance(param_group, dict) and not _muon.is_muon(param_group):
            param_group = _muon.adamw_group(param_group, self.adamw_defaults)
        if isinstance(param_group, dict) and hasattr(self, "defaults"):
            self._with_seed(param_group, self.defaults)
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        where = f"param_groups[{len(self.param_groups) - 1}]"
        try:
            options = {k: _host(v) for k, v in group.items()}
            _muon.check_step_options(options, where + ".")
            precision = _precision_of(options, where + ".")
            for i, p in enumerate(group["params"]):
                _muon.check_param(p.dtype, p.numel(), precision, f"{where}.params[{i}]")
            if not _muon.is_muon(group):
                _muon.check_adamw_group(options, where + ".")
                return
            _muon.check_group(options, where + ".")
            for i, p in enumerate(group["params"]):
                _muon.check_matrix(p.shape, f"{where}.params[{i}]")
        except (TypeError, ValueError):
            self.param_groups.pop()
            raise

    def _work(self, count: Optional[int]
              ) -> Tuple[List[_muon.GroupStep], List[Tuple[Any, Dict[str, Any]]]]:
        """Per group: the params with a gradient (detached: the same memory), their gradients,
        states and extras (master copy, blocks' maxima, rounding), all checked; and per param,
        the states to keep (new ones are not kept before the checks pass). ``count``: the
        rounding count of this step (_muon.rounding_count)."""
        work, kept = [], []
        first = 0  # the group's first param's index in the optimizer (a rounding key)
        for gi, group in enumerate(self.param_groups):
            names = _muon.state_names(group)
            options = _muon.with_scheduled_lr(
                {k: _host(v) for k, v in group.items() if k != "params"}, f"param_groups[{gi}]: ")
            precision = _precision_of(options, f"param_groups[{gi}].")
            params: List[Any] = []
            grads: List[Any] = []
            states: List[List[Any]] = [[] for _ in names]
            extras: List[_muon.Extras] = []
            for i, p in enumerate(group["params"]):
                if p.grad is None:
                    continue
                where = f"param_groups[{gi}].params[{i}]"
                if p.is_complex() or p.grad.is_sparse or p.device.type not in ("cpu", "cuda"):
                    raise ValueError(f"{where}: Muon steps dense real CPU or CUDA tensors, got "
                                     f"{p.dtype} {p.grad.layout} on {p.device}")
                state = self.state.get(p, {})  # (a rejected step adds no entry)
                _muon.check_param(p.dtype, p.numel(), precision, where)  # (options may change)
                if any(name not in state for name in names):
                    state = {**_new_states(p, names, precision), **state}
                state, e = _muon.param_extras(
                    state, names, p, p.dtype in _NARROW, precision,
                    None if count is None else (options.get("seed"), first + i, count),
                    _new_master, where)
                for name, arrays in zip(names, states):
                    arrays.append(state[name])
                extras.append(e)
                params.append(p.detach())
                grads.append(p.grad)
                kept.append((p, state))
            first += len(group["params"])
            plain = precision is DEFAULT_PRECISION and _muon.all_plain(extras)
            work.append(_muon.GroupStep.checked(group, options, params, grads, states,
                                                None if plain else extras))
        return work, kept

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], Any]] = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        count = _muon.rounding_count(self.param_groups)
        work, kept = self._work(count)  # (all checked before any param or state changes)
        for p, state in kept:
            self.state[p].update(state)
        self.last_grad_norm, self.last_norms = _muon.run_groups(work, new_input,
                                                                newton_schulz_bfloat16)
        advance_schedules(self.param_groups)
        if count is not None:
            for group in self.param_groups:
                group["rounding_step"] = count
        return loss

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """torch.optim's, except that the master copy, 8-bit states (uint8 codes, float32
        blocks' maxima) and states the kernels take in their stored dtype with their param
        keep it (torch.optim casts every floating state to the param's dtype), and a group
        lacking a precision option (a torch.optim.Muon state_dict) keeps this optimizer's."""
        before = self.param_groups
        super().load_state_dict(state_dict)
        saved_groups = state_dict["param_groups"]
        keep_unsaved_options(self.param_groups, saved_groups, before,
                             (*PRECISION_OPTIONS, "rounding_step"))
        for saved_key, p in zip(chain.from_iterable(g["params"] for g in saved_groups),
                                chain.from_iterable(g["params"] for g in self.param_groups)):
            entry = state_dict["state"].get(saved_key)
            if not isinstance(entry, Mapping) or p not in self.state:
                continue
            for name, value in entry.items():
                if torch.is_tensor(value) and (value.is_floating_point()
                                               or value.dtype == torch.uint8) \
                        and kept_dtype(p.dtype, name, value.dtype):
                    dtype = torch.float32 if name == "master_param" else value.dtype
                    self.state[p][name] = value.to(dtype=dtype, device=p.device)
