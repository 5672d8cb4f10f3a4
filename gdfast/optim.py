"""Stateful optimizers over NumPy arrays, with torch.optim's constructors and state layout:
``gdfast.SGD``, ``Adam``, ``AdamW``, ``Lion``, ``RMSprop``, ``Adagrad``, ``Adadelta``,
``Adamax``, ``NAdam``, ``RAdam``, ``ASGD``, ``Rprop``; ``Adan``, ``AdEMAMix``,
``ScheduleFreeAdamW``, ``SophiaH`` and ``Lamb`` with pytorch_optimizer's; ``Muon`` (its own
class: a matrix method, see gdfast/_muon.py).

    opt = gdfast.AdamW(params, lr=1e-3)      # params: arrays, or dicts {"params": [...], ...}
    opt.step(grads)                          # grads in the order of the params; None skips

Each step checks every group and gradient first, then steps all groups in one kernel call
(one batch per group, storage signature and step count, which are normally all the same).

Params may be float32, float64, bfloat16 (``ml_dtypes.bfloat16``) or float16; a grad has its
param's dtype. The precision options (``state_dtype``, ``master_weights``,
``stochastic_rounding``, ``seed``) work as in gdfast.torch; ``state_dtype`` takes a NumPy dtype
or its name (``"bfloat16"``).
"""

from __future__ import annotations

import bisect
import copy
from typing import Any, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import (
    _constructors,  # noqa: F401  (registers the constructors)
    _muon,
)
from ._sophia import estimate_list
from ._spec import State
from ._stepping import (
    ABSMAX,
    CONSTRUCTORS,
    COUNT_EXPECTED,
    DEFAULT_PRECISION,
    EIGHT_BIT,
    GDFAST_OPTIONS,
    NARROW,
    PRECISION_OPTIONS,
    SCALAR_EXPECTED,
    SEED_LIMIT,
    Precision,
    StepPath,
    absmax_size,
    advance_schedules,
    check_param_precision,
    check_precision,
    count_value,
    dtype_name,
    eight_bit_constructors,
    is_codes,
    is_dtype,
    is_tensor,
    kept_dtype,
    make_class,
    scalar_state_value,
)

__all__ = ["Optimizer"] + list(CONSTRUCTORS) + ["Muon"] + list(EIGHT_BIT)

ParamGroup = Dict[str, Any]

# The dtypes a param may have (bfloat16: ml_dtypes's, which NumPy knows once it is imported).
_PARAM_DTYPES = frozenset(("float32", "float64", "bfloat16", "float16"))
_STATE_DTYPES = ("float32", "bfloat16", "float16")


def _bfloat16() -> np.dtype:
    try:
        import ml_dtypes
    except ImportError:  # (not a dependency: only bfloat16 needs it)
        raise TypeError("state_dtype: bfloat16 needs the ml_dtypes package (pip install "
                        "ml_dtypes), whose bfloat16 NumPy arrays gdfast steps") from None
    return np.dtype(ml_dtypes.bfloat16)  # type: ignore[no-any-return]


def _numpy_state_dtype(value: Any) -> Any:
    """A state_dtype option as a NumPy dtype; TypeError naming it otherwise."""
    expected = ("state_dtype: expected None or float32, bfloat16 or float16 (a NumPy "
                "dtype or its name)")
    if is_dtype(value) and not isinstance(value, np.dtype):  # torch's (a torch state_dict)
        value = dtype_name(value)
    if isinstance(value, str) and value == "bfloat16":
        return _bfloat16()
    try:
        dtype = np.dtype(value)
    except TypeError:
        raise TypeError(f"{expected}, got {value!r}") from None
    if dtype_name(dtype) not in _STATE_DTYPES or not dtype.isnative:
        raise TypeError(f"{expected}, got {dtype}")
    return dtype


def _float32_copy(param: np.ndarray) -> np.ndarray:
    """A master copy (exact: float32 holds every bfloat16 and float16)."""
    return param.astype(np.float32)


def _check_param(p: Any, where: str) -> np.ndarray:
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{where}: expected a numpy.ndarray, got {type(p).__name__}")
    if dtype_name(p.dtype) not in _PARAM_DTYPES or not p.dtype.isnative:
        raise TypeError(f"{where}: expected float32 or float64 (or bfloat16, float16), "
                        f"got {p.dtype}")
    if not p.flags.c_contiguous:
        raise ValueError(f"{where}: must be C-contiguous")
    if not p.flags.aligned:
        raise ValueError(f"{where}: must be aligned to its element size (make an aligned copy, "
                         "e.g. numpy.require(a, requirements='CA'), and keep that copy)")
    if not p.flags.writeable:
        raise ValueError(f"{where}: is read-only, but it is updated in place")
    return p


def _check_grad(g: Any, p: np.ndarray, where: str) -> None:
    """The checks the kernel would make, with the gradient's index in ``grads`` in the message."""
    if not isinstance(g, np.ndarray):
        raise TypeError(f"{where}: expected a numpy.ndarray, got {type(g).__name__}")
    if g.dtype != p.dtype:
        raise TypeError(f"{where}: expected {p.dtype} like its param, got {g.dtype}")
    if g.shape != p.shape:
        raise ValueError(f"{where}: shape {g.shape} does not match its param's {p.shape}")
    if not (g.flags.c_contiguous and g.flags.aligned):
        raise ValueError(f"{where}: must be C-contiguous and aligned")
    if np.may_share_memory(g, p):
        raise ValueError(f"{where}: shares memory with its param")


def _param_groups(params: Any) -> List[Any]:
    """A constructor's params (an array, a list of arrays, or of group dicts) as groups."""
    try:
        groups: List[Any] = list(params) if not isinstance(params, np.ndarray) else [params]
    except TypeError:
        raise TypeError("params: expected an array, a list of arrays or a list of param "
                        f"group dicts, got {type(params).__name__}") from None
    if not groups:
        raise ValueError("params: optimizer got an empty parameter list")
    return groups if isinstance(groups[0], dict) else [{"params": groups}]


class Optimizer(StepPath):
    """Base: param groups, per-parameter state, state_dict round trip.

    ``state`` maps a parameter's index (in the order of all groups' params) to its dict of
    state arrays and counters, as torch's state_dict does."""

    _float32 = np.dtype(np.float32)
    _uint8 = np.dtype(np.uint8)

    def __init__(self, params: Iterable[Any], *args: Any, **kwargs: Any) -> None:
        defaults = self._ctor.defaults(args, kwargs)
        for flag in ("capturable", "differentiable"):
            if defaults.get(flag):
                raise ValueError(f"{flag}=True: not available for NumPy arrays (see "
                                 "gdfast.torch for torch tensors)")
        self._batch_cache, self._checked_cache = {}, {}
        self._with_precision(defaults)  # (checked with each group, as the hyperparameters)
        self.defaults = defaults
        self.param_groups: List[ParamGroup] = []
        self.state: Dict[int, Dict[str, Any]] = {}
        for group in _param_groups(params):
            self.add_param_group(group)

    # -- groups ------------------------------------------------------------------------------
    def add_param_group(self, param_group: ParamGroup) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("param_group: has no 'params' entry")
        where = f"param_groups[{len(self.param_groups)}]['params']"
        try:
            params = [params] if isinstance(params, np.ndarray) else list(params)
        except TypeError:
            raise TypeError(f"{where}: expected an array or a list of arrays, got "
                            f"{type(params).__name__}") from None
        for i, p in enumerate(params):
            _check_param(p, f"{where}[{i}]")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if id(p) in seen:
                raise ValueError(f"{where}[{i}]: appears in more than one place")
            seen.add(id(p))
        self._check_no_overlap(params, where)
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._with_precision(group)
        _, _, precision = self._checked_group(group, f"param_groups[{len(self.param_groups)}]: ")
        for i, p in enumerate(params):
            check_param_precision(p.dtype, precision, f"{where}[{i}]")
        self.param_groups.append(group)

    def _with_precision(self, group: ParamGroup) -> None:
        """A new group's state_dtype as a NumPy dtype, and a seed drawn for stochastic rounding
        if it has none (the checks that follow name a bad one)."""
        if group.get("state_dtype") is not None:
            try:
                group["state_dtype"] = self._state_dtype(group["state_dtype"])
            except TypeError:
                pass  # (named by the group check)
        stochastic = group.get("stochastic_rounding")
        if isinstance(stochastic, (bool, np.bool_)) and stochastic and group.get("seed") is None:
            group["seed"] = self._draw_seed()

    def _check_no_overlap(self, params: List[np.ndarray], where: str) -> None:
        """New params must not share memory with each other or with any param already
        held (views of one array in two groups would be stepped twice): one sweep over their
        byte ranges, sorted by start (params are C-contiguous: one range each)."""
        ranges = []
        for gi, g in enumerate(self.param_groups):
            ranges += [(p, f"param_groups[{gi}]['params'][{j}]", False)
                       for j, p in enumerate(g["params"])]
        ranges += [(p, f"{where}[{j}]", True) for j, p in enumerate(params)]
        extents = []
        for k, (p, _, _) in enumerate(ranges):
            if p.nbytes:  # (an empty array holds no memory)
                start = p.__array_interface__["data"][0]
                extents.append((start, start + p.nbytes, k))
        extents.sort()
        furthest: Optional[Tuple[int, int, int]] = None
        for extent in extents:
            if furthest is not None and extent[0] < furthest[1]:
                a, b = ranges[extent[2]], ranges[furthest[2]]
                new, old = (a, b) if a[2] else (b, a)
                raise ValueError(f"{new[1]}: shares memory with {old[1]}; each param must be "
                                 "distinct (a shared element would be stepped twice)")
            if furthest is None or extent[1] > furthest[1]:
                furthest = extent

    # -- stepping ----------------------------------------------------------------------------
    def step(self, grads: Sequence[Optional[np.ndarray]]) -> None:
        """Update every parameter whose gradient is not None. ``grads`` lists one gradient
        per parameter, in the order of ``param_groups`` and their ``params``. Everything is
        checked before any parameter or state changes."""
        try:
            grads = list(grads)
        except TypeError:
            raise TypeError("grads: expected a list of arrays (one per param, None to skip "
                            f"one), got {type(grads).__name__}") from None
        flat = self._flat_params()
        if len(grads) != len(flat):
            raise ValueError(f"grads: expected {len(flat)} entries (one per param), "
                             f"got {len(grads)}")
        for i, (p, g) in enumerate(zip(flat, grads)):
            if g is not None:
                _check_grad(g, p, f"grads[{i}]")
        starts = [0]
        for group in self.param_groups:
            starts.append(starts[-1] + len(group["params"]))

        def members(gi: int, group: ParamGroup) -> List[Tuple[Any, Any, Any, int]]:
            first = starts[gi]
            return [(first + j, p, grads[first + j], j) for j, p in enumerate(group["params"])
                    if grads[first + j] is not None]

        self._step_all(members, {"grad_scale": 1.0})

    def _flat_params(self) -> List[np.ndarray]:
        return [p for g in self.param_groups for p in g["params"]]

    # -- Sophia's hooks (gdfast/_sophia.py) -------------------------------------------------
    @staticmethod
    def _closure_first(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Any, ...]:
        return None, args, kwargs

    def _hessian_members(self, args: Tuple[Any, ...]) -> List[Tuple[int, np.ndarray]]:
        grads = list(args[0]) if args else []
        flat = self._flat_params()
        return [(i, p) for i, (p, g) in enumerate(zip(flat, grads)) if g is not None]

    @staticmethod
    def _checked_hessian(hessian: Any, members: List[Tuple[int, np.ndarray]]) -> List[Any]:
        estimates = estimate_list(hessian, len(members), "array")
        for i, (h, (_, p)) in enumerate(zip(estimates, members)):
            _check_grad(h, p, f"hessian[{i}]")
        return estimates

    @staticmethod
    def _estimate(members: List[Tuple[int, np.ndarray]]) -> None:
        """No autograd here: the estimates are the caller's (step(..., hessian=...))."""

    def _keep_estimates(self, estimates: Dict[Any, Any]) -> None:
        """(No estimate is made here: nothing to keep.)"""

    def _state_items(self, group: ParamGroup) -> List[Tuple[np.ndarray, Dict[str, Any]]]:
        first = 0
        for g in self.param_groups:
            if g is group:
                break
            first += len(g["params"])
        return [(p, self.state.get(first + j, {})) for j, p in enumerate(group["params"])]

    @staticmethod
    def _lerp_(param: np.ndarray, end: np.ndarray, weight: float) -> None:
        param += (end - param) * param.dtype.type(weight)

    # -- the hooks of the shared step path ---------------------------------------------------
    def _batch_key(self, param: Any) -> Hashable:
        return param.dtype  # type: ignore[no-any-return]

    def _new_state(self, param: Any, state: State, fill: float, dtype: Any) -> Any:
        if state.init == "unset":
            return np.empty_like(param, dtype=dtype)
        return (np.full_like(param, fill, dtype=dtype) if fill
                else np.zeros_like(param, dtype=dtype))

    def _new_master(self, param: Any) -> Any:
        return _float32_copy(param)

    def _new_absmax(self, param: Any) -> Any:
        return np.zeros(absmax_size(param), np.float32)

    def _state_dtype(self, value: Any) -> Any:
        return _numpy_state_dtype(value)

    def _draw_seed(self) -> int:
        return int(np.random.default_rng().integers(0, SEED_LIMIT, dtype=np.uint64))

    # -- serialization -----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, Any]:
        """torch.optim's layout: {"state": {index: {...}}, "param_groups": [{..., "params":
        [indices]}]}; arrays are copies."""
        groups, start = [], 0
        for g in self.param_groups:
            entry = {k: copy.deepcopy(v) for k, v in g.items() if k != "params"}
            entry["params"] = list(range(start, start + len(g["params"])))
            start += len(g["params"])
            groups.append(entry)
        state = {i: {k: (v.copy() if isinstance(v, np.ndarray) else copy.deepcopy(v))
                     for k, v in st.items()} for i, st in self.state.items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Load a state_dict of an optimizer with the same groups and param shapes; arrays
        are copied, keeping their dtypes where the kernels take them with their param
        (float32, bfloat16 and float16 states of a float32/bfloat16/float16 param; the float32
        master copy), else converted to the param's dtype. A group that lacks a precision
        option (a torch.optim state_dict) keeps this optimizer's. Checked fully before
        anything changes: a rejected one leaves the optimizer as it was, naming the entry at
        fault."""
        if not isinstance(state_dict, Mapping):
            raise TypeError(f"state_dict: expected a dict (from state_dict()), got "
                            f"{type(state_dict).__name__}")
        for key in ("state", "param_groups"):
            if key not in state_dict:
                raise ValueError(f"state_dict: has no {key!r} entry")
        saved_state, groups = state_dict["state"], state_dict["param_groups"]
        if not isinstance(saved_state, Mapping):
            raise TypeError(f"state_dict['state']: expected a dict, got "
                            f"{type(saved_state).__name__}")
        if not isinstance(groups, (list, tuple)):
            raise TypeError(f"state_dict['param_groups']: expected a list, got "
                            f"{type(groups).__name__}")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict: has {len(groups)} param groups, optimizer has "
                             f"{len(self.param_groups)}")
        saved_index: List[Tuple[Hashable, str]] = []  # (state key, where it is listed)
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            where = f"state_dict['param_groups'][{gi}]"
            if not isinstance(saved, Mapping):
                raise TypeError(f"{where}: expected a dict, got {type(saved).__name__}")
            ids = saved.get("params")
            if not isinstance(ids, (list, tuple)):
                raise TypeError(f"{where}['params']: expected a list of state keys, got "
                                f"{type(ids).__name__}")
            if len(ids) != len(mine["params"]):
                raise ValueError(f"state_dict: param group {gi} has {len(ids)} "
                                 f"params, optimizer's has {len(mine['params'])}")
            saved_index += [(key, f"{where}['params'][{j}]") for j, key in enumerate(ids)]
        seen: Dict[Hashable, str] = {}
        for state_key, listed in saved_index:
            try:
                other = seen.setdefault(state_key, listed)
            except TypeError:  # unhashable
                raise TypeError(f"{listed}: expected a state key (an int), got "
                                f"{type(state_key).__name__}") from None
            if other is not listed:
                raise ValueError(f"{listed}: {state_key!r} is listed twice (also at {other})")
        flat = self._flat_params()
        new_state: Dict[int, Dict[str, Any]] = {}
        for position, (state_key, _) in enumerate(saved_index):
            if state_key in saved_state:
                new_state[position] = self._loaded_state(
                    saved_state[state_key], flat[position], f"state_dict['state'][{state_key!r}]")
        new_groups = []
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            group["params"] = mine["params"]
            for key in (*GDFAST_OPTIONS, "rounding_step"):
                if key not in group and key in mine:
                    group[key] = mine[key]
            self._check_group(group, f"state_dict['param_groups'][{gi}]: ")
            new_groups.append(group)
        self.state = new_state
        self.param_groups = new_groups
        self._batch_cache, self._checked_cache = {}, {}

    def _loaded_state(self, entry: Any, p: np.ndarray, where: str) -> Dict[str, Any]:
        """One param's saved state, checked and converted as this optimizer keeps it: state
        arrays as copies in the param's dtype and shape, the step count as an int, scalar
        states as floats."""
        if not isinstance(entry, Mapping):
            raise TypeError(f"{where}: expected a dict, got {type(entry).__name__}")
        rule = self._ctor.rule
        scalars = (("step",) if rule.step == "counted" else ()) + self._ctor.scalar_names
        out: Dict[str, Any] = {}
        for name, value in entry.items():
            here = f"{where}[{name!r}]"
            if name in rule.state_names:
                if value is not None:  # (None: torch.optim.SGD's buffer before its first step)
                    out[name] = _loaded_array(value, p, here, name)
            elif name.endswith(ABSMAX) and name.removesuffix(ABSMAX) in rule.state_names:
                out[name] = _loaded_absmax(value, p, here)
            elif name in scalars:
                out[name] = _loaded_scalar(value, name, here)
            elif name == "master_param":
                if dtype_name(p.dtype) not in ("bfloat16", "float16"):
                    raise ValueError(f"{here}: a master copy is for a bfloat16 or float16 "
                                     f"param; its param is {p.dtype}")
                out[name] = _loaded_array(value, p, here, name)
            else:
                raise ValueError(f"{where}: unknown entry {name!r} ({type(self).__name__} "
                                 f"keeps {', '.join(rule.state_names + scalars)}, "
                                 "master_param, and <state>_absmax for 8-bit states)")
        for name in rule.state_names:  # (8-bit codes and their absmax come together)
            codes = name in out and is_codes(out[name])
            if codes and name + ABSMAX not in out:
                raise ValueError(f"{where}: {name!r} holds 8-bit codes (uint8) but "
                                 f"{name + ABSMAX!r} is missing")
            if not codes and name + ABSMAX in out:
                raise ValueError(f"{where}: {name + ABSMAX!r} without 8-bit codes (uint8) in "
                                 f"{name!r}")
        if "step" in scalars and "step" not in out and any(n in out for n in rule.state_names):
            raise ValueError(f"{where}: has {', '.join(map(repr, out))} but no 'step' (the "
                             "number of steps those states have seen)")
        return out

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params")
        return "\n".join(lines) + "\n)"


def _check_disjoint(written: List[np.ndarray], read: List[np.ndarray]) -> None:
    """No written array shares memory with another array of the step (gradients, only read,
    may share memory with each other): one sweep over the written arrays' byte ranges, sorted,
    then a binary search per gradient."""
    def extent(a: np.ndarray) -> Tuple[int, int]:
        start = a.__array_interface__["data"][0]
        return start, start + a.nbytes

    ranges = sorted(extent(a) for a in written if a.nbytes)
    for (_, end), (start, _) in zip(ranges, ranges[1:]):
        if start < end:
            raise ValueError("a param or state shares memory with another of the step (each "
                             "must be distinct)")
    starts = [start for start, _ in ranges]
    for a in read:
        if not a.nbytes:
            continue
        start, end = extent(a)
        k = bisect.bisect_left(starts, end)  # (the written ranges that start before a ends)
        if k > 0 and ranges[k - 1][1] > start:
            raise ValueError("grads: a gradient shares memory with a param or state of the step")


def _as_numpy(value: Any) -> Any:
    """A tensor (torch.optim's state_dict) as a NumPy array, floats exactly in their dtype
    (bfloat16 as ml_dtypes's, if installed, else as float32); anything else as it is."""
    if not is_tensor(value):
        return value
    value = value.detach().cpu().resolve_conj().resolve_neg()
    name = dtype_name(value.dtype)
    if name == "bfloat16":
        array = value.float().numpy()
        try:
            return array.astype(_bfloat16())  # (exact: the values are bfloat16's)
        except TypeError:
            return array
    if value.is_floating_point() and name not in ("float32", "float64", "float16"):
        value = value.double()  # (float8s and the like, exactly)
    return value.numpy()


def _loaded_array(value: Any, p: np.ndarray, where: str, name: str) -> np.ndarray:
    """A saved state array (NumPy, or a tensor: torch.optim's state_dict) as a copy in the
    dtype the optimizer keeps it in (kept_dtype: its own where the kernels pair it with the
    param, float32 for a master copy, else the param's): real floating point of the param's
    shape, nothing else."""
    value = _as_numpy(value)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{where}: expected an array, got {type(value).__name__}")
    if is_codes(value):  # an 8-bit state: kept as it is (its absmax is checked with it)
        if value.shape != p.shape:
            raise ValueError(f"{where}: shape {value.shape} does not match its param's "
                             f"{p.shape}")
        return np.array(value, copy=True, order="C")
    if value.dtype.kind != "f" and dtype_name(value.dtype) != "bfloat16":
        # complex, object, int, bool, str: no state of a real param
        raise TypeError(f"{where}: expected a real floating-point array, got {value.dtype}")
    if value.shape != p.shape:
        raise ValueError(f"{where}: shape {value.shape} does not match its param's {p.shape}")
    dtype = (np.dtype(np.float32) if name == "master_param"
             else value.dtype if kept_dtype(p.dtype, name, value.dtype) else p.dtype)
    with np.errstate(over="ignore"):  # a float64 beyond float32: inf, as torch converts it
        return np.array(value, dtype=dtype, copy=True, order="C")


def _loaded_absmax(value: Any, p: np.ndarray, where: str) -> np.ndarray:
    """A saved 8-bit state's blocks' absmax: float32, one per block of the param."""
    value = _as_numpy(value)
    if not isinstance(value, np.ndarray) or value.dtype != np.float32:
        shown = value.dtype if isinstance(value, np.ndarray) else type(value).__name__
        raise TypeError(f"{where}: expected a float32 array (a block absmax), got {shown}")
    if value.shape != (absmax_size(p),):
        raise ValueError(f"{where}: shape {value.shape}: expected ({absmax_size(p)},), one "
                         f"absmax per block of 256 elements of its param")
    return np.array(value, copy=True, order="C")


def _loaded_scalar(value: Any, name: str, where: str) -> Any:
    """A saved step count (an int >= 0) or scalar state (a finite number), as a number or
    a 1-element array or tensor (torch.optim keeps them so), converted to int / float."""
    number = _as_numpy(value)
    if isinstance(number, np.ndarray):
        if number.size != 1 or number.dtype.kind not in "iuf":
            raise TypeError(f"{where}: expected a number or a 1-element real array, got an "
                            f"array of shape {number.shape} and dtype {number.dtype}")
        number = number.item()
    checked = count_value(number) if name == "step" else scalar_state_value(number)
    if checked is None:
        wrong_type = isinstance(number, bool) or not isinstance(number, (int, float, np.number))
        raise (TypeError if wrong_type else ValueError)(
            f"{where}: {COUNT_EXPECTED if name == 'step' else SCALAR_EXPECTED}, got {value!r}")
    return checked


def _new_states(p: np.ndarray, names: Sequence[str], precision: Precision
                ) -> Dict[str, np.ndarray]:
    """A Muon param's first states as its group's precision options make them
    (_muon.new_state_dtype): zeros, or 8-bit codes and their blocks' maxima."""
    dtype = _muon.new_state_dtype(p.dtype, p.size, precision, np.dtype(np.float32))
    out: Dict[str, np.ndarray] = {}
    for name in names:
        if dtype is None:
            out[name] = np.zeros(p.shape, np.uint8)
            out[name + ABSMAX] = np.zeros(absmax_size(p), np.float32)
        else:
            out[name] = np.zeros(p.shape, dtype)
    return out


def _loaded_muon_state(entry: Any, p: np.ndarray, names: Sequence[str], where: str
                       ) -> Dict[str, np.ndarray]:
    """One param's saved Muon state (its group's state_names, their blocks' maxima if 8-bit,
    a master copy), checked and copied as _loaded_array and _loaded_absmax keep them."""
    if not isinstance(entry, Mapping):
        raise TypeError(f"{where}: expected a dict, got {type(entry).__name__}")
    out: Dict[str, np.ndarray] = {}
    for name in names:
        out[name] = _loaded_array(entry.get(name), p, f"{where}[{name!r}]", name)
        if is_codes(out[name]):
            out[name + ABSMAX] = _loaded_absmax(entry.get(name + ABSMAX), p,
                                                f"{where}[{name + ABSMAX!r}]")
    if entry.get("master_param") is not None:
        if dtype_name(p.dtype) not in NARROW:
            raise ValueError(f"{where}['master_param']: a master copy is for a bfloat16 or "
                             f"float16 param; its param is {p.dtype}")
        out["master_param"] = _loaded_array(entry["master_param"], p,
                                            f"{where}['master_param']", "master_param")
    return out


for _ctor in (*CONSTRUCTORS.values(), *eight_bit_constructors()):
    globals()[_ctor.name] = make_class(_ctor, Optimizer, "gdfast")
del _ctor


class Muon:
    """torch.optim.Muon over 2-D NumPy arrays (gdfast/_muon.py): per param, the momentum and
    the Newton-Schulz iteration's input in one fused pass, the iteration on NumPy's matrix
    product (its BLAS) in the param's dtype (float32 for a bfloat16 or float16 param), the
    decay and step in another fused pass. ``step(grads)`` as the other classes; state
    ``momentum_buffer`` per param. A group with ``use_muon=False`` is stepped with AdamW, and
    ``max_grad_norm``, ``clip_per_group``, ``max_grad_value`` and ``monitor`` are group
    options, as are the precision options of the other classes (``state_dtype``,
    ``master_weights``, ``stochastic_rounding`` with ``seed``, ``optim_bits`` with
    ``min_8bit_size``), as in gdfast.torch.Muon."""

    last_grad_norm: Optional[float] = None
    last_norms: Optional[Dict[str, float]] = None

    def __init__(self, params: Iterable[Any], *args: Any, state_dtype: Any = None,
                 master_weights: bool = False, stochastic_rounding: bool = False,
                 seed: Optional[int] = None, optim_bits: int = 32, min_8bit_size: int = 4096,
                 **kwargs: Any) -> None:
        self.defaults, self.adamw_defaults = _muon.options(*args, **kwargs)
        self.defaults.update(state_dtype=state_dtype, master_weights=master_weights,
                             stochastic_rounding=stochastic_rounding, seed=seed,
                             optim_bits=optim_bits, min_8bit_size=min_8bit_size)
        _muon.check_group(self.defaults)
        Optimizer._with_precision(self, self.defaults)  # type: ignore[arg-type]
        self._precision(self.defaults, "")
        self.param_groups: List[ParamGroup] = []
        self.state: Dict[int, Dict[str, Any]] = {}
        for group in _param_groups(params):
            self.add_param_group(group)

    __init__.__signature__ = _muon.INIT_SIGNATURE  # type: ignore[attr-defined]

    # (Optimizer._with_precision's hooks)
    _state_dtype = staticmethod(_numpy_state_dtype)
    _draw_seed = Optimizer._draw_seed

    def _precision(self, group: ParamGroup, where: str) -> Precision:
        try:
            return check_precision(group, _numpy_state_dtype)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}{e}") from None

    def add_param_group(self, param_group: ParamGroup) -> None:
        if not isinstance(param_group, dict) or "params" not in param_group:
            raise TypeError("param_group: expected a dict with a 'params' entry, got "
                            f"{type(param_group).__name__}")
        where = f"param_groups[{len(self.param_groups)}]"
        muon = _muon.is_muon(param_group)
        shared = (*_muon.STEP_OPTIONS, *PRECISION_OPTIONS)
        group = ({**self.defaults, **param_group} if muon else
                 {**{k: self.defaults[k] for k in shared},
                  **_muon.adamw_group(param_group, self.adamw_defaults)})
        Optimizer._with_precision(self, group)  # type: ignore[arg-type]
        precision = self._precision(group, where + ".")
        params = group["params"]
        params = [params] if isinstance(params, np.ndarray) else list(params)
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            who = f"{where}['params'][{i}]"
            _check_param(p, who)
            if muon:
                _muon.check_matrix(p.shape, who)
            _muon.check_param(p.dtype, p.size, precision, who)
            if id(p) in seen:
                raise ValueError(f"{who}: appears in more than one place")
            seen.add(id(p))
        if muon:
            _muon.check_group(group, where + ".")
        else:
            _muon.check_adamw_group(group, where + ".")
        _muon.check_step_options(group, where + ".")
        Optimizer._check_no_overlap(self, params, f"{where}['params']")  # type: ignore[arg-type]
        group["params"] = params
        self.param_groups.append(group)

    def step(self, grads: Sequence[Optional[np.ndarray]]) -> None:
        """Update every param whose gradient is not None (``grads`` in the order of the
        groups' params). Everything is checked before any param or state changes."""
        try:
            grads = list(grads)
        except TypeError:
            raise TypeError("grads: expected a list of arrays (one per param, None to skip "
                            f"one), got {type(grads).__name__}") from None
        flat = [p for g in self.param_groups for p in g["params"]]
        if len(grads) != len(flat):
            raise ValueError(f"grads: expected {len(flat)} entries (one per param), "
                             f"got {len(grads)}")
        count = _muon.rounding_count(self.param_groups)
        work, new_state, index = [], {}, 0
        for gi, group in enumerate(self.param_groups):
            names = _muon.state_names(group)
            precision = self._precision(group, f"param_groups[{gi}].")
            params: List[np.ndarray] = []
            given: List[np.ndarray] = []
            states: List[List[np.ndarray]] = [[] for _ in names]
            extras: List[_muon.Extras] = []
            for p in group["params"]:
                g = grads[index]
                if g is not None:
                    _check_grad(g, p, f"grads[{index}]")
                    # (the options may have changed since the param was added)
                    _muon.check_param(p.dtype, p.size, precision, f"grads[{index}]: its param")
                    state = self.state.get(index, {})
                    if any(name not in state for name in names):
                        state = {**_new_states(p, names, precision), **state}
                    state, e = _muon.param_extras(
                        state, names, p, dtype_name(p.dtype) in NARROW, precision,
                        None if count is None else (group.get("seed"), index, count),
                        _float32_copy, f"grads[{index}]: its param")
                    new_state[index] = state
                    params.append(p)
                    given.append(g)
                    for name, arrays in zip(names, states):
                        arrays.append(state[name])
                    extras.append(e)
                index += 1
            plain = precision is DEFAULT_PRECISION and _muon.all_plain(extras)
            options = _muon.with_scheduled_lr(
                {k: v for k, v in group.items() if k != "params"}, f"param_groups[{gi}]: ")
            work.append(_muon.GroupStep.checked(group, options, params, given, states,
                                                None if plain else extras))
        # (and across the groups)
        _check_disjoint([a for w in work for arrays in (w.params, *w.states) for a in arrays]
                        + [e.master for w in work for e in w.extras or () if e.master is not None],
                        [g for w in work for g in w.grads])
        self.state.update(new_state)
        self.last_grad_norm, self.last_norms = _muon.run_groups(work, _muon.numpy_input,
                                                                _muon.newton_schulz_numpy)
        advance_schedules(self.param_groups)
        if count is not None:
            for group in self.param_groups:
                group["rounding_step"] = count

    def state_dict(self) -> Dict[str, Any]:
        """torch.optim's layout, arrays copied."""
        return Optimizer.state_dict(self)  # type: ignore[arg-type]

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        """Loads a state_dict of a Muon with the same groups and param shapes (the group
        options too; a precision option it lacks, as in a torch.optim.Muon state_dict, keeps
        this optimizer's). States keep their dtypes where the kernels take them (the master
        copy, 8-bit codes and their blocks' maxima, float32/bfloat16/float16 buffers), as in
        the other classes. Checked fully before anything changes."""
        groups = state_dict.get("param_groups") if isinstance(state_dict, Mapping) else None
        saved = state_dict.get("state") if isinstance(state_dict, Mapping) else None
        if not isinstance(groups, (list, tuple)) or not isinstance(saved, Mapping):
            raise TypeError("state_dict: expected a dict with 'state' and 'param_groups' "
                            "(from state_dict())")
        if [len(g.get("params", ())) for g in groups] != [len(g["params"])
                                                          for g in self.param_groups]:
            raise ValueError("state_dict: its param groups differ in number or size from "
                             "this optimizer's")
        flat = [p for g in self.param_groups for p in g["params"]]
        options = []
        for gi, (group, mine) in enumerate(zip(groups, self.param_groups)):
            merged = {**mine, **{k: v for k, v in group.items() if k != "params"}}
            where = f"state_dict['param_groups'][{gi}]."
            if _muon.is_muon(merged) != _muon.is_muon(mine):
                raise ValueError(f"{where}use_muon: differs from this optimizer's group")
            if _muon.is_muon(merged):
                _muon.check_group(merged, where)
            else:
                _muon.check_adamw_group(merged, where)
            precision = self._precision(merged, where)
            for i, p in enumerate(mine["params"]):
                _muon.check_param(p.dtype, p.size, precision, f"{where}params[{i}]")
            options.append(merged)
        state: Dict[int, Dict[str, np.ndarray]] = {}
        for key, entry in saved.items():
            if not isinstance(key, int) or not 0 <= key < len(flat):
                raise ValueError(f"state_dict['state']: {key!r} is not a param's index")
            owner = next(g for g in self.param_groups if any(p is flat[key] for p in g["params"]))
            state[key] = _loaded_muon_state(entry, flat[key], _muon.state_names(owner),
                                            f"state_dict['state'][{key}]")
        for mine, merged in zip(self.param_groups, options):
            mine.update(merged)
        self.state = state

    __repr__ = Optimizer.__repr__
