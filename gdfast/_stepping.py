"""The one step path of the stateful optimizers, shared by the NumPy front end (gdfast.<Name>)
and the torch drop-ins (gdfast.torch.<Name>). They differ only in how arrays are obtained and
where state lives, which they say through the hooks of :class:`StepPath`.

A step checks every param group (hyperparameter ranges, option combinations) and every
gradient before anything is written, then steps all groups in one kernel call (one batch per
group, storage signature -- the dtypes of param, states and master copy -- and step count);
state made for the step is stored only after it succeeded. The batches of a group (its
params, their states and the arrays handed to the kernel) are kept from one step to the next
and re-checked each step: making the arrays costs microseconds per tensor, checking that
nothing was replaced a fraction of that. Stored step counts and scalar states are checked when
a batch is made and whenever they change (an edit in place, a loaded state_dict): a bad one is
named as ``param_groups[i]['params'][j]: state['step']: ...``.

Precision options (every class: ``state_dtype``, ``master_weights``, ``stochastic_rounding``,
``seed``) are group entries like the hyperparameters, checked with them; they decide the dtype
of new states, whether a float32 master copy (``state['master_param']``) is kept and stepped,
and how narrowed stores round. The kernel gets them as a batch's ``precision`` entry.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import math
import numbers
import operator
import sys
from collections.abc import Set
from dataclasses import dataclass
from typing import Any, Callable, Dict, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._clip import check_group_options, clipped_scales
from ._monitor import norms
from ._spec import RULES, Rule, State, shown
from .schedules import Schedule

# Values a group may hold that cannot change without being replaced (a tensor lr can).
_SCALARS = frozenset((float, int, bool, str, type(None)))


_CHANGED = object()  # stands for a group's values that are checked again at every step


def _frozen(value: Any) -> bool:
    return type(value) in _SCALARS or (type(value) is tuple and all(
        type(x) in _SCALARS for x in value)) or is_dtype(value)


def is_dtype(x: Any) -> bool:
    """A NumPy or torch dtype (immutable, as a group's state_dtype)."""
    if isinstance(x, np.dtype):
        return True
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.dtype)


def is_tensor(x: Any) -> bool:
    torch = sys.modules.get("torch")  # a torch tensor implies torch is imported
    return torch is not None and isinstance(x, torch.Tensor)


# A stored step count is the number of steps taken: an int, exact as a double after the next
# step (torch keeps it as a float tensor, so its integral floats are counts too).
COUNT_LIMIT = 2**53
_INF = math.inf


def scheduled_steps(group: Mapping[str, Any]) -> int:
    """The steps a group with a learning-rate schedule has taken (``lr_step``, 0 if absent);
    ValueError naming lr_step if it is not a count."""
    count = count_value(group.get("lr_step", 0))
    if count is None:
        raise ValueError(f"lr_step: {COUNT_EXPECTED}, got {group.get('lr_step')!r}")
    return int(count)


def advance_schedules(groups: Sequence[Dict[str, Any]]) -> None:
    """After an optimizer step: each group with a learning-rate schedule one step on (its
    ``lr_step``)."""
    for group in groups:
        if isinstance(group.get("lr"), Schedule):
            group["lr_step"] = scheduled_steps(group) + 1


def count_value(value: Any) -> Optional[int]:
    """A stored step count as an int, or None if it is not one (bool, fraction, negative,
    NaN, not a number)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    if not isinstance(value, numbers.Integral):
        try:
            f = float(value)
        except (OverflowError, ValueError):
            return None
        if not (math.isfinite(f) and f.is_integer()):
            return None
        value = f
    count = int(value)
    return count if 0 <= count < COUNT_LIMIT else None


def scalar_state_value(value: Any) -> Optional[float]:
    """A stored scalar state (NAdam's mu_product, ASGD's eta and mu) as a float, or None if it
    is not a finite real number."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        return None
    try:
        f = float(value)
    except (OverflowError, ValueError):
        return None
    return f if math.isfinite(f) else None


# -- precision options (issue 12) ------------------------------------------------------------
# gdfast's own constructor arguments, keyword-only after torch's on every class, with their
# defaults; stored in each param group like the others.
PRECISION_OPTIONS: Dict[str, Any] = {"state_dtype": None, "master_weights": False,
                                     "stochastic_rounding": False, "seed": None,
                                     "optim_bits": 32, "min_8bit_size": 4096}
# Clipping the gradients (gdfast/_clip.py), fused into the step: by their L2 norm, max_grad_norm
# (None: none) with the norm over every group whose clip_per_group is False, or over its own;
# or each by value, max_grad_value (None: none).
CLIP_OPTIONS: Dict[str, Any] = {"max_grad_norm": None, "clip_per_group": False,
                                "max_grad_value": None}
# Monitoring (gdfast/_monitor.py): the norms of the gradients, updates and params of every group
# whose monitor is True, summed in the step's pass, kept as last_norms.
MONITOR_OPTIONS: Dict[str, Any] = {"monitor": False}
GDFAST_OPTIONS: Dict[str, Any] = {**PRECISION_OPTIONS, **CLIP_OPTIONS, **MONITOR_OPTIONS}
SEED_LIMIT = 2**64
NARROW = frozenset(("bfloat16", "float16"))  # stored narrower than they are computed
SINGLE = frozenset(("float32", "bfloat16", "float16"))  # stored types of float32 math


def dtype_name(dtype: Any) -> str:
    """'float32', 'bfloat16', ... for a NumPy or torch dtype."""
    name = str(dtype)
    return name[6:] if name.startswith("torch.") else name


# An 8-bit state `name` (uint8 codes, core/quant8.h) keeps its blocks' absmax as name + ABSMAX.
ABSMAX = "_absmax"
BLOCK = 256  # elements per block of an 8-bit state


def absmax_size(param: Any) -> int:
    """The number of blocks of an 8-bit state of ``param`` (complex: real pairs)."""
    n = int(math.prod(param.shape)) * (2 if getattr(param, "is_complex", bool)() else 1)
    return -(-n // BLOCK)


def is_codes(state: Any) -> bool:
    """Whether a state array holds 8-bit codes."""
    return dtype_name(getattr(state, "dtype", None)) == "uint8"


def kept_dtype(param_dtype: Any, state: str, value_dtype: Any) -> bool:
    """Whether a loaded state keeps its stored dtype (else: it takes the param's, as
    torch.optim's load_state_dict casts it): the master copy and an 8-bit state's codes and
    absmax always; the others when both the param and the state are stored types of float32
    math (float32, bfloat16, float16), which the kernels pair in any combination, float16
    states with float16 params only."""
    if state == "master_param" or state.endswith(ABSMAX) or dtype_name(value_dtype) == "uint8":
        return True
    param, value = dtype_name(param_dtype), dtype_name(value_dtype)
    # (float16 states only for float16 params, as state_dtype allows: others may leave its range)
    return param in SINGLE and value in SINGLE and (value != "float16" or param == "float16")


@dataclass(frozen=True)
class Precision:
    """A group's precision options, checked (state_dtype as the front end's dtype)."""

    state_dtype: Any = None  # of new states; None: the param's (float32 with master weights)
    master: bool = False  # a float32 master copy, state['master_param'], is stepped
    stochastic: bool = False  # narrowed stores round stochastically
    seed: Optional[int] = None
    bits8: bool = False  # new states of params of min_8bit_size elements or more are 8-bit
    min_8bit_size: int = 4096


DEFAULT_PRECISION = Precision()


def check_precision(group: Mapping[str, Any], state_dtype_of: Callable[[Any], Any]) -> Precision:
    """A group's precision options, checked: TypeError/ValueError naming the option
    (state_dtype_of: a state_dtype as the front end's dtype, TypeError naming it otherwise)."""
    get = group.get
    flags = []
    for name in ("master_weights", "stochastic_rounding"):
        value = get(name, False)
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}: expected True or False, got {value!r}")
        flags.append(bool(value))
    master, stochastic = flags
    state_dtype = get("state_dtype")
    if state_dtype is not None:
        state_dtype = state_dtype_of(state_dtype)
    seed = get("seed")
    if seed is not None:
        if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, numbers.Integral):
            raise TypeError(f"seed: expected None or an int in [0, 2**64), got {seed!r}")
        seed = int(seed)
        if not 0 <= seed < SEED_LIMIT:
            raise ValueError(f"seed: expected None or an int in [0, 2**64), got {shown(seed)}")
    if master and stochastic:
        raise ValueError("master_weights=True and stochastic_rounding=True: choose one (the "
                         "float32 master copy keeps every small update exactly, which "
                         "stochastic rounding does only on average)")
    if stochastic and seed is None:
        raise ValueError("seed: stochastic_rounding=True needs one (an int in [0, 2**64)), "
                         "got None")
    bits = get("optim_bits", 32)
    if isinstance(bits, (bool, np.bool_)) or bits not in (8, 32):
        raise ValueError(f"optim_bits: expected 32 or 8 (8-bit blockwise states), got {bits!r}")
    min_size = get("min_8bit_size", 4096)
    if isinstance(min_size, (bool, np.bool_)) or not isinstance(min_size, numbers.Integral) \
            or min_size < 0:
        raise (ValueError if isinstance(min_size, numbers.Integral) else TypeError)(
            f"min_8bit_size: expected an int >= 0, got {min_size!r}")
    if not (master or stochastic or state_dtype is not None or bits == 8):
        return DEFAULT_PRECISION
    return Precision(state_dtype, master, stochastic, seed, bits == 8, int(min_size))


def check_param_precision(dtype: Any, precision: Precision, who: str) -> None:
    """A param's dtype against its group's precision options: ValueError naming it (as
    ``who``) for master weights of a param that is no narrower than float32, and for a
    state_dtype its param cannot be stepped with."""
    if precision is DEFAULT_PRECISION:
        return
    name = dtype_name(dtype)
    if precision.master and name not in NARROW:
        raise ValueError(f"{who}: master_weights=True is for bfloat16 and float16 params, "
                         f"got a {name} param (stored as wide as it is computed, it needs "
                         "no master copy)")
    if precision.state_dtype is not None:
        wanted = dtype_name(precision.state_dtype)
        if name not in SINGLE:
            raise ValueError(f"{who}: state_dtype={wanted}: a {name} param keeps {name} "
                             "states (state_dtype is for float32, bfloat16 and float16 "
                             "params)")
        if wanted == "float16" and name != "float16":
            raise ValueError(f"{who}: state_dtype=float16 is for float16 params; the states "
                             f"of a {name} param may leave float16's range (normal numbers "
                             "6.1e-05 to 65504): use bfloat16 or float32")


COUNT_EXPECTED = "expected an int >= 0"


def keep_unsaved_options(groups: Sequence[Dict[str, Any]],
                         saved_groups: Sequence[Mapping[str, Any]],
                         before: Sequence[Mapping[str, Any]], keys: Iterable[str]) -> None:
    """After torch.optim's load_state_dict: each of ``keys`` that a saved group lacks (a
    torch.optim state_dict has none of gdfast's options) takes the value the group had before
    (``before``), rather than none."""
    keys = tuple(keys)
    for group, saved, old in zip(groups, saved_groups, before):
        for key in keys:
            if key not in saved and key in old:
                group[key] = old[key]


def next_rounding_count(groups: Sequence[Mapping[str, Any]]) -> int:
    """The optimizer's count of stochastically rounded steps after this one: one more than the
    largest ``rounding_step`` its groups keep; ValueError naming a group whose count is not an
    int >= 0."""
    done = 0
    for i, group in enumerate(groups):
        count = count_value(group.get("rounding_step", 0))
        if count is None or count + 1 >= COUNT_LIMIT:
            raise ValueError(f"param_groups[{i}]: rounding_step: {COUNT_EXPECTED}, got "
                             f"{group.get('rounding_step')!r}")
        done = max(done, count)
    return done + 1
SCALAR_EXPECTED = "expected a finite number"

# Constructor arguments that hold several of a rule's hyperparameters, in order; a rule takes
# the leading ones it has (Adam's betas are (beta1, beta2), Adan's (beta1, beta2, beta3)).
TUPLES: Dict[str, Tuple[str, ...]] = {
    "betas": ("beta1", "beta2", "beta3"),
    "etas": ("etaminus", "etaplus"),
    "step_sizes": ("step_size_min", "step_size_max"),
}


def tuple_arguments(fields: Iterable[str]) -> List[Tuple[str, Tuple[str, ...]]]:
    """(argument, names) of each tuple argument of a rule with these hyperparameters."""
    held = set(fields)
    out = []
    for key, names in TUPLES.items():
        names = tuple(n for n in names if n in held)
        if names:
            out.append((key, names))
    return out


def expected_tuple(names: Sequence[str]) -> str:
    """'expected a pair (beta1, beta2)', 'expected a triple (beta1, beta2, beta3)'."""
    return f"expected {'a pair' if len(names) == 2 else 'a triple'} ({', '.join(names)})"


@dataclass(frozen=True)
class Constructor:
    """An optimizer class's torch-style constructor (gdfast/_constructors.py): its signature
    after ``params``, the rule it steps and the arguments it fixes (AdamW's decoupling)."""

    name: str
    rule: Rule
    signature: inspect.Signature
    fixed: Mapping[str, Any]
    doc: str
    # The constructor itself: checks torch's constructor makes beyond ranges and option
    # combinations; may return arguments to store in another form (Adam's tensor betas).
    body: Callable[..., Optional[Dict[str, Any]]]
    mixin: Optional[type] = None  # methods of the class beyond the step (Schedule-Free's eval)

    @functools.cached_property
    def group_keys(self) -> Tuple[str, ...]:
        """The group entries a step reads: hyper_values's, then the precision options."""
        plain, tuples = self._sources
        return tuple(n for n, _ in plain) + tuple(t[0] for t in tuples) + tuple(GDFAST_OPTIONS)

    @functools.cached_property
    def scalar_names(self) -> Tuple[str, ...]:
        return tuple(f.name for f in self.rule.scalar_states)

    def defaults(self, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Dict[str, Any]:
        """Every argument after ``params``, as a param group stores it."""
        bound = self.signature.bind(*args, **kwargs)
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        if arguments.get("fused") and arguments.get("foreach"):
            raise RuntimeError("`fused` and `foreach` cannot be `True` together.")  # as torch
        own = inspect.signature(self.body).parameters
        arguments.update(self.body(**{k: v for k, v in arguments.items()
                                      if k not in GDFAST_OPTIONS or k in own}) or {})
        return {**arguments, **self.fixed}

    def hyper_values(self, group: Mapping[str, Any]) -> Dict[str, Any]:
        """The rule's hyperparameters from a param group, tuples unpacked (betas -> beta1,
        beta2); one a group lacks (an older state_dict's) takes the rule's default. A tuple
        argument that is not a tuple of numbers (or tensors) raises naming it and the element."""
        plain, tuples = self._sources
        out = {name: group.get(name, default) for name, default in plain}
        for key, names, defaults in tuples:
            value = group.get(key, defaults)
            if type(value) is not tuple:  # (tuples of numbers: the usual case, checked below)
                if isinstance(value, (str, bytes, Mapping, Set)) or not hasattr(value, "__iter__"):
                    # unordered, or not a collection: no first and second element
                    raise TypeError(f"{key}: {expected_tuple(names)}, got {value!r}")
            try:
                values = tuple(value)
            except TypeError:
                values = ()
            if len(values) != len(names):
                raise ValueError(f"{key}: {expected_tuple(names)}, got {value!r}")
            for i, (name, x) in enumerate(zip(names, values)):
                if type(x) is not float and (isinstance(x, bool) or not (
                        isinstance(x, numbers.Real) or is_tensor(x))):
                    raise TypeError(f"{key}[{i}] ({name}): expected "
                                    f"{self._ranges[name].describe()}, got {x!r}")
                out[name] = x
        return out

    @functools.cached_property
    def _ranges(self) -> Dict[str, Any]:
        return {f.name: f.range for f in self.rule.fields}

    @functools.cached_property
    def display_names(self) -> Dict[str, str]:
        """A hyperparameter's name as the constructor takes it: betas[0] for beta1."""
        return {name: f"{key}[{i}]" for key, names in tuple_arguments(self._ranges)
                for i, name in enumerate(names)}

    @functools.cached_property
    def _sources(self) -> Tuple[Tuple[Tuple[str, Any], ...], Tuple[Tuple[Any, ...], ...]]:
        """Where hyper_values finds each hyperparameter: (name, default) read as such, and
        (group key, names, defaults) for the tuples."""
        options = {f.name: f.default for f in self.rule.options}
        tuples = tuple((key, names, tuple(options[n] for n in names))
                       for key, names in tuple_arguments(options))
        packed = {name for _, names, _ in tuples for name in names}
        return tuple((n, d) for n, d in options.items() if n not in packed), tuples


CONSTRUCTORS: Dict[str, Constructor] = {}


Body = Callable[..., Optional[Dict[str, Any]]]


_GDFAST_NOTES = {"state_dtype": "Optional[dtype]", "master_weights": "bool",
                 "stochastic_rounding": "bool", "seed": "Optional[int]", "optim_bits": "int",
                 "min_8bit_size": "int", "max_grad_norm": "Optional[float]",
                 "clip_per_group": "bool", "max_grad_value": "Optional[float]",
                 "monitor": "bool"}
_GDFAST_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default,
                      annotation=_GDFAST_NOTES[name])
    for name, default in GDFAST_OPTIONS.items()]

_GDFAST_DOC = """

gdfast's precision options (bfloat16/float16 params; README "Lower precision"):
state_dtype: dtype of new states (None: the param's, as torch; float32 with master_weights).
master_weights: keep a float32 copy of each bfloat16/float16 param, state['master_param'];
the step updates it and writes the param rounded to nearest.
stochastic_rounding: round narrowed stores stochastically (seed: an int in [0, 2**64); None:
drawn at construction). Not together with master_weights.
optim_bits: 8 keeps the states of params of min_8bit_size elements or more as blockwise 8-bit
codes (state[name], uint8) with one float32 absmax per block of 256 (state[name + '_absmax']);
smaller params keep float32 states, or state_dtype's (README "8-bit states").

Fused clipping (README "Clipping"): max_grad_norm clips the gradients by their L2 norm over
every group whose clip_per_group is False (clip_per_group=True: over the group's own), as
torch.nn.utils.clip_grad_norm_ before the step; the norm is kept as last_grad_norm.
max_grad_value clamps each gradient to [-max_grad_value, max_grad_value], as
torch.nn.utils.clip_grad_value_ before the step (not with max_grad_norm).

Monitoring (README "Monitoring"): monitor=True sums the squares of the gradients, the updates
and the new params of the group in the step's own pass; last_norms holds the L2 norms of the
last step over every monitored group: {'grad_norm', 'update_norm', 'param_norm'}."""


def constructor(rule: str, mixin: Optional[type] = None, **fixed: Any) -> Callable[[Body], Body]:
    """Registers a torch-signature constructor for the front ends to build their classes from;
    every class takes the precision and clipping options after torch's arguments (but for one
    the class takes itself: Adan's max_grad_norm)."""
    def register(fn: Body) -> Body:
        signature = inspect.signature(fn)
        own = signature.parameters
        signature = signature.replace(parameters=[
            *own.values(), *(p for p in _GDFAST_PARAMETERS if p.name not in own)])
        CONSTRUCTORS[fn.__name__] = Constructor(fn.__name__, RULES[rule], signature, fixed,
                                                (inspect.getdoc(fn) or "") + _GDFAST_DOC, fn,
                                                mixin)
        return fn
    return register


# The 8-bit classes, named as bitsandbytes and torchao name them: the class they are named after
# with optim_bits=8 fixed (and not an argument).
EIGHT_BIT = {"Adam8bit": "Adam", "AdamW8bit": "AdamW", "Lion8bit": "Lion", "Lamb8bit": "Lamb"}


def eight_bit_constructors() -> List[Constructor]:
    out = []
    for name, base_name in EIGHT_BIT.items():
        base = CONSTRUCTORS[base_name]
        signature = base.signature.replace(parameters=[
            p for p in base.signature.parameters.values() if p.name != "optim_bits"])
        doc = (f"{base_name} with blockwise 8-bit states (optim_bits=8): "
               f"{base.doc[0].lower()}{base.doc[1:]}")
        out.append(dataclasses.replace(base, name=name, signature=signature, doc=doc,
                                       fixed={**base.fixed, "optim_bits": 8}))
    return out


def make_class(ctor: Constructor, base: type, module: str) -> type:
    """The front end's class for a constructor: ``base.__init__(self, params, *args,
    **kwargs)`` under the constructor's name, signature (for help()) and docstring."""
    def __init__(self: Any, params: Any, *args: Any, **kwargs: Any) -> None:
        base.__init__(self, params, *args, **kwargs)  # type: ignore[misc]

    positional = inspect.Parameter.POSITIONAL_OR_KEYWORD
    __init__.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter("self", positional), inspect.Parameter("params", positional),
         *ctor.signature.parameters.values()])
    bases = (base,) if ctor.mixin is None else (ctor.mixin, base)
    return type(ctor.name, bases, {"_ctor": ctor, "__init__": __init__, "__doc__": ctor.doc,
                                   "__module__": module, "__qualname__": ctor.name})


class Member:
    """One parameter of a batch: where its state lives and what the kernel gets of it."""

    __slots__ = ("key", "param", "position", "store", "is_new", "states", "holders", "created",
                 "objects", "layout")

    def __init__(self, key: Hashable, param: Any, position: int, store: Dict[str, Any],
                 is_new: bool) -> None:
        self.key, self.param, self.position = key, param, position
        self.store = store  # the param's state dict (a new one is stored after the step)
        self.is_new = is_new
        self.states: List[Any] = []  # the state objects, per used state name
        self.holders: Dict[str, Any] = {}  # step count and scalar states, as stored
        self.created: Dict[str, Any] = {}  # made for this step, stored once it succeeded
        self.objects: List[Tuple[str, Any]] = []  # (name, object) the store must still hold
        self.layout: Any = None  # the front end's note on how its arrays were made (torch)


class Batch:
    """Params of one group stepped by one kernel call: same device and storage signature
    (dtypes of param, states, master copy), same step count and scalar states. Kept across
    steps while :meth:`StepPath._unchanged` holds."""

    __slots__ = ("names", "members", "params", "positions", "identities", "on_device",
                 "param_arrays", "state_args", "values", "first_call", "hyper", "indices",
                 "front", "where", "layouts", "precision", "masters", "narrow", "keys",
                 "expected", "absmax")

    def __init__(self, names: Tuple[str, ...], members: List[Member], identities: Any,
                 on_device: bool, param_arrays: List[Any], state_args: Tuple[Any, ...],
                 values: Dict[str, Any], first_call: bool) -> None:
        self.names, self.members = names, members
        self.params = [m.param for m in members]
        self.positions = [m.position for m in members]  # in the step's list of members
        self.identities = identities
        self.on_device = on_device  # CUDA: the call needs a stream, perhaps device scalars
        self.hyper: Tuple[Any, ...] = ()  # (group values, scalars, the hyper tuple) last built
        self.indices: Optional[Tuple[int, ...]] = None  # of its params in their group
        self.param_arrays, self.state_args = param_arrays, state_args
        self.values = values  # the step count and scalar states of every member
        self.first_call = first_call  # states made on this call are written before read (SGD)
        self.front: Any = None  # what the front end keeps per batch
        self.where = ""  # "param_groups[i]": the group, for messages
        # The members' layout notes, or None if every member's is None (the usual case).
        self.layouts: Optional[List[Any]] = None
        if any(m.layout is not None for m in members):
            self.layouts = [m.layout for m in members]
        self.precision = DEFAULT_PRECISION  # the group's options the batch was made with
        self.masters: Optional[List[Any]] = None  # the kernel's master arrays (master weights)
        # Per state of the rule: None, or the absmax arrays of its 8-bit codes; None if no
        # state is 8-bit.
        self.absmax: Optional[Tuple[Any, ...]] = None
        self.narrow = False  # some array it writes is bfloat16/float16 (rounding matters)
        # (index of the group's first param among all, the members' indices among all params)
        self.keys: Tuple[int, Tuple[int, ...]] = (-1, ())
        # What the state must hold for the batch to stand, flat for a check in C loops: the
        # members' keys and stores, then (store, name, object) for every object they hold.
        # None until first needed; False where some store is no dict (the loop checks those).
        self.expected: Any = None


Members = List[Tuple[Hashable, Any, Any, int]]  # (state key, param, grad array, index in group)
# hyperparameters, used state names, precision options
CheckedGroup = Tuple[Dict[str, Any], Tuple[str, ...], Precision]
DeviceCall = Tuple[Any, Any, Dict[str, Any], Any, Any]  # stream, device scalars, hyper, step, scale


class StepPath:
    """The shared part of a stateful optimizer. Front ends set ``_ctor`` and implement the
    hooks below; they keep ``param_groups`` and ``state`` (a param's state dict by its key:
    its index for NumPy, the tensor for torch) themselves."""

    _ctor: Constructor
    param_groups: List[Dict[str, Any]]
    state: Any  # Dict[key, Dict[str, Any]]: torch.optim's is a defaultdict keyed by tensor
    # Per group id: (group, (its members' state keys, their indices in it), its batches).
    _batch_cache: Dict[int, Tuple[Dict[str, Any], Tuple[List[Hashable], List[int]], List[Batch]]]
    # Per group id: (group, the values it was checked with, the check's result).
    _checked_cache: Dict[int, Tuple[Mapping[str, Any], List[Any], "CheckedGroup"]]
    # The L2 norm of the gradients the last step clipped by (max_grad_norm), over the groups
    # clipped together; None if none was.
    last_grad_norm: Optional[float] = None
    # The norms of the last step over the groups with monitor=True (None if none was):
    # grad_norm, update_norm, param_norm.
    last_norms: Optional[Dict[str, float]] = None
    # A step in parts (step_in_backward) adds every part's monitoring sums here (else None).
    _pass_sums: Optional[np.ndarray] = None
    # Step counts and scalar states are objects updated in place (tensors), not numbers.
    _scalars_are_objects = False
    # Hyperparameters go through _host before the checks (torch: tensors to numbers).
    _converts_host_values = False
    # The front end's float32 dtype (states of a param with a master copy default to it), and
    # its uint8 (the codes of 8-bit states).
    _float32: Any = None
    _uint8: Any = None

    # -- hooks ---------------------------------------------------------------------------------
    def _host(self, value: Any) -> Any:
        """A hyperparameter as the range checks see it (torch: a tensor lr as a number)."""
        return value

    def _identities(self, params: List[Any]) -> Any:
        """What must not change in the params for their cached arrays to stay valid."""
        return None

    def _batch_key(self, param: Any) -> Hashable:
        """Params whose keys differ are never stepped in one kernel call (dtype, device)."""
        raise NotImplementedError

    def _array(self, tensor: Any) -> Any:
        """What the kernel gets for a param or state."""
        return tensor

    def _new_state(self, param: Any, state: State, fill: float, dtype: Any) -> Any:
        """A new state array like the param, of ``dtype`` (None: the param's)."""
        raise NotImplementedError

    def _new_master(self, param: Any) -> Any:
        """A float32 copy of a param, laid out like it."""
        raise NotImplementedError

    def _new_absmax(self, param: Any) -> Any:
        """The blocks' absmax of a new 8-bit state of a param: float32 zeros, one per block."""
        raise NotImplementedError

    def _state_dtype(self, value: Any) -> Any:
        """A state_dtype option as the front end's dtype (float32, bfloat16 or float16);
        TypeError naming state_dtype otherwise."""
        raise NotImplementedError

    def _draw_seed(self) -> int:
        """A seed for stochastic rounding when none is given (an int in [0, 2**64))."""
        raise NotImplementedError

    def _new_scalar(self, param: Any, name: str, value: Any) -> Any:
        """A new step count or scalar state as it is stored."""
        return value

    def _read(self, holder: Any, name: str, where: str) -> Any:
        """A stored step count or scalar state's value (None: not read on the host), checked:
        TypeError/ValueError naming ``where`` and ``name`` otherwise."""
        return self._checked_scalar(holder, name, where)

    def _member_arrays(self, m: Member, where: str) -> Tuple[Any, List[Any]]:
        """What the kernel gets for a member's param and states (may set ``m.layout``; raises
        naming ``where``, the param, for arrays the kernel cannot step)."""
        return self._array(m.param), [self._array(s) for s in m.states]

    def _scalar_values(self, batch: Batch) -> Optional[Dict[str, Any]]:
        """The batch's stored step count and scalar states, or None if they differ between
        its members (one was edited in place) or one is gone, None or unhashable (the batch is
        then made anew, which checks them and names the culprit)."""
        values = {}
        for name in batch.values:
            try:
                seen = {m.store[name] for m in batch.members}
            except (KeyError, TypeError):
                return None
            if len(seen) != 1 or None in seen:  # (None: only a device count, torch's)
                return None
            values[name] = seen.pop()
        return values

    def _set_scalar_values(self, batch: Batch, values: Mapping[str, Any]) -> None:
        """Store a step's new step count and scalar states for every member."""
        for m in batch.members:
            m.store.update(values)

    def _grad_arrays(self, batch: Batch, grads: List[Any]) -> List[Any]:
        """What the kernel gets for the batch's grads (members_of's third entries)."""
        return grads

    def _on_device(self, param: Any) -> bool:
        """Whether the param lives on a CUDA device (then _device_call builds its call)."""
        return False

    def _device_call(self, batch: Batch, group: Mapping[str, Any], values: Dict[str, Any],
                     step: Any, amp: Mapping[str, Any]) -> "DeviceCall":
        """(stream, device_scalars, values, step, grad_scale) for a batch on a device."""
        raise NotImplementedError

    def _after_step(self, batches: List[Batch]) -> None:
        """After a successful call (torch: bump the version counters of what was written)."""

    # -- checks --------------------------------------------------------------------------------
    def _batch_hyper(self, batch: Batch, values: Mapping[str, Any], step: Any,
                     grad_scale: Any) -> Tuple[Any, ...]:
        """The kernel's hyper tuple for a batch (Rule.hyper), the field part reused while the
        group's checked values (the same dict while unchanged) and the batch's scalar states
        stay the same."""
        scalars = tuple(batch.values[name] for name in self._ctor.scalar_names)
        cached = batch.hyper
        if not cached or cached[0] is not values or cached[1] != scalars:
            for name, value in zip(self._ctor.scalar_names, scalars):  # edited in place?
                if value is not None and not (type(value) is float and -_INF < value < _INF):
                    self._checked_scalar(value, name, self._member_name(batch, 0))
            fields = self._ctor.rule.hyper({**values, **batch.values})[:-2]
            cached = batch.hyper = (values, scalars, fields)
        return (*cached[2], step, grad_scale)

    def _checked_scalar(self, value: Any, name: str, where: str) -> Any:
        """A stored step count (an int >= 0) or scalar state (a finite number), as stored;
        TypeError/ValueError starting with ``where: state['name']`` otherwise."""
        ok = count_value(value) if name == "step" else scalar_state_value(value)
        if ok is None:
            wrong_type = isinstance(value, bool) or not isinstance(value, numbers.Real)
            expected = COUNT_EXPECTED if name == "step" else SCALAR_EXPECTED
            raise (TypeError if wrong_type else ValueError)(
                f"{where}: state[{name!r}]: {expected}, got {value!r}")
        return value

    @staticmethod
    def _member_name(batch: Batch, k: int) -> str:
        """A batch member as the user finds it: param_groups[i]['params'][j]."""
        index = batch.indices[k] if batch.indices is not None else batch.members[k].position
        return f"{batch.where}['params'][{index}]"

    def _member_bits8(self, m: Member, names: Tuple[str, ...], precision: Precision,
                      values: Mapping[str, Any], who: str) -> bool:
        """Whether a member's new states are 8-bit: those of a param that already keeps 8-bit
        states, or, for one with none yet, optim_bits=8 and min_8bit_size elements or more.
        ValueError naming the param where its dtype or the rule's states cannot be 8-bit."""
        kept = [m.store.get(n) for n in names if m.store.get(n) is not None]
        if kept:
            return any(is_codes(s) for s in kept)
        if not precision.bits8 or math.prod(m.param.shape) < precision.min_8bit_size:
            return False
        if dtype_name(m.param.dtype) not in SINGLE:
            raise ValueError(f"{who}: optim_bits=8 is for float32, bfloat16 and float16 params, "
                             f"got a {dtype_name(m.param.dtype)} param")
        for spec in self._ctor.rule.states:
            if spec.name in names and spec.iterate:
                raise ValueError(f"{who}: optim_bits=8: state[{spec.name!r}] is a point like "
                                 "the param, not a statistic: 8-bit codes cannot hold it as "
                                 "precisely as the param; use optim_bits=32")
            if spec.name in names and spec.fill_from and float(values[spec.fill_from]) != 0:
                raise ValueError(f"{who}: optim_bits=8: state[{spec.name!r}] starts at "
                                 f"{spec.fill_from}={values[spec.fill_from]!r}, which 8-bit "
                                 "blockwise codes hold only approximately; use optim_bits=32")
        return True

    def _states_dtype(self, precision: Precision) -> Any:
        """The dtype of a group's new states that are not 8-bit (None: the param's): float32
        with master weights, and for the params below min_8bit_size of an 8-bit group (as
        bitsandbytes keeps them)."""
        if precision.state_dtype is not None:
            return precision.state_dtype
        return self._float32 if precision.master or precision.bits8 else None

    def _scalar_starts(self, values: Mapping[str, Any]) -> Dict[str, float]:
        rule = self._ctor.rule
        return {f.name: rule.scalar_start(f, values) for f in rule.scalar_states}

    def _checked_group(self, group: Mapping[str, Any], where: str) -> CheckedGroup:
        """The group's hyperparameters (range-checked) and the states a step with them uses;
        TypeError/ValueError prefixed with ``where`` otherwise. A group whose values are the
        same immutable objects as at its last check is not checked again."""
        snapshot = list(map(group.get, self._ctor.group_keys))
        cached = self._checked_cache.get(id(group))
        # (the snapshot is kept only when every value is immutable: then the same objects are
        # the same values)
        if cached is not None and cached[0] is group and all(map(operator.is_, snapshot,
                                                                 cached[1])):
            return cached[2]
        result = self._check_group(group, where)
        self._checked_cache[id(group)] = (group, snapshot if all(map(_frozen, snapshot)) else
                                          [_CHANGED] * len(snapshot), result)
        return result

    def _check_group(self, group: Mapping[str, Any], where: str) -> CheckedGroup:
        rule = self._ctor.rule
        try:
            values = self._ctor.hyper_values(group)
            if isinstance(values.get("lr"), Schedule):  # evaluated for the step to be taken
                values["lr"] = values["lr"](scheduled_steps(group))
            if self._converts_host_values:
                try:
                    values = {k: self._host(v) for k, v in values.items()}
                except (TypeError, ValueError):  # again, naming the culprit
                    values = {k: self._host_named(k, v) for k, v in values.items()}
            rule.check(values)
            names = rule.used_states(values)
            precision = check_precision(group, self._state_dtype)
            check_group_options(group)
        except (TypeError, ValueError) as e:
            raise type(e)(f"{where}{e}") from None
        return values, names, precision

    def _host_named(self, name: str, value: Any) -> Any:
        try:
            return self._host(value)
        except (TypeError, ValueError) as e:
            shown = self._ctor.display_names.get(name, name)
            raise type(e)(f"{shown}: {e}") from None

    # -- stepping ------------------------------------------------------------------------------
    def _step_all(self, members_of: Callable[[int, Dict[str, Any]], Members],
                  amp: Mapping[str, Any], run: bool = True,
                  advance: bool = True) -> Optional[int]:
        """One step of every group, in one kernel call. ``members_of(i, group)`` lists (state
        key, param, grad, index in the group) for the params with gradients (_grad_arrays makes
        what the kernel gets of the grads, and may raise for one). ``amp`` holds grad_scale (a
        number, or a CUDA tensor) and, for CUDA, found_inf. ``run=False`` checks all of it and
        changes nothing (a step that found_inf skips). ``advance=False`` leaves the
        optimizer-wide counts (schedules, stochastic rounding) to the caller: a step in parts
        (step_in_backward) advances them once, with the rounding count returned here."""
        if len(self._batch_cache) > len(self.param_groups):  # a group was removed: let go
            live = {id(g) for g in self.param_groups}  # of its arrays
            for cache in (self._batch_cache, self._checked_cache):
                for key in [k for k in cache if k not in live]:
                    del cache[key]
        checked = [self._checked_group(g, f"param_groups[{i}]: ")
                   for i, g in enumerate(self.param_groups)]
        work: List[Tuple[Batch, List[Any], Dict[str, Any], Dict[str, Any], Any]] = []
        first = 0  # the group's first param's index among all params (stochastic rounding)
        for i, group in enumerate(self.param_groups):
            members = members_of(i, group)
            if members:
                values, names, precision = checked[i]
                for batch in self._batches(group, members, names, values, precision,
                                           f"param_groups[{i}]"):
                    grads = self._grad_arrays(batch, [members[k][2] for k in batch.positions])
                    if precision.stochastic and batch.keys[0] != first:
                        assert batch.indices is not None
                        batch.keys = (first, tuple(first + j for j in batch.indices))
                    # messages name arrays by their index in the group
                    work.append((batch, grads, group, values,
                                 (f"param_groups[{i}]: ", batch.indices)))
            first += len(group["params"])
        if not work:
            if self._pass_sums is None:
                self.last_norms = None
            return None
        calls, stream = [], None
        rounding = self._rounding_count(work)
        scales = self._clipped_scales(work, amp["grad_scale"]) if run else None
        monitored = any(w[2].get("monitor", False) for w in work)
        sums = (self._pass_sums if self._pass_sums is not None else np.zeros(3)) if monitored \
            else None
        for k, (batch, grads, group, values, label) in enumerate(work):
            step, grad_scale, device_scalars = self._step_arg(batch), amp["grad_scale"], None
            if scales is not None:  # (host numbers: the clip factor is folded in)
                grad_scale = scales[k]
            if batch.on_device:
                stream, device_scalars, values, step, grad_scale = self._device_call(
                    batch, group, values, step, {**amp, "grad_scale": grad_scale})
            hyper = self._batch_hyper(batch, values, step, grad_scale)
            if group.get("monitor", False):
                bound = group.get("max_grad_value")
                hyper = (*hyper, math.inf if bound is None else float(bound), sums)
            elif group.get("max_grad_value") is not None:
                hyper = (*hyper, float(group["max_grad_value"]))
            call: Tuple[Any, ...] = (batch.param_arrays,
                                     (grads, *self._more_inputs(batch, grads)), batch.state_args,
                                     hyper, label, device_scalars)
            stochastic = batch.precision.stochastic and batch.narrow
            if batch.masters is not None or stochastic or batch.absmax is not None:
                # (a master copy: the kernel reads it, writes it and the param)
                call += ((batch.masters, batch.precision.seed if stochastic else None,
                          batch.keys[1] if stochastic else None,
                          rounding if stochastic else None, batch.absmax),)
            calls.append(call)
        if not run:
            _core.check(self._ctor.rule.id, calls, stream)
            self.last_norms = None
            return None
        results = _core.step(self._ctor.rule.id, calls, stream)
        if self._pass_sums is None:
            self.last_norms = None if sums is None else norms(sums, amp["grad_scale"])
        for k, (batch, *_) in enumerate(work):
            self._commit(batch, None if results is None else results[k])
        if advance:
            self._advance_counts(rounding)
        self._after_step([w[0] for w in work])
        return rounding

    def _more_inputs(self, batch: Batch, grads: List[Any]) -> Tuple[Any, ...]:
        """The kernel's inputs after the gradients (Sophia's Hessian estimate): none here."""
        return ()

    def _advance_counts(self, rounding: Optional[int]) -> None:
        """After an optimizer step: every group's schedule one step on, and the count of
        stochastically rounded steps (_rounding_count) stored."""
        advance_schedules(self.param_groups)
        if rounding is not None:
            for group in self.param_groups:
                group["rounding_step"] = rounding

    def _clipped_scales(self, work: Sequence[Tuple[Any, ...]],
                        grad_scale: Any) -> Optional[List[Any]]:
        """Each call's grad_scale with its group's clipping folded in (None: no group clips);
        the shared norm is kept as ``last_grad_norm`` (_clip.clipped_scales)."""
        scales, self.last_grad_norm = clipped_scales(
            [(group, grads, dtype_name(batch.params[0].dtype) == "float64")
             for batch, grads, group, *_ in work], grad_scale)
        return scales

    def _rounding_count(self, work: Sequence[Tuple[Any, ...]]) -> Optional[int]:
        """What keys this step's stochastic rounding besides the seed where the rule keeps no
        step count of its own (SGD's step argument is 1 or 2, Lion has none: a key repeating
        every step would round each element the same way every time): the optimizer's count
        of stochastically rounded steps, kept in every group as ``rounding_step`` (one count
        for all groups, so that how params are grouped does not matter). None where the rule
        counts steps (the kernel takes the step) or nothing rounds stochastically."""
        if self._ctor.rule.step == "counted" or not any(
                w[0].precision.stochastic and w[0].narrow for w in work):
            return None
        return next_rounding_count(self.param_groups)

    def _step_arg(self, batch: Batch) -> Any:
        kind = self._ctor.rule.step
        if kind == "counted":
            count = batch.values["step"]
            if count is None:  # a capturable count, on the device
                return None
            # NumPy keeps an int, torch a float (read from its tensor); in range unless edited
            # in place, which the slow path names
            if not (type(count) is int or type(count) is float and count.is_integer()) or not (
                    0 <= count < COUNT_LIMIT):
                self._checked_scalar(count, "step", self._member_name(batch, 0))
            return int(count) + 1
        if kind == "first_call":
            return 1 if batch.first_call else 2
        return 0

    def _commit(self, batch: Batch, scalars: Optional[Tuple[float, ...]]) -> None:
        """After a successful call: store what was made for it, advance counts and scalars."""
        for m in batch.members:
            if m.created:
                m.store.update(m.created)
                m.created = {}
            if m.is_new and m.store:  # a stateless param (plain SGD) stores nothing
                self.state[m.key] = m.store
                m.is_new = False
        new_values = dict(batch.values)
        if new_values.get("step") is not None:
            new_values["step"] = int(new_values["step"]) + 1
        if scalars is not None:
            new_values.update(zip((f.name for f in self._ctor.rule.scalar_states), scalars))
        if new_values:
            self._set_scalar_values(batch, new_values)
        batch.values = new_values
        batch.first_call = False

    # -- batches -------------------------------------------------------------------------------
    def _batches(self, group: Dict[str, Any], members: Members, names: Tuple[str, ...],
                 values: Mapping[str, Any], precision: Precision, where: str) -> List[Batch]:
        # (positions too: they key stochastic rounding and name the params in messages)
        keys = [m[0] for m in members], [m[3] for m in members]
        cached = self._batch_cache.get(id(group))
        if (cached is not None and cached[0] is group and len(cached[1][0]) == len(keys[0])
                and all(map(operator.is_, cached[1][0], keys[0])) and cached[1][1] == keys[1]
                and all(self._unchanged(b, names, precision) for b in cached[2])):
            for b in cached[2]:
                b.where = where  # (a group before it may have been removed)
            return cached[2]
        batches = self._new_batches(members, names, values, precision, where)
        self._batch_cache[id(group)] = (group, keys, batches)
        return batches

    def _unchanged(self, batch: Batch, names: Tuple[str, ...], precision: Precision) -> bool:
        """Same param memory and the same state objects as when the batch was made, and one
        step count and scalar state value for all (none was edited in place). Updates
        ``batch.values`` from the stored values."""
        if names != batch.names:  # e.g. amsgrad switched on
            return False
        if precision is not batch.precision and precision != batch.precision:
            return False
        if batch.identities is not None and self._identities(batch.params) != batch.identities:
            return False
        if not self._same_objects(batch):
            return False
        values = self._scalar_values(batch)
        if values is None:
            return False
        batch.values = values
        return True

    def _same_objects(self, batch: Batch) -> bool:
        """Whether the state still holds each member's store, and each store the objects the
        batch was made with."""
        if batch.expected is None:
            ms = batch.members
            batch.expected = all(type(m.store) is dict for m in ms) and (
                [m.key for m in ms], [m.store for m in ms],
                [m.store for m in ms for _ in m.objects],
                [name for m in ms for name, _ in m.objects],
                [obj for m in ms for _, obj in m.objects])
        if batch.expected:  # (fast: no Python loop; a mismatch is looked at below)
            keys, stores, holders, names, objects = batch.expected
            if all(map(operator.is_, map(self.state.get, keys), stores)) and all(
                    map(operator.is_, map(dict.get, holders, names), objects)):
                return True
        stored = self.state.get
        for m in batch.members:
            store = stored(m.key)
            if store is not m.store and not (store is None and m.is_new):  # (plain SGD: none)
                return False
            get = m.store.get
            for name, obj in m.objects:
                if get(name) is not obj:
                    return False
        return True

    def _new_batches(self, members: Members, names: Tuple[str, ...],
                     values: Mapping[str, Any], precision: Precision,
                     where: str) -> List[Batch]:
        """Batches for a group's members with grads, every stored state checked (a step
        count or scalar state that is not one, a state array the kernel cannot step, a param
        its precision options do not fit: raises naming the param as
        param_groups[i]['params'][j]). Members are batched by device and storage signature
        (the dtypes of param, states and master copy: one kernel argument, a list, holds one
        dtype), step count and scalar states."""
        rule = self._ctor.rule
        specs = {s.name: s for s in rule.states}
        starts = self._scalar_starts(values)
        scalar_names = (("step",) if rule.step == "counted" else ()) + tuple(starts)
        states_dtype = self._states_dtype(precision)
        # the master copy travels with the states (made, checked and laid out like them), and
        # so do the absmax of 8-bit states
        array_names = names + (("master_param",) if precision.master else ())
        by_key: Dict[Tuple[Hashable, Tuple[Any, ...], bool, Tuple[Any, ...]], List[Member]] = {}
        made: Dict[int, Tuple[Any, List[Any]]] = {}
        for position, (key, p, _, index) in enumerate(members):
            stored = self.state.get(key)
            m = Member(key, p, position, {} if stored is None else stored, stored is None)
            who = f"{where}['params'][{index}]"
            check_param_precision(p.dtype, precision, who)
            if not precision.master and m.store.get("master_param") is not None:
                raise ValueError(f"{who}: state['master_param']: a master copy is kept, but "
                                 "master_weights=False would step the param without it (and "
                                 "leave it stale): set master_weights=True, or delete it")
            bits8 = self._member_bits8(m, names, precision, values, who)
            for name in names:
                obj = m.store.get(name)
                if obj is None:
                    spec = specs[name]
                    fill = float(values[spec.fill_from]) if spec.fill_from else 0.0
                    # (a float64 param keeps float64 states, 8-bit group or not)
                    dtype = (self._uint8 if bits8 else None if dtype_name(p.dtype) == "float64"
                             else states_dtype)
                    obj = m.created[name] = self._new_state(p, spec, fill, dtype)
                m.states.append(obj)
            if precision.master:
                obj = m.store.get("master_param")
                if obj is None:
                    obj = m.created["master_param"] = self._new_master(p)
                m.states.append(obj)
            member_names = array_names
            for name, codes in zip(names, m.states):
                if is_codes(codes):
                    obj = m.store.get(name + ABSMAX)
                    if obj is None:
                        if name not in m.created:
                            raise ValueError(f"{who}: state[{name!r}] holds 8-bit codes (uint8) "
                                             f"but state[{name + ABSMAX!r}] is missing")
                        obj = m.created[name + ABSMAX] = self._new_absmax(p)
                    m.states.append(obj)
                    member_names += (name + ABSMAX,)
            for name in scalar_names:
                holder = m.store.get(name)
                if holder is None:
                    if name in m.store:  # None: starting again would be silently wrong
                        self._checked_scalar(None, name, who)
                    if name == "step" and any(n in m.store for n in rule.state_names):
                        raise ValueError(f"{who}: state has {sorted(m.store)} but no 'step' "
                                         "(the number of steps those states have seen)")
                    holder = m.created[name] = self._new_scalar(
                        p, name, 0 if name == "step" else starts[name])
                m.holders[name] = holder
            m.objects = list(zip(member_names, m.states))
            if self._scalars_are_objects:
                m.objects += m.holders.items()
            first_call = any(specs[n].init == "unset" for n in m.created if n in specs)
            scalar_values = tuple(self._read(m.holders[n], n, who) for n in scalar_names)
            made[position] = self._member_arrays(m, who)
            signature = tuple(getattr(s, "dtype", None) for s in m.states)
            by_key.setdefault((self._batch_key(p), signature, first_call, scalar_values),
                              []).append(m)
        batches = []
        for (_, signature, first_call, scalar_values), ms in by_key.items():
            # (one signature: the same states are 8-bit in every member)
            arrays = {name: [made[m.position][1][k] for m in ms]
                      for k, (name, _) in enumerate(ms[0].objects[:len(ms[0].states)])}
            batch = Batch(names, ms, self._identities([m.param for m in ms]),
                          self._on_device(ms[0].param), [made[m.position][0] for m in ms],
                          tuple(arrays.get(n) for n in rule.state_names),
                          dict(zip(scalar_names, scalar_values)), first_call)
            batch.where = where
            batch.indices = tuple(members[k][3] for k in batch.positions)
            batch.precision = precision
            batch.masters = arrays.get("master_param")
            if any(n + ABSMAX in arrays for n in names):
                batch.absmax = tuple(arrays.get(n + ABSMAX) for n in rule.state_names)
            batch.narrow = any(dtype_name(d) in NARROW
                               for d in (ms[0].param.dtype, *signature[:len(names)]))
            batches.append(batch)
        return batches
