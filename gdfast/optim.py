"""Stateful optimizers over NumPy arrays, with torch.optim's constructors and state layout.

    opt = gdfast.AdamW(params, lr=1e-3)      # params: arrays, or dicts {"params": [...], ...}
    opt.step(grads)                          # grads in the order of the params; None skips

Each step makes one kernel call per param group (per dtype and step count, which are
normally all the same), i.e. one parallel region for the whole group.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, cast

import numpy as np

from . import ops
from ._spec import raise_invalid

__all__ = ["Optimizer", "SGD", "Adam", "AdamW", "Lion"]

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
    """The checks the kernel would make, done up front so that a bad gradient in a later
    group cannot leave earlier groups stepped."""
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


class Optimizer:
    """Base: param groups, per-parameter state, state_dict round trip.

    ``state`` maps a parameter's index (in the order of all groups' params) to its dict of
    state arrays and counters, as torch's state_dict does."""

    _spec_name: str = ""

    def __init__(self, params: Iterable[Any], defaults: Dict[str, Any]) -> None:
        self.defaults = dict(defaults)
        self.param_groups: List[ParamGroup] = []
        self.state: Dict[int, Dict[str, Any]] = {}
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
        self._validate_group(group, where=f"param_groups[{len(self.param_groups)}]")
        self.param_groups.append(group)

    def _validate_group(self, group: ParamGroup, where: str) -> None:
        try:
            raise_invalid(self._spec_name, self._hyper_values(group))
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}: {e}") from None

    def _hyper_values(self, group: ParamGroup) -> Dict[str, Any]:
        raise NotImplementedError

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
        for gi, group in enumerate(self.param_groups):
            self._validate_group(group, where=f"param_groups[{gi}]")
        for i, (p, g) in enumerate(zip(flat, grads)):
            if g is not None:
                _check_grad(g, p, f"grads[{i}]")
        index = 0
        for group in self.param_groups:
            batches: Dict[Tuple[Any, ...], List[int]] = {}
            for _ in group["params"]:
                if grads[index] is not None:
                    key = (flat[index].dtype.char,) + self._batch_key(index, group)
                    batches.setdefault(key, []).append(index)
                index += 1
            for indices in batches.values():
                self._step_batch(group, [flat[i] for i in indices],
                                 [cast(np.ndarray, grads[i]) for i in indices], indices)

    def _flat_params(self) -> List[np.ndarray]:
        return [p for g in self.param_groups for p in g["params"]]

    def _batch_key(self, index: int, group: ParamGroup) -> Tuple[Any, ...]:
        """Params whose keys match are stepped in one kernel call."""
        return (self.state.get(index, {}).get("step", 0),)

    def _step_batch(self, group: ParamGroup, params: List[np.ndarray],
                    grads: List[np.ndarray], indices: List[int]) -> None:
        raise NotImplementedError

    def _state_arrays(self, indices: List[int], params: List[np.ndarray], name: str,
                      created: Dict[Tuple[int, str], np.ndarray],
                      make: Any = np.zeros_like) -> List[np.ndarray]:
        """The named state array of each param; missing ones are made with ``make`` and
        recorded in ``created``, to be stored by :meth:`_commit` once the step succeeded."""
        out = []
        for i, p in zip(indices, params):
            arr = self.state.get(i, {}).get(name)
            if arr is None:
                arr = created[(i, name)] = make(p)
            out.append(arr)
        return out

    def _commit(self, created: Dict[Tuple[int, str], np.ndarray]) -> None:
        for (i, name), arr in created.items():
            self.state.setdefault(i, {})[name] = arr

    def _advance_step(self, indices: List[int]) -> int:
        step = 0
        for i in indices:
            st = self.state.setdefault(i, {})
            st["step"] = step = int(st.get("step", 0)) + 1
        return step

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
                if isinstance(value, np.ndarray) or hasattr(value, "__array__"):
                    arr = np.array(value, dtype=p.dtype, copy=True, order="C")
                    if arr.shape != p.shape:
                        raise ValueError(f"state_dict: state[{key}][{name!r}] has shape "
                                         f"{arr.shape}, param has {p.shape}")
                    entry[name] = arr
                else:
                    entry[name] = copy.deepcopy(value)
            new_state[position] = entry
        new_groups = []
        for saved, mine in zip(groups, self.param_groups):
            group = {k: copy.deepcopy(v) for k, v in saved.items() if k != "params"}
            group["params"] = mine["params"]
            new_groups.append(group)
        for gi, group in enumerate(new_groups):
            self._validate_group(group, where=f"state_dict['param_groups'][{gi}]")
        self.state = new_state
        self.param_groups = new_groups

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__} ("]
        for i, g in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(g.items()) if k != "params")
        return "\n".join(lines) + "\n)"


class SGD(Optimizer):
    """torch.optim.SGD: momentum buffers appear on a param's first step with momentum != 0."""

    _spec_name = "sgd"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, momentum: float = 0.0,
                 dampening: float = 0.0, weight_decay: float = 0.0, nesterov: bool = False,
                 *, maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening,
                                      weight_decay=weight_decay, nesterov=nesterov,
                                      maximize=maximize))

    def _hyper_values(self, group: ParamGroup) -> Dict[str, Any]:
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError("nesterov: requires momentum > 0 and dampening == 0")
        return {k: group[k] for k in ("lr", "momentum", "dampening", "weight_decay")}

    def _batch_key(self, index: int, group: ParamGroup) -> Tuple[Any, ...]:
        return ("momentum_buffer" in self.state.get(index, {}),)

    def _step_batch(self, group, params, grads, indices):  # type: ignore[no-untyped-def]
        buffers = None
        first = False
        created: Dict[Tuple[int, str], np.ndarray] = {}
        if group["momentum"] != 0:
            first = "momentum_buffer" not in self.state.get(indices[0], {})
            # torch.optim.SGD starts the buffer as a copy of the gradient: step 1 writes it.
            buffers = self._state_arrays(indices, params, "momentum_buffer", created,
                                         make=np.empty_like)
        ops.sgd_(params, grads, buffers, step=1 if first else 2, lr=group["lr"],
                 momentum=group["momentum"], dampening=group["dampening"],
                 nesterov=group["nesterov"], weight_decay=group["weight_decay"],
                 maximize=group["maximize"])
        self._commit(created)


class Adam(Optimizer):
    """torch.optim.Adam (L2 weight decay; ``decoupled_weight_decay=True`` makes it AdamW)."""

    _spec_name = "adam"

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, amsgrad: bool = False, *, maximize: bool = False,
                 decoupled_weight_decay: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=_as_pair(betas), eps=eps,
                                      weight_decay=weight_decay, amsgrad=amsgrad,
                                      maximize=maximize,
                                      decoupled_weight_decay=decoupled_weight_decay))

    def _hyper_values(self, group: ParamGroup) -> Dict[str, Any]:
        beta1, beta2 = _two_betas(group)
        return {"lr": group["lr"], "beta1": beta1, "beta2": beta2, "eps": group["eps"],
                "weight_decay": group["weight_decay"]}

    def _step_batch(self, group, params, grads, indices):  # type: ignore[no-untyped-def]
        created: Dict[Tuple[int, str], np.ndarray] = {}
        exp_avg = self._state_arrays(indices, params, "exp_avg", created)
        exp_avg_sq = self._state_arrays(indices, params, "exp_avg_sq", created)
        amsgrad = bool(group["amsgrad"])
        max_sq = (self._state_arrays(indices, params, "max_exp_avg_sq", created)
                  if amsgrad else None)
        beta1, beta2 = _two_betas(group)
        step = int(self.state.get(indices[0], {}).get("step", 0)) + 1
        ops.adam_(params, grads, exp_avg, exp_avg_sq, step=step, lr=group["lr"], beta1=beta1,
                  beta2=beta2, eps=group["eps"], weight_decay=group["weight_decay"],
                  decoupled_weight_decay=bool(group["decoupled_weight_decay"]),
                  amsgrad=amsgrad, max_exp_avg_sq=max_sq, maximize=bool(group["maximize"]))
        self._commit(created)
        self._advance_step(indices)


class AdamW(Adam):
    """torch.optim.AdamW: Adam with decoupled weight decay, default weight_decay=1e-2."""

    def __init__(self, params: Iterable[Any], lr: float = 1e-3,
                 betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 1e-2, amsgrad: bool = False, *,
                 maximize: bool = False) -> None:
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay,
                         amsgrad=amsgrad, maximize=maximize, decoupled_weight_decay=True)


class Lion(Optimizer):
    """Lion (Chen et al. 2023), defaults of the paper and lion-pytorch."""

    _spec_name = "lion"

    def __init__(self, params: Iterable[Any], lr: float = 1e-4,
                 betas: Tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0, *,
                 maximize: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=_as_pair(betas), weight_decay=weight_decay,
                                      maximize=maximize))

    def _hyper_values(self, group: ParamGroup) -> Dict[str, Any]:
        beta1, beta2 = _two_betas(group)
        return {"lr": group["lr"], "beta1": beta1, "beta2": beta2,
                "weight_decay": group["weight_decay"]}

    def _batch_key(self, index: int, group: ParamGroup) -> Tuple[Any, ...]:
        return ()

    def _step_batch(self, group, params, grads, indices):  # type: ignore[no-untyped-def]
        created: Dict[Tuple[int, str], np.ndarray] = {}
        exp_avg = self._state_arrays(indices, params, "exp_avg", created)
        beta1, beta2 = _two_betas(group)
        ops.lion_(params, grads, exp_avg, lr=group["lr"], beta1=beta1, beta2=beta2,
                  weight_decay=group["weight_decay"], maximize=bool(group["maximize"]))
        self._commit(created)


def _as_pair(betas: Any) -> Any:
    """A list of betas is stored as a tuple (as torch does); anything else is kept for the
    group check to reject with a clear message."""
    return tuple(betas) if isinstance(betas, list) else betas


def _two_betas(group: ParamGroup) -> Tuple[float, float]:
    betas = group["betas"]
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}") from None
    return beta1, beta2
