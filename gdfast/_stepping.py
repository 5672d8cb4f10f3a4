"""The one step path of the stateful optimizers, shared by the NumPy front end (gdfast.<Name>)
and the torch drop-ins (gdfast.torch.<Name>). They differ only in how arrays are obtained and
where state lives, which they say through the hooks of :class:`StepPath`.

A step checks every param group (hyperparameter ranges, option combinations) and every
gradient before anything is written, then steps all groups in one kernel call (one batch per
group, dtype and step count); state made for the step is stored only after it succeeded. The
batches of a group (its params, their states and the arrays handed to the kernel) are kept
from one step to the next and re-checked each step: making the arrays costs microseconds per
tensor, checking that nothing was replaced a fraction of that.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

from . import _core
from ._spec import RULES, Rule, State

# Constructor arguments that hold two of a rule's hyperparameters.
PAIRS: Dict[str, Tuple[str, str]] = {
    "betas": ("beta1", "beta2"),
    "etas": ("etaminus", "etaplus"),
    "step_sizes": ("step_size_min", "step_size_max"),
}


@dataclass(frozen=True)
class Constructor:
    """An optimizer class's torch-style constructor (gdfast/_constructors.py): its signature
    after ``params``, the rule it steps and the arguments it fixes (AdamW's decoupling)."""

    name: str
    rule: Rule
    signature: inspect.Signature
    fixed: Mapping[str, Any]
    doc: str

    def defaults(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Dict[str, Any]:
        """Every argument after ``params``, as a param group stores it."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        return {**bound.arguments, **self.fixed}

    def hyper_values(self, group: Mapping[str, Any]) -> Dict[str, Any]:
        """The rule's hyperparameters from a param group, pairs unpacked (betas -> beta1,
        beta2); one a group lacks (an older state_dict's) takes the rule's default."""
        out: Dict[str, Any] = {}
        names = {f.name for f in self.rule.options}
        for key, (a, b) in PAIRS.items():
            if key in group and a in names:
                value = group[key]
                try:
                    out[a], out[b] = value
                except (TypeError, ValueError):
                    raise ValueError(f"{key}: expected a pair ({a}, {b}), got {value!r}") from None
        for f in self.rule.options:
            if f.name not in out:
                out[f.name] = group.get(f.name, f.default)
        return out


CONSTRUCTORS: Dict[str, Constructor] = {}


def constructor(rule: str, **fixed: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Registers a torch-signature constructor for the front ends to build their classes from."""
    def register(fn: Callable[..., None]) -> Callable[..., None]:
        CONSTRUCTORS[fn.__name__] = Constructor(fn.__name__, RULES[rule], inspect.signature(fn),
                                                fixed, inspect.getdoc(fn) or "")
        return fn
    return register


def make_class(ctor: Constructor, base: type, module: str) -> type:
    """The front end's class for a constructor: ``base.__init__(self, params, *args,
    **kwargs)`` under the constructor's name, signature (for help()) and docstring."""
    def __init__(self: Any, params: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, params, *args, **kwargs)

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", positional), inspect.Parameter("params", positional),
         *ctor.signature.parameters.values()])
    return type(ctor.name, (base,), {"_ctor": ctor, "__init__": __init__, "__doc__": ctor.doc,
                                     "__module__": module, "__qualname__": ctor.name})


class Cell:
    """A per-parameter scalar (step count, scalar state) kept as a Python number in its state
    dict (the NumPy front end). The torch front end keeps tensors and reads them through views."""

    __slots__ = ("store", "key")

    def __init__(self, store: Dict[str, Any], key: str) -> None:
        self.store, self.key = store, key

    def get(self) -> Any:
        return self.store[self.key]

    def set(self, value: Any) -> None:
        self.store[self.key] = value


class Member:
    """One parameter of a batch: where its state lives and what the kernel gets of it."""

    __slots__ = ("key", "param", "identity", "store", "is_new", "states", "holders", "cells",
                 "created")

    def __init__(self, key: Hashable, param: Any, identity: Any, store: Dict[str, Any],
                 is_new: bool) -> None:
        self.key, self.param, self.identity = key, param, identity
        self.store = store  # the param's state dict (a new one is stored after the step)
        self.is_new = is_new
        self.states: List[Any] = []  # the state objects, per used state name
        self.holders: Dict[str, Any] = {}  # step count and scalar states, as stored
        self.cells: Dict[str, Any] = {}  # read and write those (valid once they are stored)
        self.created: Dict[str, Any] = {}  # made for this step, stored once it succeeded


class Batch:
    """Params of one group stepped by one kernel call: same dtype and device, same step count
    and scalar states. Kept across steps while :meth:`StepPath._unchanged` holds."""

    __slots__ = ("names", "members", "param_arrays", "state_arrays", "values", "first_call")

    def __init__(self, names: Tuple[str, ...], members: List[Member], param_arrays: List[Any],
                 state_arrays: List[List[Any]], values: Dict[str, Any], first_call: bool) -> None:
        self.names, self.members = names, members
        self.param_arrays, self.state_arrays = param_arrays, state_arrays
        self.values = values  # the step count and scalar states of every member
        self.first_call = first_call  # states made on this call are written before read (SGD)


class StepPath:
    """The shared part of a stateful optimizer. Front ends set ``_ctor`` and implement the
    hooks below; they keep ``param_groups`` and ``state`` themselves."""

    _ctor: Constructor
    param_groups: List[Dict[str, Any]]
    # Per group id: (group, its member keys, its batches), from the last step.
    _batch_cache: Dict[int, Tuple[Dict[str, Any], Tuple[Hashable, ...], List[Batch]]]

    # -- hooks ---------------------------------------------------------------------------------
    def _host(self, value: Any) -> Any:
        """A hyperparameter as the range checks see it (torch: a tensor lr as a number)."""
        return value

    def _stored(self, key: Hashable) -> Optional[Dict[str, Any]]:
        """The param's state dict, or None if it has none yet."""
        raise NotImplementedError

    def _store(self, key: Hashable, store: Dict[str, Any]) -> None:
        """Keep a new param's state dict (after its first successful step)."""
        raise NotImplementedError

    def _identity(self, param: Any) -> Any:
        """What must not change for the param's cached arrays to stay valid."""
        return None

    def _batch_key(self, param: Any) -> Hashable:
        """Params whose keys differ are never stepped in one kernel call (dtype, device)."""
        raise NotImplementedError

    def _array(self, tensor: Any) -> Any:
        """What the kernel gets for a param or state."""
        return tensor

    def _new_state(self, param: Any, state: State, fill: float) -> Any:
        raise NotImplementedError

    def _new_scalar(self, param: Any, name: str, value: Any) -> Any:
        """A new step count or scalar state as it is stored."""
        return value

    def _read(self, holder: Any) -> Any:
        """A stored step count or scalar state's value (None: not readable on the host)."""
        return holder

    def _cell(self, member: Member, name: str, holder: Any) -> Any:
        """Reads (get) and writes (set) the stored scalar ``name`` once it is stored."""
        return Cell(member.store, name)

    def _device_call(self, batch: Batch, hyper: Dict[str, Any], step: Any,
                     amp: Mapping[str, Any]) -> Tuple[Any, Any, Dict[str, Any], Any]:
        """(stream, device_scalars, hyper, step) for a batch: CPU arrays need neither."""
        return None, None, hyper, step

    def _after_step(self, batches: List[Batch]) -> None:
        """After a successful call (torch: bump the version counters of what was written)."""

    # -- checks --------------------------------------------------------------------------------
    def _hyper_tuple(self, values: Mapping[str, Any], scalars: Mapping[str, Any], step: Any,
                     grad_scale: Any) -> Tuple[Any, ...]:
        return tuple(scalars[f.name] if f.kind == "scalar_state" else values[f.name]
                     for f in self._ctor.rule.fields) + (step, grad_scale)

    def _scalar_starts(self, values: Mapping[str, Any]) -> Dict[str, float]:
        rule = self._ctor.rule
        return {f.name: rule.scalar_start(f, values) for f in rule.scalar_states}

    def _checked_group(self, group: Mapping[str, Any], where: str
                       ) -> Tuple[Dict[str, Any], Tuple[str, ...]]:
        """The group's hyperparameters (range-checked) and the states a step with them uses;
        TypeError/ValueError prefixed with ``where`` otherwise."""
        rule = self._ctor.rule
        try:
            values = {k: self._host(v) for k, v in self._ctor.hyper_values(group).items()}
            rule.check(values)
            names = rule.plan(self._hyper_tuple(values, self._scalar_starts(values), 1, 1.0))
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}{e}") from None
        return values, names

    # -- stepping ------------------------------------------------------------------------------
    def _step_all(self, members_of: Callable[[int, Dict[str, Any]], List[Tuple[Any, Any, Any]]],
                  amp: Mapping[str, Any]) -> None:
        """One step of every group, in one kernel call. ``members_of(i, group)`` lists (key,
        param, grad array) for the params with gradients, raising for a bad one. ``amp`` holds
        grad_scale (a number, or a CUDA tensor) and, for CUDA, found_inf."""
        checked = [self._checked_group(g, f"param_groups[{i}]: ")
                   for i, g in enumerate(self.param_groups)]
        work: List[Tuple[Batch, List[Any], Dict[str, Any], Dict[str, Any]]] = []
        for i, (group, (values, names)) in enumerate(zip(self.param_groups, checked)):
            members = members_of(i, group)
            if members:
                grads = {key: g for key, _, g in members}
                for batch in self._batches(group, members, names, values):
                    work.append((batch, [grads[m.key] for m in batch.members], group, values))
        if not work:
            return
        calls, stream = [], None
        for batch, grads, group, values in work:
            call_stream, device_scalars, hyper, step = self._device_call(
                batch, {**values, "grad_scale": amp["grad_scale"]}, self._step_arg(batch),
                {**amp, "group": group})
            stream = stream if call_stream is None else call_stream
            calls.append((batch.param_arrays, (grads,), self._state_args(batch),
                          self._hyper_tuple(hyper, batch.values, step, hyper["grad_scale"]),
                          "", device_scalars))
        results = _core.step(self._ctor.rule.id, calls, stream)
        for k, (batch, _, _, _) in enumerate(work):
            self._commit(batch, None if results is None else results[k])
        self._after_step([w[0] for w in work])

    def _state_args(self, batch: Batch) -> Tuple[Any, ...]:
        by_name = dict(zip(batch.names, batch.state_arrays))
        return tuple(by_name.get(name) for name in self._ctor.rule.state_names)

    def _step_arg(self, batch: Batch) -> Any:
        kind = self._ctor.rule.step
        if kind == "counted":
            count = batch.values["step"]
            return None if count is None else int(count) + 1
        if kind == "first_call":
            return 1 if batch.first_call else 2
        return 0

    def _commit(self, batch: Batch, scalars: Optional[Tuple[float, ...]]) -> None:
        """After a successful call: store what was made for it, advance counts and scalars."""
        new_values = dict(batch.values)
        if "step" in new_values and new_values["step"] is not None:
            new_values["step"] = int(new_values["step"]) + 1
        if scalars is not None:
            new_values.update(zip((f.name for f in self._ctor.rule.scalar_states), scalars))
        for m in batch.members:
            if m.created:
                m.store.update(m.created)
                m.created = {}
            if m.is_new and m.store:
                self._store(m.key, m.store)
                m.is_new = False
            for name, cell in m.cells.items():
                cell.set(new_values[name])
                m.holders[name] = m.store.get(name)
        batch.values = new_values
        batch.first_call = False

    # -- batches -------------------------------------------------------------------------------
    def _batches(self, group: Dict[str, Any], members: List[Tuple[Any, Any, Any]],
                 names: Tuple[str, ...], values: Mapping[str, Any]) -> List[Batch]:
        keys = tuple(key for key, _, _ in members)
        cached = self._batch_cache.get(id(group))
        if (cached is not None and cached[0] is group and cached[1] == keys
                and all(self._unchanged(b, names) for b in cached[2])):
            return cached[2]
        batches = self._new_batches(members, names, values)
        self._batch_cache[id(group)] = (group, keys, batches)
        return batches

    def _unchanged(self, batch: Batch, names: Tuple[str, ...]) -> bool:
        """Same param memory and the same state objects as when the batch was made, and one
        step count and scalar state value for all (none was edited in place). Updates
        ``batch.values`` from the stored values."""
        if names != batch.names:  # e.g. amsgrad switched on
            return False
        for m in batch.members:
            store = self._stored(m.key)
            if store is None and m.is_new:  # a stateless param (plain SGD) stores nothing
                store = m.store
            if store is not m.store or self._identity(m.param) != m.identity:
                return False
            for name, obj in zip(names, m.states):
                if store.get(name) is not obj:
                    return False
            for name, holder in m.holders.items():
                if store.get(name) is not holder:
                    return False
        values = {}
        for name in batch.values:
            seen = {m.cells[name].get() for m in batch.members}
            if len(seen) > 1:
                return False
            values[name] = seen.pop()
        batch.values = values
        return True

    def _new_batches(self, members: List[Tuple[Any, Any, Any]], names: Tuple[str, ...],
                     values: Mapping[str, Any]) -> List[Batch]:
        rule = self._ctor.rule
        specs = {s.name: s for s in rule.states}
        starts = self._scalar_starts(values)
        scalar_names = (("step",) if rule.step == "counted" else ()) + tuple(starts)
        by_key: Dict[Hashable, List[Member]] = {}
        for key, p, _ in members:
            stored = self._stored(key)
            m = Member(key, p, self._identity(p), {} if stored is None else stored,
                       stored is None)
            for name in names:
                obj = m.store.get(name)
                if obj is None:
                    spec = specs[name]
                    fill = float(values[spec.fill_from]) if spec.fill_from else 0.0
                    obj = m.created[name] = self._new_state(p, spec, fill)
                m.states.append(obj)
            for name in scalar_names:
                holder = m.store.get(name)
                if holder is None:
                    holder = m.created[name] = self._new_scalar(
                        p, name, 0 if name == "step" else starts[name])
                m.holders[name] = holder
                m.cells[name] = self._cell(m, name, holder)
            first_call = any(specs[n].init == "unset" for n in m.created if n in specs)
            scalar_values = tuple(self._read(m.holders[n]) for n in scalar_names)
            by_key.setdefault((self._batch_key(p), first_call, scalar_values), []).append(m)
        return [Batch(names, ms, [self._array(m.param) for m in ms],
                      [[self._array(m.states[k]) for m in ms] for k in range(len(names))],
                      dict(zip(scalar_names, scalar_values)), first_call)
                for (_, first_call, scalar_values), ms in by_key.items()]
