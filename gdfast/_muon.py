"""Muon (Jordan et al. 2024; Liu et al. 2025, "Muon is Scalable for LLM Training"), as
torch.optim.Muon: per 2-D param, one fused pass makes the momentum and the Newton-Schulz
iteration's input (the registry's partial rule ``muon``, phase 1), the iteration runs on the
array library's matrix product (NumPy's BLAS; torch's, in bfloat16 as torch.optim.Muon), and a
second fused pass decays the param and steps it along the iteration's output (phase 2).

The iteration, for X with rows <= columns (a tall matrix is transposed first and after):
    X <- X / max(||X||_F, eps);   k times:  A = X X^T,  B = b A + c A A,  X <- a X + B X
"""

from __future__ import annotations

import inspect
import math
import numbers
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import _core, _device
from ._clip import check_group_options, clipped_scales
from ._monitor import norms
from ._spec import PARTS, RULES, check_one, shown
from ._stepping import (
    ABSMAX,
    NARROW,
    PRECISION_OPTIONS,
    Precision,
    check_param_precision,
    dtype_name,
    is_codes,
    next_rounding_count,
    scheduled_steps,
)
from .schedules import Schedule

RULE = PARTS["muon"]
_ADAM = RULES["adam"]
# Keller Jordan's quintic coefficients, torch.optim.Muon's default.
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")
# Fused clipping (by the gradients' norm or by value) and monitoring, as in every gdfast class
# (README "Clipping", "Clipping by value", "Monitoring"): param-group options (the classes'
# keywords are their defaults); the classes keep last_grad_norm and last_norms.
STEP_OPTIONS = ("max_grad_norm", "clip_per_group", "max_grad_value", "monitor")
# A group with use_muon=False is stepped with AdamW, as pytorch_optimizer.Muon steps it (its
# embeddings, biases, gains: any shape); the classes' adamw_* arguments are its defaults.
ADAMW_STATES = ("exp_avg", "exp_avg_sq")
_RANGES = {f.name: f.range for f in RULE.fields if f.kind == "real"}
_FIELDS = tuple(f.name for f in RULE.fields)


def options(lr: Any = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
            nesterov: bool = True,
            ns_coefficients: Tuple[float, float, float] = NS_COEFFICIENTS, eps: float = 1e-7,
            ns_steps: int = 5, adjust_lr_fn: Optional[str] = None, *, adamw_lr: float = 3e-4,
            adamw_betas: Tuple[float, float] = (0.9, 0.95), adamw_wd: float = 0.0,
            adamw_eps: float = 1e-10, max_grad_norm: Optional[float] = None,
            clip_per_group: bool = False, max_grad_value: Optional[float] = None,
            monitor: bool = False) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The classes' constructor arguments after params (torch.optim.Muon's, pytorch_optimizer's
    adamw_*, gdfast's step options) as the groups' defaults and the AdamW groups' defaults."""
    defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                    ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                    adjust_lr_fn=adjust_lr_fn, max_grad_norm=max_grad_norm,
                    clip_per_group=clip_per_group, max_grad_value=max_grad_value,
                    monitor=monitor)
    adamw = dict(adamw_lr=adamw_lr, adamw_betas=adamw_betas, adamw_wd=adamw_wd,
                 adamw_eps=adamw_eps)
    check_adamw_group(adamw_group({}, adamw), "adamw_")
    return defaults, adamw


def _check_lr(name: str, lr: Any) -> None:
    """A rate, or a schedule (gdfast.schedules: checked when it was made)."""
    if not isinstance(lr, Schedule):
        check_one(name, lr, _RANGES["lr"])


def check_group(group: Dict[str, Any], where: str = "") -> None:
    """torch.optim.Muon's checks (and eps's), raising with the option named."""
    _check_lr(where + "lr", group["lr"])
    for name in ("weight_decay", "momentum"):
        check_one(where + name, group[name], _RANGES[name])
    check_one(where + "eps", group["eps"], _RANGES["lr"])
    if not isinstance(group["nesterov"], (bool, np.bool_)):
        raise TypeError(f"{where}nesterov: expected a bool, got {shown(group['nesterov'])}")
    steps = group["ns_steps"]
    integral = isinstance(steps, numbers.Integral) and not isinstance(steps, bool)
    if not integral or not 0 <= int(steps) < 100:
        raise ValueError(f"{where}ns_steps: expected an int in [0, 100), got {shown(steps)}")
    coefficients = group["ns_coefficients"]
    if (not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3
            or not all(isinstance(c, numbers.Real) and not isinstance(c, bool)
                       and math.isfinite(c) for c in coefficients)):
        raise ValueError(f"{where}ns_coefficients: expected 3 finite numbers (a, b, c), got "
                         f"{shown(coefficients)}")
    if group["adjust_lr_fn"] not in ADJUST_LR_FNS:
        raise ValueError(f"{where}adjust_lr_fn: expected one of {ADJUST_LR_FNS}, got "
                         f"{shown(group['adjust_lr_fn'])}")


def check_step_options(group: Dict[str, Any], where: str = "") -> None:
    try:
        check_group_options(group)
    except (TypeError, ValueError) as e:
        raise type(e)(f"{where}{e}") from None


def is_muon(group: Dict[str, Any]) -> bool:
    return group.get("use_muon", True) is not False


def adamw_group(group: Dict[str, Any], adamw: Dict[str, Any]) -> Dict[str, Any]:
    """A use_muon=False group with the AdamW defaults (``adamw``: the adamw_* arguments) for
    the options it lacks."""
    return {"lr": adamw["adamw_lr"], "betas": adamw["adamw_betas"],
            "weight_decay": adamw["adamw_wd"], "eps": adamw["adamw_eps"], **group}


def _extras(step: int, grad_scale: float, sums: Optional[np.ndarray],
            bound: float = math.inf) -> Tuple[Any, ...]:
    """The hyper tuple's entries after the fields: the step, grad_scale (AMP's and clipping's
    factor, dividing the gradients), the bound of clipping by value and, monitored, the sums'
    array."""
    return (step, grad_scale, bound) if sums is None else (step, grad_scale, bound, sums)


def _bound(group: Dict[str, Any]) -> float:
    """The group's bound of clipping by value (max_grad_value; inf: none)."""
    value = group.get("max_grad_value")
    return math.inf if value is None else float(value)


def _adamw_hyper(group: Dict[str, Any], step: int, grad_scale: float = 1.0,
                 sums: Optional[np.ndarray] = None) -> Tuple[Any, ...]:
    beta1, beta2 = group["betas"]
    values = dict(group, beta1=beta1, beta2=beta2, decoupled_weight_decay=True, amsgrad=False,
                  maximize=False)
    return (tuple(values[f.name] for f in _ADAM.fields)
            + _extras(step, grad_scale, sums, _bound(group)))


def check_adamw_group(group: Dict[str, Any], where: str = "") -> None:
    betas = group["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{where}betas: expected (beta1, beta2), got {shown(betas)}")
    ranges = {f.name: f.range for f in _ADAM.fields if f.kind == "real"}
    _check_lr(where + "lr", group["lr"])
    for name, value, key in (("betas[0]", betas[0], "beta1"), ("betas[1]", betas[1], "beta2"),
                             ("eps", group["eps"], "eps"),
                             ("weight_decay", group["weight_decay"], "weight_decay")):
        check_one(where + name, value, ranges[key])


def _one_or_list(arrays: Sequence[Any]) -> Any:
    """One array as itself (messages then name it without an index), else a list."""
    return arrays[0] if len(arrays) == 1 else list(arrays)


def _stream(arrays: Any) -> Optional[int]:
    """A kernel call's stream: for CUDA tensors their framework's current one (the iteration's
    matrix products are queued there too), None on the CPU."""
    head = _device.first(arrays)
    return _device.current_stream(head) if _device.on_cuda(head) else None


class Extras(NamedTuple):
    """What a param's step takes beyond its states (the Muon classes' precision options,
    README "Lower precision"): its float32 master copy, its states' blocks' maxima (per name of
    state_names(group); None for a state that is not 8-bit), and how its narrowed stores round
    (None: to nearest; else (seed, the param's index in the optimizer, the rounding count))."""

    master: Any = None
    absmax: Tuple[Any, ...] = ()
    rounding: Optional[Tuple[int, int, Optional[int]]] = None


PLAIN = Extras()


def all_plain(extras: Optional[Sequence[Extras]]) -> bool:
    """Whether no param has extras (compared by identity: they hold arrays)."""
    return extras is None or all(e.master is None and not e.absmax and e.rounding is None
                                 for e in extras)


def _precision(master: Any, absmax: Any, rounding: Optional[Tuple[Any, ...]]) -> Any:
    """A kernel call's precision entry (masters, seed, keys, rounding count, absmax per state);
    None when it has none of them."""
    if master is None and absmax is None and rounding is None:
        return None
    seed, key, count = rounding if rounding is not None else (None, None, None)
    return (master, seed, key, count, absmax)


def _adamw_batches(extras: Sequence[Extras], params: Sequence[Any], states: Sequence[Sequence[Any]]
                   ) -> List[List[int]]:
    """An AdamW group's params split into calls of one layout each (the dtypes of the param and
    its states, 8-bit or not, a master copy or not), in order of their first param."""
    layouts: Dict[Tuple[Any, ...], List[int]] = {}
    for i, (p, e) in enumerate(zip(params, extras)):
        key = (str(p.dtype), *(str(s[i].dtype) for s in states), e.master is None)
        layouts.setdefault(key, []).append(i)
    return list(layouts.values())


def _adamw_calls(params: Sequence[Any], grads: Sequence[Any], states: Sequence[Sequence[Any]],
                 extras: Optional[Sequence[Extras]]) -> List[Tuple[Any, Any, Tuple[Any, ...], Any]]:
    """(params, grads, states, precision) of each kernel call of an AdamW group's list (each
    list of one array as the array: _one_or_list): one call when no param has extras, else one
    per layout. Rounds stochastically by the group's step (the adam rule counts steps), so no
    count."""
    if not params:
        return []
    if extras is None or all_plain(extras):
        return [(_one_or_list(params), _one_or_list(grads), tuple(map(_one_or_list, states)),
                 None)]
    calls = []
    for batch in _adamw_batches(extras, params, states):
        es = [extras[i] for i in batch]
        masters = _one_or_list([e.master for e in es]) if es[0].master is not None else None
        eight = es[0].absmax and es[0].absmax[0] is not None
        absmax = (*(_one_or_list([e.absmax[k] for e in es]) for k in range(len(ADAMW_STATES))),
                  None) if eight else None
        rounding = None if es[0].rounding is None else \
            (es[0].rounding[0], _one_or_list([e.rounding[1] for e in es if e.rounding]), None)
        calls.append((_one_or_list([params[i] for i in batch]),
                      _one_or_list([grads[i] for i in batch]),
                      tuple(_one_or_list([s[i] for i in batch]) for s in states),
                      _precision(masters, absmax, rounding)))
    return calls


def check_adamw_arrays(params: Sequence[Any], grads: Sequence[Any],
                       states: Sequence[Sequence[Any]], group: Dict[str, Any],
                       step: int, extras: Optional[Sequence[Extras]] = None) -> None:
    # (one check of every call: no array may overlap another; monitored with a scratch array,
    # so that what monitoring does not take is refused here)
    sums = np.zeros(3) if group.get("monitor", False) else None
    _core.check(_ADAM.id, [(p, (g,), (*s, None), _adamw_hyper(group, step, 1.0, sums), None, None,
                            precision)
                           for p, g, s, precision in _adamw_calls(params, grads, states, extras)],
                _stream(params))


def step_adamw(params: Sequence[Any], grads: Sequence[Any], states: Sequence[Sequence[Any]],
               group: Dict[str, Any], step: int, grad_scale: float = 1.0,
               sums: Optional[np.ndarray] = None,
               extras: Optional[Sequence[Extras]] = None) -> None:
    """AdamW over a use_muon=False group's list, in one fused pass (gdfast's adam rule; one per
    layout of the params' extras); monitored, the step adds its three sums of squares to
    ``sums``."""
    for p, g, s, precision in _adamw_calls(params, grads, states, extras):
        _core.step_one(_ADAM.id, p, (g,), (*s, None),
                       _adamw_hyper(group, step, grad_scale, sums), None, _stream(p), precision)


def check_matrix(shape: Sequence[int], where: str) -> None:
    if len(shape) != 2:
        raise ValueError(f"{where}: Muon steps 2-D params only, got shape {tuple(shape)} "
                         "(give the others to AdamW, say)")


def lr_ratio(shape: Sequence[int], adjust_lr_fn: Any) -> float:
    """torch.optim.Muon's AdjustLR factor for a param of this shape."""
    rows, cols = shape[0], shape[1]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def _hyper(group: Dict[str, Any], ratio: float, apply: bool, grad_scale: float = 1.0,
           sums: Optional[np.ndarray] = None) -> Tuple[Any, ...]:
    values = dict(group, lr_ratio=ratio, apply=apply)
    # (phase 2's input is the iteration's output, not a gradient: never clamped)
    bound = math.inf if apply else _bound(group)
    return tuple(values[name] for name in _FIELDS) + _extras(0, grad_scale, sums, bound)


def momentum_phase(x: Any, grad: Any, buffer: Any, group: Dict[str, Any],
                   grad_scale: float = 1.0, sums: Optional[np.ndarray] = None,
                   extras: Extras = PLAIN) -> None:
    """Phase 1: the momentum buffer, and x (written) the iteration's input, from the gradient
    (clamped to the group's max_grad_value, if any) divided by grad_scale; with ``sums``,
    sums[0] gets the gradient's squares (and sums[1:] x's, meaningless: x's old values are not
    the caller's)."""
    _core.step_one(RULE.id, x, (grad,), (buffer,), _hyper(group, 1.0, False, grad_scale, sums),
                   None, _stream(x), _momentum_precision(extras))


def _momentum_precision(extras: Extras) -> Any:
    """Phase 1's precision entry: the buffer's blocks' maxima, the rounding (x, which it
    writes, is float32 when rounding stochastically: see step_matrices)."""
    absmax = extras.absmax[0] if extras.absmax else None
    return _precision(None, None if absmax is None else (absmax,), extras.rounding)


def apply_phase(param: Any, update: Any, group: Dict[str, Any],
                sums: Optional[np.ndarray] = None, extras: Extras = PLAIN) -> None:
    """Phase 2: the param (from its master copy, if any) decayed and stepped along the
    iteration's output; with ``sums``, sums[1] and sums[2] get the squares of the param's
    change and of the new param."""
    ratio = lr_ratio(param.shape, group["adjust_lr_fn"])
    _core.step_one(RULE.id, param, (update,), (None,), _hyper(group, ratio, True, 1.0, sums),
                   None, _stream(param), _precision(extras.master, None, extras.rounding))


def newton_schulz_numpy(x: np.ndarray, group: Dict[str, Any]) -> np.ndarray:
    """The iteration in x's dtype (float32 or float64) through NumPy's matmul (its BLAS), in
    place on x; returns x."""
    a, b, c = (float(v) for v in group["ns_coefficients"])
    work = x.T if x.shape[0] > x.shape[1] else x  # (a view: BLAS reads it transposed)
    norm = math.sqrt(_core.sum_squares(x, "update")[0])
    np.divide(work, max(norm, float(group["eps"])), out=work)
    rows = work.shape[0]
    gram = np.empty((rows, rows), work.dtype)
    poly = np.empty_like(gram)
    product = np.empty(work.shape, work.dtype)
    for _ in range(group["ns_steps"]):
        np.matmul(work, work.T, out=gram)
        np.matmul(gram, gram, out=poly)
        poly *= c
        gram *= b
        poly += gram
        np.matmul(poly, work, out=product)
        work *= a
        work += product
    return x


def numpy_input(param: np.ndarray, wide: bool = False) -> np.ndarray:
    """The iteration's input for a NumPy param, in the dtype the iteration computes in: the
    param's (float32 or float64), float32 for a bfloat16 or float16 one (NumPy has no matrix
    product of those); ``wide`` changes nothing."""
    narrow = dtype_name(param.dtype) in NARROW
    return np.empty(param.shape, np.float32) if narrow else np.empty_like(param)


def as_list(value: Any) -> List[Any]:
    return list(value) if isinstance(value, (list, tuple)) else [value]


def check_arrays(params: Sequence[Any], grads: Sequence[Any], buffers: Sequence[Any],
                 group: Dict[str, Any], extras: Optional[Sequence[Extras]] = None,
                 monitored: bool = False) -> None:
    """Everything the two phases would check, before either runs: shapes, dtypes, contiguity,
    writeable param and buffer, no array sharing memory with another; with extras, each
    param's phase 1 with its blocks' maxima and rounding (all in one check), and its phase 2
    with its master copy. ``monitored``: for a monitored step (on CUDA, of float64 params
    only: the other params' passes read and write narrow arrays)."""
    if not len(params) == len(grads) == len(buffers):
        raise ValueError(f"param, grad, momentum_buffer: expected lists of one length, got "
                         f"{len(params)}, {len(grads)}, {len(buffers)}")
    for i, param in enumerate(params):
        who = f"param[{i}]" if len(params) > 1 else "param"
        check_matrix(param.shape, who)
        if monitored and _device.on_cuda(param) and dtype_name(param.dtype) != "float64":
            raise ValueError(f"{who}: monitor: on CUDA, Muon's passes write and read the "
                             "iteration's bfloat16 arrays, which monitoring takes on the CPU "
                             "only (on CUDA: float64 params)")
    stream = _stream(params)
    if params and all_plain(extras):
        _core.check_one(RULE.id, _one_or_list(params), (_one_or_list(grads),),
                        (_one_or_list(buffers),), _hyper(group, 1.0, False), None, stream, None)
        return
    # (phase 1 of each, the param in x's place, checked together: no array may overlap another)
    _core.check(RULE.id, [
        (param, (grad,), (buffer,), _hyper(group, 1.0, False), f"param[{k}]: ", None,
         _momentum_precision(e)) for k, (param, grad, buffer, e)
        in enumerate(zip(params, grads, buffers, extras or ()))], stream)
    for k, (param, grad, e) in enumerate(zip(params, grads, extras or ())):
        if e.master is not None:  # (phase 2; the grad in the iteration's output's place)
            _core.check_one(RULE.id, param, (grad,), (None,), _hyper(group, 1.0, True), None,
                            stream, _precision(e.master, None, e.rounding))


def step_matrices(params: Sequence[Any], grads: Sequence[Any], buffers: Sequence[Any],
                  group: Dict[str, Any], new_input: Callable[..., Any],
                  newton_schulz: Callable[[Any, Dict[str, Any]], Any], grad_scale: float = 1.0,
                  sums: Optional[np.ndarray] = None,
                  extras: Optional[Sequence[Extras]] = None) -> None:
    """One Muon step of each (param, grad, momentum buffer[, extras]): phase 1 into a new array
    (new_input(param); new_input(param, True) for a float32 one where stores round
    stochastically, so that the iteration rounds its input to nearest, as torch does), the
    iteration, phase 2. Monitored, ``sums`` gets the squares of the gradients, of the params'
    changes and of the new params (monitoring's three sums)."""
    phase = None if sums is None else np.zeros(3)
    for k, (param, grad, buffer) in enumerate(zip(params, grads, buffers)):
        if math.prod(param.shape) == 0:
            continue  # (nothing to step; its shape's lr factor may divide by zero)
        e = extras[k] if extras is not None else PLAIN
        x = new_input(param) if e.rounding is None else new_input(param, True)
        momentum_phase(x, grad, buffer, group, grad_scale, phase, e)
        if sums is not None and phase is not None:
            sums[0] += phase[0]
            phase[:] = 0.0
        apply_phase(param, newton_schulz(x, group), group, phase, e)
        if sums is not None and phase is not None:
            sums[1:] += phase[1:]
            phase[:] = 0.0


def check_param(dtype: Any, size: int, precision: Precision, who: str) -> None:
    """A param's dtype against its group's precision options (check_param_precision's checks,
    and 8-bit states only for float32, bfloat16 and float16 params); ValueError naming it."""
    check_param_precision(dtype, precision, who)
    if precision.bits8 and size >= precision.min_8bit_size \
            and dtype_name(dtype) not in ("float32", *NARROW):
        raise ValueError(f"{who}: optim_bits=8 is for float32, bfloat16 and float16 params, "
                         f"got a {dtype_name(dtype)} param")


def rounding_count(groups: Sequence[Dict[str, Any]]) -> Optional[int]:
    """The optimizer's count of stochastically rounded steps after this one, which keys the
    Muon phases' rounding besides the seed (they count no steps; an AdamW group's rounding is
    keyed by its step), kept in every group as ``rounding_step`` as in the other classes; None
    when no group rounds stochastically."""
    if not any(bool(g.get("stochastic_rounding")) for g in groups):
        return None
    return next_rounding_count(groups)


def new_state_dtype(dtype: Any, size: int, precision: Precision, float32: Any) -> Any:
    """The dtype of a param's new states as its group's precision options make them: None for
    8-bit codes (optim_bits=8 and min_8bit_size elements or more), else state_dtype (float32
    with master weights or optim_bits=8; else, and always for a float64 param, the param's
    dtype, as torch). ``float32``: the front end's float32 dtype."""
    if dtype_name(dtype) == "float64":
        return dtype
    if precision.bits8 and size >= precision.min_8bit_size:
        return None
    return precision.state_dtype or (float32 if precision.master or precision.bits8 else dtype)


def param_extras(state: Dict[str, Any], names: Sequence[str], param: Any, narrow: bool,
                 precision: Precision, rounding: Optional[Tuple[Any, int, Optional[int]]],
                 new_master: Callable[[Any], Any], where: str) -> Tuple[Dict[str, Any], Extras]:
    """A param's state with the master copy master_weights asks for (made if missing: a loaded
    torch.optim.Muon state, or the option turned on later), and its Extras; ValueError naming
    it for a master kept with master_weights=False (the step would leave it stale)."""
    if precision.master and narrow and "master_param" not in state:
        state = {**state, "master_param": new_master(param)}
    elif not precision.master and state.get("master_param") is not None:
        raise ValueError(f"{where}: state['master_param']: a master copy is kept, but "
                         "master_weights=False would step the param without it (and leave it "
                         "stale): set master_weights=True, or delete it")
    eight = any(is_codes(state[name]) for name in names)
    return state, Extras(state.get("master_param") if narrow else None,
                         tuple(state.get(name + ABSMAX) for name in names) if eight else (),
                         rounding if precision.stochastic else None)


def with_scheduled_lr(options: Dict[str, Any], where: str) -> Dict[str, Any]:
    """A group's options for the step to be taken: a schedule's lr as its value at the steps
    the group has taken (``lr_step``, README "Learning-rate schedules"), in double; ValueError
    naming a bad lr_step."""
    lr = options.get("lr")
    if isinstance(lr, Schedule):
        try:
            options["lr"] = lr(scheduled_steps(options))
        except ValueError as e:
            raise ValueError(f"{where}{e}") from None
    return options


def state_names(group: Dict[str, Any]) -> Tuple[str, ...]:
    """The states a group's params keep: Muon's buffer, or an AdamW group's moments."""
    return ("momentum_buffer",) if is_muon(group) else ADAMW_STATES


class GroupStep(NamedTuple):
    """One param group's part of a class's step, checked before any group is stepped."""

    group: Dict[str, Any]  # the group itself (an AdamW group's step count is written to it)
    options: Dict[str, Any]  # its options, as host values
    params: List[Any]  # those with a gradient
    grads: List[Any]
    states: List[List[Any]]  # per name of state_names(group), one array per param
    step: int  # an AdamW group's step count after this step
    extras: Optional[List[Extras]] = None  # per param (None: none has any)

    @classmethod
    def checked(cls, group: Dict[str, Any], options: Dict[str, Any], params: List[Any],
                grads: List[Any], states: List[List[Any]],
                extras: Optional[List[Extras]] = None) -> "GroupStep":
        """Everything the group's kernels would check, checked."""
        step = int(options.get("step", 0)) + 1
        if is_muon(group):
            check_arrays(params, grads, states[0], options, extras,
                         bool(options.get("monitor", False)))
        else:
            check_adamw_arrays(params, grads, states, options, step, extras)
        return cls(group, options, params, grads, states, step, extras)


def run_groups(work: Sequence[GroupStep], new_input: Callable[..., Any],
               newton_schulz: Callable[[Any, Dict[str, Any]], Any]
               ) -> Tuple[Optional[float], Optional[Dict[str, float]]]:
    """A class's step of every group (Muon's with new_input and newton_schulz, as
    step_matrices): each group's gradients clipped as its options say, the monitored groups'
    norms summed. Returns the norm the clipped groups share (last_grad_norm) and the norms
    (last_norms; None where no group is monitored)."""
    scales, shared = clipped_scales(
        [(w.options, w.grads, bool(w.params) and str(w.params[0].dtype).endswith("float64"))
         for w in work], 1.0)
    monitored = any(w.options.get("monitor", False) for w in work)
    sums = np.zeros(3) if monitored else None
    for w, grad_scale in zip(work, scales or [1.0] * len(work)):
        group_sums = sums if w.options.get("monitor", False) else None
        if is_muon(w.group):
            step_matrices(w.params, w.grads, w.states[0], w.options, new_input, newton_schulz,
                          grad_scale, group_sums, w.extras)
        else:
            w.group["step"] = w.step
            step_adamw(w.params, w.grads, w.states, w.options, w.step, grad_scale, group_sums,
                       w.extras)
    return shared, None if sums is None else norms(sums, 1.0)


# A group with every default (the phases' and the iteration's options).
DEFAULTS: Dict[str, Any] = options()[0]
# (self, params, <options' arguments>, <precision options>): the signature both classes'
# __init__ show.
INIT_SIGNATURE = inspect.signature(options).replace(parameters=[
    inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in ("self", "params")
] + list(inspect.signature(options).parameters.values()) + [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default)
    for name, default in PRECISION_OPTIONS.items()], return_annotation=None)
