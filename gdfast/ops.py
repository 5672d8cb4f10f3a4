"""Functional optimizer steps, in place, one fused pass: ``gdfast.ops.<name>_`` for every
optimizer of the registry (``sgd_``, ``adam_``, ``lion_``, ``rmsprop_``, ``adagrad_``,
``adadelta_``, ``adamax_``, ``nadam_``, ``radam_``, ``asgd_``, ``rprop_``, ``adan_``,
``ademamix_``, ``schedulefree_adamw_``, ``sophia_``, ``lamb_``), and ``muon_`` (Muon's step,
composed around its Newton-Schulz iteration: see its docstring).

Every op has the same shape::

    <name>_(param, grad, <states by torch name>, *, step, <hyperparameters>,
            <scalar states>, <tuples>, grad_scale=1.0, found_inf=None)

States are positional or keyword, in the order ``help(op)`` lists them; one the options do not
use may be left out (``max_exp_avg_sq`` without ``amsgrad``). ``step`` is the 1-based count
after this update (accepted, and ignored, by the rules that keep no count, such as Lion).
Rules with per-parameter scalar states (NAdam's ``mu_product``, ASGD's ``eta`` and ``mu``) take
their current values as keywords and return a dict of the values after the step; every other op
returns None. With ``monitor=True`` an op returns a dict with ``grad_norm``, ``update_norm`` and
``param_norm`` too, summed in the step's own pass (on CUDA: float32/float64 arrays, and
LAMB's narrow ones too; the call waits for the sums). The classes' pair arguments are
accepted as well as the two hyperparameters they hold: ``betas=(0.9, 0.999)`` for
``beta1``/``beta2`` (Rprop: ``etas``, ``step_sizes``).

Every tensor argument is either one array or a list/tuple of arrays (one per tensor, all
lists the same length); a list is stepped in a single call with a single parallel region.
Arrays are NumPy arrays or any DLPack tensor (torch.Tensor, ...; zero copy), C-contiguous
float32 or float64, param and states writeable, all arrays of one call the same dtype. A
rejected call raises before any array is written.

``grad_scale`` (default 1) divides the gradients inside the fused pass: pass the AMP loss
scale to unscale there instead of in a separate pass over the gradients. ``found_inf`` (a
number or 1-element tensor) skips the step when nonzero, after checking every argument as a
step would. ``max_grad_norm`` (default None) clips the gradients by their global L2 norm over
the call's list, as ``torch.nn.utils.clip_grad_norm_`` would before the step: one pass reads
the gradients for the norm, and the clip factor is folded into the update (on CUDA the norm
is read back to the host, as is a device ``grad_scale``).
``max_grad_value`` (default None) clamps each gradient to [-max_grad_value, max_grad_value]
as the kernel loads it, as ``torch.nn.utils.clip_grad_value_`` would before the step (not
with ``max_grad_norm``).

CUDA tensors (builds with CUDA kernels) run on their framework's current stream; there
``grad_scale``, ``found_inf``, ``lr`` and ``step`` may be 1-element float32 tensors on the
device, read by the kernel itself (no host synchronisation; capturable in a CUDA graph). Three
things synchronise: ``max_grad_norm`` (the norm, and a device ``grad_scale``, are read back),
``monitor=True`` (the sums come back) and LAMB (its tensors' sums; it takes numbers only).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import _core, _device, _muon
from ._clip import check_max_value, clipped_call_scale
from ._monitor import monitor_sums, skipped_norms, step_norms
from ._spec import RULES, Rule, check_one, checker
from ._stepping import expected_tuple, tuple_arguments

Tensors = Union[np.ndarray, Sequence[np.ndarray]]

# Only CUDA builds and calls with found_inf take the device path (see _device.prepare).
_CUDA = bool(_core.cuda_compiled)


def _route(param: Any, grad_scale: Any, found_inf: Any, lr: Any, step: Any) -> Any:
    """(skip, stream, device_scalars, grad_scale, lr, step) for the kernel call; skip is True
    when found_inf says not to step (after every argument is checked all the same)."""
    if found_inf is None and isinstance(_device.first(param), np.ndarray):
        return False, None, None, grad_scale, lr, step
    skip, *routed = _device.prepare(param, grad_scale, found_inf, lr, step)
    return (skip is _device.SKIP, *routed)


def _unpack(key: str, values: Any, given: Tuple[Any, ...], rule: Rule,
            names: Tuple[str, ...]) -> Tuple[Any, ...]:
    """The values of a tuple argument (betas=(beta1, beta2)), checked and named as given."""
    if not isinstance(values, (tuple, list)) or len(values) != len(names):
        raise (ValueError if isinstance(values, (tuple, list)) else TypeError)(
            f"{key}: {expected_tuple(names)}, got {values!r}")
    fields = {f.name: f for f in rule.options}
    if given != tuple(fields[n].default for n in names):
        raise ValueError(f"{key}: pass either {key} or {'/'.join(names)}, not both")
    for i, (name, value) in enumerate(zip(names, values)):
        check_one(f"{key}[{i}]", value, fields[name].range)
    return tuple(values)


def _absmax(absmax: Any, rule: Rule) -> Any:
    """The kernel's per-state absmax tuple from a ``{state name: absmax}`` mapping."""
    if absmax is None:
        return None
    if not isinstance(absmax, dict):
        raise TypeError(f"absmax: expected a dict of state name to its blocks' absmax, got "
                        f"{type(absmax).__name__}")
    unknown = sorted(set(absmax) - set(rule.state_names), key=str)
    if unknown:
        raise ValueError(f"absmax: {unknown[0]!r} is not a state of {rule.name} "
                         f"({', '.join(rule.state_names)})")
    return tuple(absmax.get(name) for name in rule.state_names)


def _precision(master_param: Any, stochastic_rounding: Any, seed: Any, param_index: Any,
               step: Any, absmax: Any, rule: Rule) -> Tuple[Any, Any, Any, Any, Any]:
    """The kernel's precision argument: (master, seed or None, keys, count, absmax). Every
    argument is checked whether or not it is used (the kernel checks param_index)."""
    if type(stochastic_rounding) is not bool:
        raise TypeError(f"stochastic_rounding: expected a bool, got {stochastic_rounding!r}")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise TypeError(f"seed: expected an int, got {type(seed).__name__}")
    if not 0 <= int(seed) < 2**64:
        raise ValueError(f"seed: expected an int in [0, 2**64), got {seed}")
    per_state = _absmax(absmax, rule)
    if not stochastic_rounding:
        return master_param, None, param_index, None, per_state
    if step is None:
        raise ValueError("step: required with stochastic_rounding=True (it keys the rounding)")
    return master_param, int(seed), param_index, _device.host_step(step), per_state


def _docstring(rule: Rule) -> str:
    uses_step = rule.step != "none"
    lines = [f"{rule.summary}: one step, in place.", ""]
    lines.append("States (torch's names): " + ", ".join(
        s.name + (f" (when {s.when})" if s.when else "") for s in rule.states) + ".")
    lines.append("Hyperparameters: " + ", ".join(
        f"{f.name}={f.default!r}" + (f" ({f.range.describe()})" if f.kind == "real" else "")
        for f in rule.options) + ".")
    if rule.scalar_states:
        lines.append("Scalar states (the values before this step; returned after it): " +
                     ", ".join(f"{f.name} (starts at {f.start_from or repr(f.default)})"
                               for f in rule.scalar_states) + ".")
    lines.append("step: the 1-based count after this update." if uses_step else
                 "step: this rule keeps no count; needed only with stochastic_rounding.")
    lines.append("Lower precision: bfloat16/float16 params, grads and states are widened to "
                 "float32 and rounded back to nearest; master_param (float32, with a bfloat16/"
                 "float16 param) is stepped instead and the param written from it; "
                 "stochastic_rounding=True rounds the narrow stores stochastically, keyed by "
                 "seed, step and param_index (default: position in the list).")
    lines.append("8-bit states: pass a state as uint8 codes and absmax={name: its blocks' "
                 "float32 absmax, one per 256 elements} (README \"8-bit states\").")
    lines.append("max_grad_norm: clip the grads by their L2 norm over the call (as "
                 "torch.nn.utils.clip_grad_norm_ before the step), fused into it.")
    lines.append("max_grad_value: clamp each grad to [-max_grad_value, max_grad_value] (as "
                 "torch.nn.utils.clip_grad_value_ before the step), as the step loads it.")
    lines.append("monitor=True: return a dict with grad_norm, update_norm and param_norm, the "
                 "L2 norms over the call summed in the step's own pass (README \"Monitoring\"), "
                 "and the scalar states if the rule has any.")
    return "\n".join(lines)


def _make_op(rule: Rule) -> Callable[..., Optional[Dict[str, float]]]:
    """The op of one rule, generated so that its signature is a plain Python one (keyword
    parsing by the interpreter, the all-valid range check one chained compare)."""
    assert any(f.name == "lr" for f in rule.options), "ops route on lr"
    uses_step = rule.step != "none"
    inputs = ", ".join(rule.inputs)
    states = ", ".join(rule.state_names)
    fields = ", ".join(f.name for f in rule.fields)
    options = ", ".join(f"{f.name}={f.default!r}" for f in rule.options)
    scalars = "".join(
        f", {f.name}=None" if f.start_from else f", {f.name}={f.default!r}"
        for f in rule.scalar_states)
    scalar_names = tuple(f.name for f in rule.scalar_states)
    # The classes' tuple arguments (betas=(beta1, beta2), ...) are accepted here too.
    tuples = tuple_arguments(rule.reals)
    aliases = "".join(f", {key}=None" for key, _ in tuples)
    body = [f"    if {key} is not None:\n"
            f"        {', '.join(names)}, = _unpack({key!r}, {key}, ({', '.join(names)},), "
            f"_rule, {names!r})"
            for key, names in tuples]
    if rule.step == "first_call":  # the option set depends on step: it must be on the host
        body.append("    if type(step) is not int:\n"
                    "        step = _host_step(step)")
    skipped = (f"dict({', '.join(f'{n}={n}' for n in scalar_names)})" if scalar_names
               else "None")
    body.append(
        "    if found_inf is None and not _CUDA:\n"
        "        stream = scalars = None\n"
        "        skip = False\n"
        "    else:\n"
        "        skip, stream, scalars, grad_scale, lr, step = "
        "_route(param, grad_scale, found_inf, lr, step)")
    for f in rule.scalar_states:
        if f.start_from:
            body.append(f"    if {f.name} is None:\n        {f.name} = {f.start_from}")
    checked = [*rule.reals, *scalar_names, "grad_scale"]
    body.append(f"    _check({'step, ' if uses_step else ''}{', '.join(checked)})")
    body.append("    if max_grad_value is None:\n"
                "        grad_bound = _INF\n"
                "    else:\n"
                "        grad_bound = _check_value(max_grad_value, max_grad_norm)")
    body.append("    sums = None if monitor is False else _monitor_sums(monitor)")
    step_arg = "step" if uses_step else "0"
    arguments = (f"{rule.id}, param, ({inputs},), ({states},), "
                 f"({fields}, {step_arg}, grad_scale, grad_bound, sums), scalars, stream")
    body.append("    if (master_param is None and stochastic_rounding is False"
                " and param_index is None and type(seed) is int and seed == 0"
                " and absmax is None):\n"
                "        precision = None\n"
                "    else:\n"
                "        precision = _precision(master_param, stochastic_rounding, seed,"
                " param_index, step, absmax, _rule)")
    arguments += ", precision"
    call = f"_step({arguments})"
    # A skipped step (found_inf) accepts exactly what a taken one would: all checked, none run.
    body.append(f"    if skip:\n        _check_arrays({arguments})\n"
                f"        return _skipped_norms({skipped}) if monitor else {skipped}")
    body.append("    unscale = grad_scale if scalars is None or scalars[0] is None else scalars[0]")
    body.append(f"    if max_grad_norm is not None:\n"
                f"        grad_scale, scalars = _clip({rule.inputs[0]}, max_grad_norm, grad_scale,"
                f" scalars)")
    if scalar_names:
        body.append(f"    out = dict(zip({scalar_names!r}, {call}[0]))")
    else:
        body.append(f"    out = {call}")
    body.append("    return _norms(out, sums, unscale) if monitor else out")
    step_kw = "step" if uses_step else "step=None"
    source = (f"def {rule.name}_(param, {inputs}, "
              f"{', '.join(n + '=None' for n in rule.state_names)}, *, {step_kw}, {options}"
              f"{scalars}{aliases}, grad_scale=1.0, found_inf=None, master_param=None, "
              f"stochastic_rounding=False, seed=0, param_index=None, absmax=None, "
              f"max_grad_norm=None, max_grad_value=None, monitor=False):\n"
              + "\n".join(body) + "\n")
    namespace: Dict[str, Any] = {"_CUDA": _CUDA, "_route": _route, "_step": _core.step_one,
                                 "_check_arrays": _core.check_one, "_unpack": _unpack,
                                 "_rule": rule,
                                 "_precision": _precision, "_clip": clipped_call_scale,
                                 "_check_value": check_max_value, "_INF": float("inf"),
                                 "_monitor_sums": monitor_sums, "_norms": step_norms,
                                 "_skipped_norms": skipped_norms,
                                 "_host_step": _device.host_step,
                                 "_check": checker(rule, uses_step, with_scalars=True)}
    exec(compile(source, f"<gdfast.ops.{rule.name}_>", "exec"), namespace)
    op = namespace[f"{rule.name}_"]
    op.__module__ = __name__
    op.__doc__ = _docstring(rule)
    return op  # type: ignore[no-any-return]


__all__: List[str] = []
for _rule in RULES.values():
    globals()[f"{_rule.name}_"] = _make_op(_rule)
    __all__.append(f"{_rule.name}_")
del _rule


def muon_(param: Tensors, grad: Tensors, momentum_buffer: Tensors, *, lr: float = 1e-3,
          weight_decay: float = 0.1, momentum: float = 0.95, nesterov: bool = True,
          ns_coefficients: Tuple[float, float, float] = _muon.NS_COEFFICIENTS,
          eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: Optional[str] = None,
          max_grad_norm: Optional[float] = None, max_grad_value: Optional[float] = None,
          monitor: bool = False, master_param: Optional[Tensors] = None,
          stochastic_rounding: bool = False, seed: int = 0, param_index: Any = None,
          step: Optional[int] = None, absmax: Optional[Dict[str, Any]] = None
          ) -> Optional[Dict[str, float]]:
    """One Muon step (torch.optim.Muon's) of 2-D params, in place: the momentum and the
    Newton-Schulz iteration's input in one fused pass, the iteration on the arrays' library
    matrix product (NumPy arrays: in their dtype, float32 or float64, and in float32 for
    bfloat16 and float16 ones; torch tensors: in bfloat16, as torch.optim.Muon, on their
    device), then the decay and the step in one more fused pass.
    ``momentum_buffer`` starts at zeros. ``max_grad_norm``, ``max_grad_value`` and ``monitor``
    as in the other ops (the clip factor folded into the first pass, which also clamps; the
    norms returned as a dict). Lower precision as in the other ops: ``master_param`` (float32
    copies of bfloat16/float16 params, stepped, the params written from them),
    ``stochastic_rounding`` keyed by ``seed``, ``step`` (Muon keeps no count: required with
    it) and ``param_index``, and an 8-bit buffer as uint8 codes with
    ``absmax={"momentum_buffer": ...}``. Everything is checked before any array is written."""
    group = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                 ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps,
                 adjust_lr_fn=adjust_lr_fn,
                 max_grad_value=check_max_value(max_grad_value, max_grad_norm))
    _muon.check_group(group)
    params, grads, buffers = (_muon.as_list(a) for a in (param, grad, momentum_buffer))
    on_torch = any(type(p).__module__.split(".")[0] == "torch" for p in params)
    if not on_torch and not all(isinstance(p, np.ndarray) for p in params):
        raise TypeError("param: expected NumPy arrays or torch tensors (the iteration needs "
                        "their library's matrix product)")
    sums = monitor_sums(monitor)
    extras = _muon_extras(len(params), _precision(master_param, stochastic_rounding, seed,
                                                  param_index, step, absmax, _muon.RULE))
    _muon.check_arrays(params, grads, buffers, group, extras, sums is not None)
    grad_scale, _ = clipped_call_scale(grads, max_grad_norm, 1.0)
    if on_torch:
        from ._muon_torch import new_input, newton_schulz_bfloat16
        _muon.step_matrices(params, grads, buffers, group, new_input, newton_schulz_bfloat16,
                            grad_scale, sums, extras)
    else:
        _muon.step_matrices(params, grads, buffers, group, _muon.numpy_input,
                            _muon.newton_schulz_numpy, grad_scale, sums, extras)
    return None if sums is None else step_norms(None, sums, 1.0)


def _muon_extras(n: int, precision: Tuple[Any, ...]) -> Optional[List[Any]]:
    """Each of n params' _muon.Extras from the ops' precision entry (_precision's: master,
    seed, keys, count, absmax per state); None when it has none."""
    master, seed, keys, count, per_state = precision
    buffer_absmax = None if per_state is None else per_state[0]
    if master is None and seed is None and buffer_absmax is None:
        return None
    lists = {}
    for name, value in (("master_param", master), ("absmax['momentum_buffer']", buffer_absmax),
                        ("param_index", keys)):
        lists[name] = [None] * n if value is None else _muon.as_list(value)
        if len(lists[name]) != n:
            raise ValueError(f"{name}: expected {n} entries (one per param), got "
                             f"{len(lists[name])}")
    return [_muon.Extras(m, () if a is None else (a,),
                         None if seed is None else (seed, k if key is None else key, count))
            for k, (m, a, key) in enumerate(zip(*lists.values()))]


__all__.append("muon_")


def __getattr__(name: str) -> Callable[..., Optional[Dict[str, float]]]:
    """For static checkers: the ops above are made at import, one per registered rule."""
    raise AttributeError(f"module 'gdfast.ops' has no attribute {name!r}")
