"""Stateful optimizers over NumPy arrays, with torch.optim's constructors and state layout:
``gdfast.SGD``, ``Adam``, ``AdamW``, ``Lion``, ``RMSprop``, ``Adagrad``, ``Adadelta``,
``Adamax``, ``NAdam``, ``RAdam``, ``ASGD``, ``Rprop``.

    opt = gdfast.AdamW(params, lr=1e-3)      # params: arrays, or dicts {"params": [...], ...}
    opt.step(grads)                          # grads in the order of the params; None skips

Each step checks every group and gradient first, then steps all groups in one kernel call
(one batch per group, dtype and step count, which are normally all the same).
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from . import _constructors  # noqa: F401  (registers the constructors)
from ._spec import State
from ._stepping import CONSTRUCTORS, StepPath, make_class

__all__ = ["Optimizer"] + list(CONSTRUCTORS)

ParamGroup = Dict[str, Any]


def _check_param(p: Any, where: str) -> np.ndarray:
    if not isinstance(p, np.ndarray):
        raise TypeError(f"{where}: expected a numpy.ndarray, got {type(p).__name__}")
    if p.dtype not in (np.float32, np.float64) or not p.dtype.isnative:
        raise TypeError(f"{where}: expected float32 or float64, got {p.dtype}")
    if not p.flags.c_contiguous:
        raise ValueError(f"{where}: must be C-contiguous")
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


class Optimizer(StepPath):
    """Base: param groups, per-parameter state, state_dict round trip.

    ``state`` maps a parameter's index (in the order of all groups' params) to its dict of
    state arrays and counters, as torch's state_dict does."""

    def __init__(self, params: Iterable[Any], *args: Any, **kwargs: Any) -> None:
        defaults = self._ctor.defaults(args, kwargs)
        for flag in ("capturable", "differentiable"):
            if defaults.get(flag):
                raise ValueError(f"{flag}=True: not available for NumPy arrays (see "
                                 "gdfast.torch for torch tensors)")
        self.defaults = defaults
        self.param_groups: List[ParamGroup] = []
        self.state: Dict[int, Dict[str, Any]] = {}
        self._batch_cache, self._checked_cache = {}, {}
        groups: List[Any] = list(params) if not isinstance(params, np.ndarray) else [params]
        if not groups:
            raise ValueError("params: optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    # -- groups ------------------------------------------------------------------------------
    def add_param_group(self, param_group: ParamGroup) -> None:
        if not isinstance(param_group, dict):
            raise TypeError(f"param_group: expected a dict, got {type(param_group).__name__}")
        group = dict(param_group)
        params = group.get("params")
        if params is None:
            raise ValueError("param_group: has no 'params' entry")
        params = [params] if isinstance(params, np.ndarray) else list(params)
        where = f"param_groups[{len(self.param_groups)}]['params']"
        for i, p in enumerate(params):
            _check_param(p, f"{where}[{i}]")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        for i, p in enumerate(params):
            if id(p) in seen:
                raise ValueError(f"{where}[{i}]: appears in more than one place")
            seen.add(id(p))
        group["params"] = params
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        self._checked_group(group, f"param_groups[{len(self.param_groups)}]: ")
        self.param_groups.append(group)

    # -- stepping ----------------------------------------------------------------------------
    def step(self, grads: Sequence[Optional[np.ndarray]]) -> None:
        """Update every parameter whose gradient is not None. ``grads`` lists one gradient
        per parameter, in the order of ``param_groups`` and their ``params``. Everything is
        checked before any parameter or state changes."""
        grads = list(grads)
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

    # -- the hooks of the shared step path ---------------------------------------------------
    def _batch_key(self, param: Any) -> Hashable:
        return str(param.dtype.char)

    def _new_state(self, param: Any, state: State, fill: float) -> Any:
        if state.init == "unset":
            return np.empty_like(param)
        return np.full_like(param, fill) if fill else np.zeros_like(param)

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
        are copied (converted to each param's dtype). Checked fully before anything changes."""
        groups = state_dict["param_groups"]
        if len(groups) != len(self.param_groups):
            raise ValueError(f"state_dict: has {len(groups)} param groups, optimizer has "
                             f"{len(self.param_groups)}")
        for gi, (saved, mine) in enumerate(zip(groups, self.param_groups)):
            if len(saved["params"]) != len(mine["params"]):
                raise ValueError(f"state_dict: param group {gi} has {len(saved['params'])} "
                                 f"params, optimizer's has {len(mine['params'])}")
        flat = self._flat_params()
        saved_index = [i for g in groups for i in g["params"]]
        new_state: Dict[int, Dict[str, Any]] = {}
        for position, key in enumerate(saved_index):
            if key not in state_dict["state"]:
                continue
            p = flat[position]
            entry = {}
            for name, value in state_dict["state"][key].items():
                is_array = isinstance(value, np.ndarray) or hasattr(value, "__array__")
                if is_array and np.ndim(value) > 0:
                    arr = np.array(value, dtype=p.dtype, copy=True, order="C")
                    if arr.shape != p.shape:
                        raise ValueError(f"state_dict: state[{key}][{name!r}] has shape "
                                         f"{arr.shape}, param has {p.shape}")
                    entry[name] = arr
                elif is_array:  # a torch scalar tensor (a step count, a scalar state)
                    entry[name] = _number(np.asarray(value).item(), integer=name == "step")
                else:
                    entry[name] = copy.deepcopy(value)
            new_state[position] = entry
        new_groups = []
        for saved, mine in zip(groups, self.param_groups):
            group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            group["params"] = mine["params"]
            new_groups.append(group)
        for gi, group in enumerate(new_groups):
            self._checked_group(group, f"state_dict['param_groups'][{gi}]: ")
        self.state = new_state
        self.param_groups = new_groups
        self._batch_cache, self._checked_cache = {}, {}

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params")
        return "\n".join(lines) + "\n)"


def _number(value: Any, integer: bool) -> Any:
    return int(value) if integer else float(value)


for _ctor in CONSTRUCTORS.values():
    globals()[_ctor.name] = make_class(_ctor, Optimizer, "gdfast")
del _ctor
