"""A bounded fuzz run of every ``gdfast.ops.<name>_`` (issue 15): random shapes (0-size
included), dtypes, strides, misaligned and read-only views, aliasing between arguments, DLPack
producers and capsules that lie, hyperparameters (NaN, inf, out of range, huge ints, strings,
None), list lengths, thread counts and ISA levels.

Each call is built with a known set of defects (none: a valid call). The oracle:
- no crash: the loop runs in a child process; a crash is reported with its seed and iteration
  (and the run goes on after it, so one CI run reports every crash);
- a valid call is accepted, writes neither grad nor an unused state, and a found_inf step
  writes nothing;
- a call with a defect is rejected with a TypeError or ValueError whose message starts with the
  name of the argument at fault (README "Bad input"), and the rejected call wrote no array;
- a DLPack capsule gdfast consumed has its deleter called exactly once; one it did not consume,
  never.
Iteration i draws everything from ``numpy.random.default_rng([SEED, i])``, so any iteration is
reproduced alone: ``python tests/test_fuzz.py --describe I`` prints its call,
``python tests/test_fuzz.py I 1`` runs it.
"""

from __future__ import annotations

import ctypes
import faulthandler
import json
import math
import os
import subprocess
import sys
import tempfile
import warnings
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

import numpy as np

import gdfast
from gdfast._spec import RULES, Field, Rule
from gdfast._stepping import tuple_arguments

from dlpack_producers import (
    DLDataType,
    DLDeleter,
    DLDevice,
    DLManagedTensor,
    DLManagedTensorVersioned,
    DLPackVersion,
    DLTensor,
    capsule_name,
    capsule_new,
)

SEED = 15
# Iterations per CI run: about 4 s of calls here; the run is printed ("fuzz: N iterations").
ITERATIONS = 6000

# Defect kinds whose calls fail today, each with its reason. Calls with such a defect carry
# no other defect, so a failure is charged to exactly one kind. The test fails when a listed
# kind no longer fails (remove it then), as xfail_strict does; except the kinds of ROUTE_ONLY,
# which fail only on the Python route (found_inf given, or a CUDA build), too rare in one run
# to be sure of a failure.
_DEVICE_ROUTE = ("with found_inf given (and on every call of a CUDA build), gdfast/_device.py "
                 "on_cuda calls param's __dlpack_device__() unguarded")
_SCALAR_STATES = ("nadam_(mu_product=), asgd_(eta=, mu=) take any value float() takes "
                  "(rule_binding.cpp to_real; no range), where the hyperparameters refuse it")
KNOWN_OPEN: Dict[str, str] = {}
ROUTE_ONLY: Set[str] = set()

# --- DLPack: capsules made here, so that every field can lie --------------------------------


# The capsule keeps a pointer to its name: these bytes objects live as long as the module.
_NAMES = {"dltensor": b"dltensor", "dltensor_versioned": b"dltensor_versioned",
          "bogus": b"not_a_dltensor", "used": b"used_dltensor"}
_DLPACK_DTYPES = {"f": 2, "i": 0, "u": 1, "b": 6, "c": 5}
_CPU = 1

# Deleter calls by the address of the managed struct (ctypes runs the callback with the GIL).
_deleted: Dict[int, int] = {}


@DLDeleter
def _count_deletion(address: Optional[int]) -> None:
    _deleted[address or 0] = _deleted.get(address or 0, 0) + 1


@dataclass
class CapsuleSpec:
    """What a made capsule says about an array: the truth unless a lie is set."""

    versioned: bool = True
    name: str = ""  # "" : the protocol's name for the payload
    major: int = 1
    read_only: Optional[bool] = None  # None: the array's own flag
    ndim: Optional[int] = None
    shape_null: bool = False
    negative_extent: bool = False
    dtype: Optional[Tuple[int, int, int]] = None  # (code, bits, lanes)
    device_type: int = _CPU
    explicit_strides: bool = True
    odd_unit_strides: bool = False  # extent-1 dimensions with strides that mean nothing
    split_offset: bool = False  # data + byte_offset = the array's address, both nonzero


class Capsules:
    """Makes DLPack capsules of a NumPy array (every field as CapsuleSpec says), keeping every
    struct alive, and checks afterwards that gdfast released exactly those it consumed."""

    def __init__(self) -> None:
        self.made: List[Tuple[Any, ctypes.Structure, str, Any]] = []

    def make(self, array: np.ndarray, spec: CapsuleSpec) -> Any:
        ndim = array.ndim if spec.ndim is None else spec.ndim
        extents = list(array.shape) + [1] * max(0, ndim - array.ndim)
        if spec.negative_extent:
            extents[0] = -1
        shape = (ctypes.c_int64 * max(1, len(extents)))(*extents)
        itemsize = max(1, array.itemsize)
        steps = [s // itemsize for s in array.strides] + [1] * max(0, ndim - array.ndim)
        if spec.odd_unit_strides:
            steps = [12345 if n == 1 else s for n, s in zip(extents, steps)]
        strides = (ctypes.c_int64 * max(1, len(steps)))(*steps)
        code, bits, lanes = spec.dtype or (_DLPACK_DTYPES[array.dtype.kind],
                                           8 * array.dtype.itemsize, 1)
        address = array.__array_interface__["data"][0]
        offset = 8 if spec.split_offset else 0
        tensor = DLTensor(data=address - offset, device=DLDevice(spec.device_type, 0), ndim=ndim,
                          dtype=DLDataType(code, bits, lanes),
                          shape=None if spec.shape_null else shape,
                          strides=strides if spec.explicit_strides else None,
                          byte_offset=offset)
        read_only = (not array.flags.writeable) if spec.read_only is None else spec.read_only
        if spec.versioned:
            managed: ctypes.Structure = DLManagedTensorVersioned(
                version=DLPackVersion(spec.major, 0), manager_ctx=None,
                deleter=_count_deletion, flags=int(read_only), dl_tensor=tensor)
        else:
            managed = DLManagedTensor(dl_tensor=tensor, manager_ctx=None,
                                      deleter=_count_deletion)
        name = spec.name or ("dltensor_versioned" if spec.versioned else "dltensor")
        capsule = capsule_new(ctypes.addressof(managed), _NAMES[name], None)
        self.made.append((capsule, managed, name, (shape, strides, array)))
        return capsule

    def problems(self) -> List[str]:
        out = []
        for capsule, managed, name, _ in self.made:
            # gdfast renames what it consumes (the protocol's rule); "used" was so named here
            consumed = name != "used" and (capsule_name(capsule) or b"").startswith(b"used_")
            calls = _deleted.pop(ctypes.addressof(managed), 0)
            if calls != int(consumed):
                out.append(f"a capsule {'consumed' if consumed else 'not consumed'} by gdfast "
                           f"had its deleter called {calls} times")
        return out


class Producer:
    """A DLPack producer: a NumPy array exported through a made capsule or NumPy's own
    __dlpack__, with a misbehaviour ("lie") of the Python protocol methods if one is set."""

    def __init__(self, array: np.ndarray, capsules: Capsules, spec: Optional[CapsuleSpec],
                 lie: str = "", device: Any = (_CPU, 0), legacy_signature: bool = False):
        self.array, self.capsules, self.spec, self.lie = array, capsules, spec, lie
        self.device, self.legacy_signature = device, legacy_signature

    def __dlpack__(self, **kwargs: Any) -> Any:
        if self.legacy_signature and kwargs:  # a producer that predates DLPack 1.0
            raise TypeError("__dlpack__() got an unexpected keyword argument")
        if self.lie in RAISES:
            raise RAISES[self.lie]
        if self.lie in RETURNS:
            return RETURNS[self.lie]
        if self.spec is None:
            return self.array.__dlpack__(**kwargs)
        return self.capsules.make(self.array, self.spec)

    def __dlpack_device__(self) -> Any:
        if self.device == "raises":
            raise RuntimeError("no device")
        return self.device


class NoDevice(Producer):
    """A producer without __dlpack_device__ (the protocol's consumers must cope)."""

    def __getattribute__(self, name: str) -> Any:
        if name == "__dlpack_device__":
            raise AttributeError(name)
        return object.__getattribute__(self, name)


class Interrupt(BaseException):
    """Stands for KeyboardInterrupt: a BaseException must pass through gdfast unchanged."""


RAISES = {"raises": RuntimeError("producer failure"), "raises-buffer": BufferError("no export"),
          "raises-base": Interrupt("interrupted")}
RETURNS = {"returns-int": 42, "returns-none": None, "returns-str": "dltensor"}


# --- one call: its arguments, defects and the arrays to watch -------------------------------

TYPE_OR_VALUE = (TypeError, ValueError)


@dataclass
class Defect:
    kind: str  # what is wrong, e.g. "array:dtype:int32"; KNOWN_OPEN keys are these
    names: Optional[Tuple[str, ...]]  # the message must start with one (None: not checked)
    types: Tuple[type, ...] = TYPE_OR_VALUE


@dataclass
class Call:
    iteration: int
    rule: Rule
    isa: str
    threads: int
    arrays: Dict[str, Any] = field(default_factory=dict)  # by argument name: array or list
    hyper: Dict[str, Any] = field(default_factory=dict)  # keywords (step included)
    extra_positional: List[Any] = field(default_factory=list)
    defects: List[Defect] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # how each argument was made
    watched: List[Tuple[str, np.ndarray]] = field(default_factory=list)  # owners, by role
    capsules: Capsules = field(default_factory=Capsules)
    used: Tuple[str, ...] = ()
    dtype: Any = np.float32
    broken: set = field(default_factory=set)  # arguments an array defect was tried on

    def describe(self) -> str:
        defects = ", ".join(d.kind for d in self.defects) or "none"
        hyper = ", ".join(f"{k}={_short(v)}" for k, v in self.hyper.items())
        return (f"iteration {self.iteration} (seed {SEED}): {self.rule.name}_ on isa="
                f"{self.isa} threads={self.threads}; defects: {defects}; {'; '.join(self.notes)}"
                f"; keywords: {hyper}" +
                (f"; extra positional: {self.extra_positional!r}" if self.extra_positional
                 else ""))


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"ndarray({value.dtype}, shape {value.shape})"
    if isinstance(value, int) and abs(value) > 10**20:
        return f"int of {len(str(abs(value)))} digits"
    return repr(value)


def _owner(a: np.ndarray) -> np.ndarray:
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a


def _pick(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _shape(rng: np.random.Generator, big: bool) -> Tuple[int, ...]:
    if big:  # large enough that several threads split the work (>= 16384 elements each)
        return (int(rng.integers(20_000, 120_000)),)
    ndim = int(_pick(rng, [0, 1, 1, 1, 2, 2, 3]))
    if rng.random() < 0.1 and ndim > 0:
        return tuple(int(n) for n in rng.integers(0, 4, ndim) * (rng.random(ndim) < 0.5))
    return tuple(int(n) for n in rng.integers(1, 40 if ndim == 1 else 9, ndim))


def _filled(rng: np.random.Generator, shape: Tuple[int, ...], dtype: Any,
            offset_elements: int = 0) -> np.ndarray:
    """A C-contiguous array; with an offset, a view starting that many elements into a larger
    buffer (aligned to the element, not to the vector width: the kernels' unaligned path)."""
    n = math.prod(shape)
    buffer = np.empty(n + offset_elements, dtype)
    a = buffer[offset_elements:].reshape(shape)
    if a.dtype.kind == "O":
        a[...] = 0.5
    elif a.dtype.kind in "iub":
        a[...] = rng.integers(0, 2, shape).astype(a.dtype)
    else:
        a[...] = rng.standard_normal(shape).astype(a.dtype)
    return a


# --- hyperparameters ------------------------------------------------------------------------

HUGE = 10**400


def _valid_real(rng: np.random.Generator, f: Field) -> Any:
    r = f.range
    if rng.random() < 0.5:
        return f.default
    lo = r.lo if r.lo != -math.inf else -5.0
    hi = r.hi if r.hi != math.inf else lo + 5.0
    value = lo + (hi - lo) * (0.05 + 0.9 * float(rng.random()))
    choice = rng.random()
    if choice < 0.15 and not r.lo_open and r.lo != -math.inf:
        value = r.lo
    elif choice < 0.25 and r.contains(round(value)):
        return int(round(value))
    elif choice < 0.35:
        return np.float32(value) if r.contains(np.float32(value)) else value
    return value


def _invalid_real(rng: np.random.Generator, r: Any) -> Tuple[str, Any, Tuple[type, ...]]:
    options: List[Tuple[str, Any, Tuple[type, ...]]] = [
        ("nan", math.nan, (ValueError,)), ("inf", math.inf, (ValueError,)),
        ("-inf", -math.inf, (ValueError,)), ("huge-int", HUGE, (ValueError,)),
        ("-huge-int", -HUGE, (ValueError,)), ("str", "0.1", (TypeError,)),
        ("none", None, (TypeError,)), ("bool", True, (TypeError,)),
        ("complex", 0.5 + 0j, (TypeError,)), ("list", [0.1], (TypeError,)),
        ("array", np.array([0.1, 0.2]), (TypeError,)), ("np-nan", np.float64("nan"), (ValueError,)),
    ]
    if r.lo != -math.inf:
        options.append(("below", r.lo - 1.0, (ValueError,)))
        if r.lo_open:
            options.append(("at-open-lo", r.lo, (ValueError,)))
    if r.hi != math.inf:
        options.append(("above", r.hi + 1.0, (ValueError,)))
        if r.hi_open:
            options.append(("at-open-hi", r.hi, (ValueError,)))
    return _pick(rng, options)




def _valid_hyper(rng: np.random.Generator, rule: Rule) -> Dict[str, Any]:
    values: Dict[str, Any] = {}
    for f in rule.options:
        if f.kind == "real":
            values[f.name] = _valid_real(rng, f)
        elif rng.random() < 0.4:
            values[f.name] = _pick(rng, [True, False, np.bool_(True), np.bool_(False)])
    # Cross-field rules (the rules' invalid()): valid combinations only.
    if rule.name == "sgd" and values.get("nesterov"):
        values.update(momentum=0.5 + 0.4 * float(rng.random()), dampening=0.0)
    if rule.name == "rprop":
        values.update(etaminus=0.1 + 0.8 * float(rng.random()),
                      etaplus=1.05 + float(rng.random()))
    if rule.name == "ademamix" and values["t_alpha_beta3"] > 0:  # (its warmup takes logs)
        values.update(beta1=0.5 + 0.4 * float(rng.random()), beta3=0.9 + 0.09 * float(rng.random()))
    for f in rule.scalar_states:  # values a run reaches: mu_product, mu in (0, 1], eta > 0
        if rng.random() < 0.5:
            values[f.name] = 0.05 + 0.95 * float(rng.random())
    if rule.step != "none":
        values["step"] = _pick(rng, [1, 1, 2, 3, 10, 1000, 2**53, np.int64(7)])
    elif rng.random() < 0.5:
        values["step"] = _pick(rng, [None, 1, 5])
    # The tuple spellings of the classes (betas=(beta1, beta2)): same values, other keyword.
    for key, names in tuple_arguments(rule.reals):
        if rng.random() < 0.2:
            values[key] = tuple(values.pop(n) for n in names)
    if rng.random() < 0.15:
        values["grad_scale"] = _pick(rng, [0.5, 2, 1024.0, np.float32(8.0)])
    if rng.random() < 0.1:
        values["max_grad_value"] = _pick(rng, [0.0, 0.5, 3, np.float32(2.0), 1e300, math.inf])
    if rng.random() < 0.25:  # (calls with found_inf take the Python route of CUDA builds)
        values["found_inf"] = _pick(rng, [0, 0.0, np.float32(0.0), np.array([0.0]), 1.0, 1,
                                          np.array(1.0), math.nan])
    return values


def _hyper_defect(rng: np.random.Generator, call: Call) -> Optional[Defect]:
    rule, hyper = call.rule, call.hyper
    reals = [f for f in rule.options if f.kind == "real"]
    kind = _pick(rng, ["real", "real", "real", "step", "grad_scale", "found_inf", "flag",
                       "scalar_state", "pair", "combination", "keyword", "max_grad_value"])
    if kind == "real":
        f = _pick(rng, reals)
        for key, names in tuple_arguments(rule.reals):  # set it by its own name
            if f.name in names and key in hyper:
                hyper.update(zip(names, hyper.pop(key)))
        what, value, types = _invalid_real(rng, f.range)
        hyper[f.name] = value
        return Defect(f"real:{f.name}:{what}", (f.name,), types)
    if kind == "step" and rule.step != "none":
        what, value, types = _pick(rng, [
            ("0", 0, (ValueError,)), ("-1", -1, (ValueError,)), ("float", 1.5, (TypeError,)),
            ("str", "3", (TypeError,)), ("none", None, (TypeError,)),
            ("above-2**53", 2**53 + 1, (ValueError,)), ("huge-int", HUGE, (ValueError,)),
            ("bool", True, (TypeError,)), ("nan", math.nan, (TypeError,)),
            ("array-2", np.array([3, 4]), TYPE_OR_VALUE)])
        hyper["step"] = value
        return Defect(f"step:{what}", ("step",), types)
    if kind == "grad_scale":
        what, value, types = _pick(rng, [
            ("0", 0.0, (ValueError,)), ("negative", -1.0, (ValueError,)),
            ("nan", math.nan, (ValueError,)), ("inf", math.inf, (ValueError,)),
            ("str", "1", (TypeError,)), ("none", None, (TypeError,)),
            ("huge-int", HUGE, (ValueError,)), ("array", np.array([1.0, 2.0]), (TypeError,))])
        hyper["grad_scale"] = value
        return Defect(f"grad_scale:{what}", ("grad_scale",), types)
    if kind == "max_grad_value":
        what, value, types = _pick(rng, [
            ("negative", -1.0, (ValueError,)), ("nan", math.nan, (ValueError,)),
            ("str", "1", (TypeError,)), ("bool", True, (TypeError,)),
            ("array", np.array([1.0]), (TypeError,)),
            ("with-max_grad_norm", 1.0, (ValueError,))])
        hyper["max_grad_value"] = value
        if what == "with-max_grad_norm":
            hyper["max_grad_norm"] = 1.0
        return Defect(f"max_grad_value:{what}", ("max_grad_value",), types)
    if kind == "found_inf":  # (a huge int is no defect: nonzero, it skips the step)
        what, value, types = _pick(rng, [
            ("str", "x", (TypeError,)), ("object", object(), (TypeError,)),
            ("list", [0.0], (TypeError,)), ("array-2", np.zeros(2), (ValueError,)),
            ("str-array", np.array(["a"]), TYPE_OR_VALUE),
            ("array-0", np.zeros(0), (ValueError,))])
        hyper["found_inf"] = value
        return Defect(f"found_inf:{what}", ("found_inf",), types)
    flags = [f for f in rule.options if f.kind == "flag"]
    if kind == "flag" and flags:
        # Flags take any object's truth value, as Python's `if maximize:` does (by design:
        # rule_binding.cpp to_flag); only an object without one is wrong.
        f = _pick(rng, flags)
        hyper[f.name] = np.array([True, False])
        return Defect("flag:array", (f.name,), (TypeError,))
    if kind == "scalar_state" and rule.scalar_states:
        f = _pick(rng, rule.scalar_states)
        what, value, types = _pick(rng, [
            # (their declared range is any finite number: a negative one is not a defect)
            ("nan", math.nan, (ValueError,)), ("inf", math.inf, (ValueError,)),
            ("huge-int", HUGE, (ValueError,)),
            ("str", "1", (TypeError,)), ("bool", True, (TypeError,))] +
            ([] if f.start_from else [("none", None, (TypeError,))]))
        hyper[f.name] = value
        return Defect(f"scalar_state:{what}", (f.name,), types)
    pairs = dict(tuple_arguments(rule.reals))
    if kind == "pair" and pairs:
        key = _pick(rng, list(pairs))
        names = pairs[key]
        a = names[0]
        for name in (*names, key):
            hyper.pop(name, None)
        fa = next(f for f in rule.options if f.name == a)
        good = tuple(next(f for f in rule.options if f.name == n).default for n in names)
        what, value, types = _pick(rng, [
            ("scalar", 0.9, (TypeError,)), ("str", "ab", (TypeError,)),
            ("one", (good[0],), (ValueError,)), ("longer", (*good, good[0]), (ValueError,)),
            ("item-str", ("a", *good[1:]), (TypeError,)),
            ("item-none", (None, *good[1:]), (TypeError,)),
            ("item-nan", (math.nan, *good[1:]), (ValueError,)), ("both", good, (ValueError,))])
        hyper[key] = value
        if what == "both":  # the pair and one of its values by name, not at its default
            hyper[a] = fa.default / 2 if fa.default else 0.5
            assert fa.range.contains(hyper[a]) and hyper[a] != fa.default
        return Defect(f"pair:{what}", (key,) if what == "both" else (key, *names), types)
    if kind == "combination" and rule.name == "sgd":
        hyper.update(nesterov=True, momentum=_pick(rng, [0.0, 0.9]),
                     dampening=_pick(rng, [0.5, 0.0]))
        hyper.pop("found_inf", None)
        if hyper["momentum"] > 0 and hyper["dampening"] == 0.0:
            hyper["momentum"] = 0.0
        return Defect("combination:nesterov", ("nesterov",), (ValueError,))
    if kind == "combination" and rule.name == "rprop":
        hyper.pop("etas", None)
        hyper.update(etaminus=_pick(rng, [0.0, 1.0, 1.5, -0.5]), etaplus=_pick(rng, [0.5, 1.0]))
        return Defect("combination:etas", ("etas", "etaminus", "etaplus"), (ValueError,))
    if kind == "keyword":
        what = _pick(rng, ["unknown", "positional", "missing-step"])
        if what == "unknown":
            hyper["momentun"] = 0.9
        elif what == "positional":
            call.extra_positional.append(np.zeros(1, np.float32))
        elif rule.step != "none":
            hyper.pop("step", None)
        else:
            return None
        return Defect(f"keyword:{what}", None, (TypeError,))  # the interpreter's own message
    return None


# --- arrays ---------------------------------------------------------------------------------

BAD_DTYPES = ["int16", "int32", "int64", "uint8", "bool", "complex64", "complex128", "object",
              "longdouble", ">f4", ">f8"]


def _array_defect(rng: np.random.Generator, call: Call, lists: bool) -> Optional[Defect]:
    """Breaks one array (or the structure of one list) of the call's used arguments."""
    names = ["param", *call.rule.inputs, *call.used]
    target = _pick(rng, names)
    written = target not in call.rule.inputs
    kind = _pick(rng, ["dtype", "dtype", "mixed", "noncontiguous", "misaligned", "readonly",
                       "shape", "alias", "alias", "not-an-array", "list", "list"])
    if kind == "mixed" and any(d.kind == "array:mixed-dtype" for d in call.defects):
        kind = "dtype"  # two arrays switched to the other dtype may make a consistent call
    value = call.arrays[target]
    if target in call.broken:  # one defect an argument: a second could undo the first
        return None
    call.broken.add(target)
    index = int(rng.integers(len(value))) if lists and value else None
    a = value[index] if index is not None else value
    if kind != "list" and not isinstance(a, np.ndarray):
        return None

    def put(new: Any) -> None:
        if index is None:
            call.arrays[target] = new
        else:
            value[index] = new

    everyone = tuple(names) if target == "param" else (target,)
    if kind == "dtype":
        dtype = np.dtype(_pick(rng, BAD_DTYPES))
        put(_filled(rng, a.shape, dtype))
        return Defect(f"array:dtype:{dtype.str}", everyone, (TypeError,))
    if kind == "mixed":  # the other float dtype than the call's
        other = np.float64 if call.dtype == np.float32 else np.float32
        put(_filled(rng, a.shape, other))
        return Defect("array:mixed-dtype", everyone, (TypeError,))
    if kind == "noncontiguous":
        axes = [d for d, n in enumerate(a.shape) if n >= 2]
        if not axes or a.size == 0:
            return None
        axis = _pick(rng, axes)
        wide = list(a.shape)
        wide[axis] *= 2
        bigger = _filled(rng, tuple(wide), a.dtype)
        view = bigger[tuple(slice(None, None, 2) if d == axis else slice(None)
                            for d in range(a.ndim))]
        assert not view.flags.c_contiguous
        put(view)
        return Defect("array:noncontiguous", (target,), (ValueError,))
    if kind == "misaligned":
        if a.size == 0 or a.dtype.kind == "O" or a.itemsize == 1:
            return None
        raw = np.empty(a.nbytes + a.itemsize, np.uint8)
        view = raw[1:1 + a.nbytes].view(a.dtype).reshape(a.shape)
        view[...] = a
        assert not view.flags.aligned
        put(view)
        return Defect("array:misaligned", (target,), (ValueError,))
    if kind == "readonly":
        if not written:
            return None
        a.setflags(write=False)
        return Defect("array:readonly", (target,), (ValueError,))
    if kind == "shape" and target != "param":
        shapes = [(a.size + 1,), (1,) + a.shape, a.shape + (1,)]
        if a.ndim > 1:
            shapes.append((a.size,))
        if a.ndim == 1 and a.size % 2 == 0 and a.size:
            shapes.append((2, a.size // 2))
        put(_filled(rng, _pick(rng, shapes), a.dtype))
        return Defect("array:shape", (target,), (ValueError,))
    if kind == "alias":
        # (two read-only inputs may share memory: a defect needs a written array)
        others = [n for n in names if n != target and (written or n not in call.rule.inputs)]
        if not others:
            return None
        other = _pick(rng, others)
        b = call.arrays[other]
        if lists:
            b = b[index] if isinstance(b, list) and len(b) > (index or 0) else None
        if a.size < 2 or not isinstance(b, np.ndarray) or b.shape != a.shape \
                or b.dtype != a.dtype or not b.flags.c_contiguous:
            return None
        if rng.random() < 0.5:
            put(b)  # the very same array
            how = "same"
        else:  # a view overlapping the other by all but k elements
            k = int(rng.integers(1, a.size))
            shared = _filled(rng, (a.size + k,), a.dtype)
            put(shared[k:].reshape(a.shape))
            if index is None:
                call.arrays[other] = shared[:a.size].reshape(a.shape)
            else:
                call.arrays[other][index] = shared[:a.size].reshape(a.shape)
            how = "overlap"
        return Defect(f"array:alias-{how}", (target, other), (ValueError,))
    if kind == "not-an-array":
        what, new, types = _pick(rng, [
            ("none", None, TYPE_OR_VALUE), ("float", 1.0, (TypeError,)),
            ("str", "param", (TypeError,)), ("scalar", np.float32(1.0), (TypeError,)),
            ("memoryview", memoryview(b"abcd"), (TypeError,)), ("bytes", b"abcd", (TypeError,))])
        if what == "none" and target in ("param", *call.rule.inputs):
            types = (TypeError,)
        put(new)
        return Defect(f"array:{what}", (target,), types)
    if kind == "list" and lists and target != "param":
        what = _pick(rng, ["short", "long", "single", "nested"])
        if what == "short" and value:
            call.arrays[target] = value[:-1]
        elif what == "long":
            call.arrays[target] = value + [_filled(rng, (3,), np.float32)]
        elif what == "single" and value:
            call.arrays[target] = value[0]
        elif what == "nested" and value:
            value[0] = [value[0]]
        else:
            return None
        return Defect(f"list:{what}", (target,),
                      (ValueError,) if what in ("short", "long") else (TypeError,))
    if kind == "list" and not lists and target != "param" and isinstance(a, np.ndarray):
        call.arrays[target] = [a]  # one array, but this argument a list
        return Defect("list:list-for-single", (target,), (TypeError,))
    return None


def _dlpack(rng: np.random.Generator, call: Call, lists: bool) -> Optional[Defect]:
    """Replaces one array by a DLPack producer: faithful (no defect) or lying (a defect); param
    half the time (the first tensor of a call decides its route)."""
    target = "param" if rng.random() < 0.5 else _pick(rng, [*call.rule.inputs, *call.used])
    value = call.arrays[target]
    if lists:
        if not isinstance(value, list) or not value:
            return None
        index: Optional[int] = int(rng.integers(len(value)))
        a = value[index]
    else:
        index, a = None, value
    if not isinstance(a, np.ndarray) or a.dtype.kind == "O" or not a.dtype.isnative:
        return None
    written = target not in call.rule.inputs

    def put(new: Any) -> None:
        if index is None:
            call.arrays[target] = new
        else:
            value[index] = new

    spec = CapsuleSpec(versioned=bool(rng.random() < 0.7),
                       explicit_strides=bool(rng.random() < 0.5 or not a.flags.c_contiguous),
                       odd_unit_strides=bool(a.flags.c_contiguous and rng.random() < 0.2),
                       split_offset=bool(rng.random() < 0.2))
    if not spec.versioned and not a.flags.writeable:
        return None  # a legacy capsule cannot say read-only: that would be no lie of ours
    lie = _pick(rng, ["", "", "", "numpy", "legacy-signature", "no-device", "pinned"] +
                ["capsule"] * 5 + ["producer"] * 3 + ["device"] * 3)
    device: Any = (_CPU, 0)
    defect: Optional[Defect] = None
    producer_lie = ""
    cls = Producer
    if lie == "numpy":  # NumPy's own export, of an array it can export
        if not a.flags.c_contiguous or not a.flags.aligned or a.dtype != call.dtype:
            return None
        spec = None  # type: ignore[assignment]
    elif lie == "no-device":
        cls = NoDevice
    elif lie == "pinned":  # CUDA pinned host memory: addressable by the CPU
        spec.device_type = 3
        device = (3, 0)
    elif lie == "capsule":
        what = _pick(rng, ["ndim<0", "shape-null", "negative-extent", "dtype", "version",
                           "device", "name", "used-name", "readonly"])
        if what == "ndim<0":
            spec.ndim = -1
        elif what == "shape-null" and a.ndim > 0:
            spec.shape_null = True
        elif what == "negative-extent" and a.ndim > 0:
            spec.negative_extent = True
        elif what == "dtype":
            # (bfloat16 and float16 are storage types: a claim of either is a valid call)
            spec.dtype = _pick(rng, [(0, 32, 1), (1, 8, 1), (4, 32, 1), (5, 64, 1), (6, 8, 1),
                                     (2, 8, 1), (2, 32, 2), (9, 32, 1), (2, 0, 1)])
        elif what == "version" and spec.versioned:
            spec.major = _pick(rng, [0, 2, 99])
        elif what == "device":
            spec.device_type = _pick(rng, [2, 10, 99, 0, -1])
        elif what == "name":
            spec.name = "bogus"
        elif what == "used-name":
            spec.name = "used"
        elif what == "readonly" and spec.versioned and written:
            spec.read_only = True
        else:
            return None
        # A CUDA build takes a capsule on a CUDA device: the mismatch is then reported on
        # whichever array of the call is not on the first one's device.
        cuda_device = what == "device" and spec.device_type == 2 and gdfast.cuda.compiled
        defect = Defect(f"capsule:{what}", None if cuda_device else (target,))
    elif lie == "producer":
        producer_lie = _pick(rng, ["raises", "raises-buffer", "raises-base", "returns-int",
                                   "returns-none", "returns-str"])
        defect = Defect(f"producer:{producer_lie}", (target,),
                        (Interrupt,) if producer_lie == "raises-base" else TYPE_OR_VALUE)
        if producer_lie == "raises-base":
            defect.names = None
    elif lie == "device":
        what, device = _pick(rng, [
            ("raises", "raises"), ("str", "cpu"), ("1-tuple", (_CPU,)), ("none", None),
            ("huge-id", (_CPU, 2**40)), ("fractional-id", (_CPU, 0.5)),
            ("fractional-type", (1.5, 0)), ("str-type", ("1", 0)), ("cuda", (2, 0)),
            ("unknown-type", (99, 0)), ("3-tuple", (_CPU, 0, 0))])
        if what == "cuda" and gdfast.cuda.compiled:
            return None  # a CUDA build asks the capsule, which says CPU: a lie it may accept
        defect = Defect(f"device:{what}", (target,))
    producer = cls(a, call.capsules, spec, producer_lie, device,
                   legacy_signature=lie == "legacy-signature")
    put(producer)
    call.notes.append(f"{target}{'' if index is None else f'[{index}]'}: DLPack producer "
                      f"({lie or 'faithful'}; {spec})")
    return defect


def make_call(iteration: int) -> Call:
    """Iteration i's call. A known-open defect kind is tried alone: if one came with another
    defect, the call is drawn again (same draws) stopping at its first defect."""
    call = _draw(iteration, single=False)
    if len(call.defects) > 1 and any(d.kind in KNOWN_OPEN for d in call.defects):
        call = _draw(iteration, single=True)
    return call


def _draw(iteration: int, single: bool) -> Call:
    rng = np.random.default_rng([SEED, iteration])
    rule = _pick(rng, list(RULES.values()))
    isas = gdfast.isa_info()["supported"]
    call = Call(iteration, rule, _pick(rng, isas), int(_pick(rng, [1, 1, 2, 3, 4, 7])))
    call.hyper = _valid_hyper(rng, rule)
    values = dict(call.hyper)
    for key, names in tuple_arguments(rule.reals):
        if key in values:
            values.update(zip(names, values.pop(key)))
    call.used = rule.used_states({k: v for k, v in values.items() if k not in ("step",)})
    dtype = call.dtype = _pick(rng, [np.float32, np.float64])
    lists = bool(rng.random() < 0.35)
    big = bool(rng.random() < 0.04)
    count = int(_pick(rng, [0, 1, 2, 3, 5])) if lists else 1
    shapes = [_shape(rng, big) for _ in range(count)]
    offsets = [int(rng.integers(1, 8)) if rng.random() < 0.3 else 0 for _ in range(count)]
    unused = [s for s in rule.state_names if s not in call.used]
    extra_unused = [s for s in unused if rng.random() < 0.2]
    for name in ("param", *rule.inputs, *call.used, *extra_unused):
        arrays = [_filled(rng, s, dtype, o) for s, o in zip(shapes, offsets)]
        call.arrays[name] = arrays if lists else arrays[0]
    if rng.random() < 0.2:  # grad is only read: a read-only grad is valid
        for g in (call.arrays["grad"] if lists else [call.arrays["grad"]]):
            g.setflags(write=False)

    n_defects = int(_pick(rng, [0, 0, 0, 1, 1, 1, 1, 1, 2]))
    for _ in range(n_defects):
        if single and call.defects:
            break
        defect = (_array_defect(rng, call, lists) if rng.random() < 0.55
                  else _hyper_defect(rng, call))
        if defect is not None:
            call.defects.append(defect)
    if rng.random() < 0.3 and not (single and call.defects):
        defect = _dlpack(rng, call, lists)
        if defect is not None:
            call.defects.append(defect)

    # Every array an argument reaches, by role: the owners are compared before and after.
    for name, value in call.arrays.items():
        for item in (value if isinstance(value, list) else [value]):
            while isinstance(item, list):
                item = item[0] if item else None
            a = item.array if isinstance(item, Producer) else item
            if isinstance(a, np.ndarray):
                role = ("input" if name in rule.inputs else
                        "unused" if name in extra_unused else "written")
                call.watched.append((role, _owner(a)))
    for name, value in call.arrays.items():
        call.notes.append(f"{name}={_describe(value)}")
    return call


def _describe(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_describe(v) for v in value) + "]"
    if isinstance(value, np.ndarray):
        flags = [f for f, on in (("non-contiguous", not value.flags.c_contiguous),
                                 ("misaligned", not value.flags.aligned),
                                 ("read-only", not value.flags.writeable)) if on]
        offset = value.__array_interface__["data"][0] - _owner(value).__array_interface__[
            "data"][0]
        return (f"ndarray({value.dtype.str}, shape {value.shape}, strides {value.strides}"
                + (f", byte offset {offset}" if offset else "")
                + "".join(", " + f for f in flags) + ")")
    if isinstance(value, Producer):
        return f"{type(value).__name__}({_describe(value.array)})"
    return _short(value)


# --- running one call, and the loop ---------------------------------------------------------


def _snapshot(call: Call) -> List[bytes]:
    return [a.tobytes() for _, a in call.watched]


def run_call(call: Call) -> List[str]:
    """The problems of one call (empty: as the oracle expects). Counts it in TALLY."""
    op = getattr(gdfast.ops, f"{call.rule.name}_")
    gdfast.set_isa(call.isa)
    gdfast.set_num_threads(call.threads)
    positional = [call.arrays.get(n) for n in ("param", *call.rule.inputs)]
    states = {n: v for n, v in call.arrays.items() if n in call.rule.state_names}
    if call.extra_positional:  # every state positionally, then one too many
        positional += [states.pop(n, None) for n in call.rule.state_names]
        positional += call.extra_positional
    before = _snapshot(call)
    try:
        result = op(*positional, **states, **call.hyper)
        error: Optional[BaseException] = None
    except BaseException as e:  # Interrupt included: it must come out as it went in
        error = e
    after = _snapshot(call)
    TALLY["stepped" if error is None else "rejected"] += 1
    problems = call.capsules.problems()
    changed = {role for (role, _), x, y in zip(call.watched, before, after) if x != y}
    if error is None:
        if call.defects:
            problems.append("accepted")
        if changed & {"input", "unused"}:
            problems.append(f"an accepted call wrote its {' and '.join(sorted(changed))} arrays")
        if not call.defects and _skips(call.hyper.get("found_inf")) and changed:
            problems.append("a found_inf (skipped) step wrote arrays")
        names = {f.name for f in call.rule.scalar_states}
        if names and (not isinstance(result, dict) or set(result) != names):
            problems.append(f"returned {result!r}, expected a dict of {sorted(names)}")
        if not names and result is not None:
            problems.append(f"returned {result!r}, expected None")
        return problems
    expected = tuple(t for d in call.defects for t in d.types) or TYPE_OR_VALUE
    if not call.defects:
        problems.append(f"rejected a valid call: {type(error).__name__}: {error}")
    elif not isinstance(error, expected):
        problems.append(f"raised {type(error).__name__} ({error}), expected "
                        f"{' or '.join(sorted({t.__name__ for t in expected}))}")
    elif isinstance(error, TYPE_OR_VALUE):
        message = str(error)
        # "grad[2]: ...", "param and grad share memory ...": the name leads.
        head = message.split(":")[0].split(" ")[0].split("[")[0]
        names = {n for d in call.defects for n in (d.names or ())}
        if not message:
            problems.append(f"{type(error).__name__} with an empty message")
        elif all(d.names is not None for d in call.defects) and head not in names:
            problems.append(f"the message names {head!r}, not {' or '.join(sorted(names))}: "
                            f"{message}")
    if changed:
        problems.append(f"a rejected call wrote its {' and '.join(sorted(changed))} arrays")
    return problems


TALLY = {"stepped": 0, "rejected": 0}


def _skips(found_inf: Any) -> bool:
    """Whether a (valid) found_inf says to skip the step: nonzero, NaN included."""
    return found_inf is not None and float(np.asarray(found_inf).reshape(-1)[0]) != 0.0


def _config_problems(rng: np.random.Generator) -> List[str]:
    """A bad set_isa / set_num_threads: a named TypeError/ValueError, the setting unchanged."""
    threads, isa = gdfast.get_num_threads(), gdfast.isa_info()["active"]
    fn, value, names = _pick(rng, [
        (gdfast.set_num_threads, 0, ("n",)), (gdfast.set_num_threads, -3, ("n",)),
        (gdfast.set_num_threads, "2", ("n",)), (gdfast.set_num_threads, 2.5, ("n",)),
        (gdfast.set_num_threads, HUGE, ("n",)), (gdfast.set_num_threads, None, ("n",)),
        (gdfast.set_num_threads, True, ("n",)),
        (gdfast.set_isa, "sse9", ("isa", "name")), (gdfast.set_isa, None, ("isa", "name")),
        (gdfast.set_isa, 3, ("isa", "name")), (gdfast.set_isa, "", ("isa", "name"))])
    label = f"{fn.__name__}({_short(value)})"
    try:
        fn(value)
    except (TypeError, ValueError) as e:
        head = str(e).split(":")[0]
        if head not in names:
            return [f"{label}: the message names {head!r}: {e}"]
    except BaseException as e:
        return [f"{label}: raised {type(e).__name__}: {e}"]
    else:
        return [f"{label}: accepted"]
    if (gdfast.get_num_threads(), gdfast.isa_info()["active"]) != (threads, isa):
        return [f"{label}: rejected, but the setting changed"]
    return []


def child(start: int, count: int) -> None:
    """The fuzz loop (in a child process): prints each iteration's number before running it,
    then one JSON line: {"iterations", "stepped", "rejected" (calls), "problems": [[iteration,
    kinds, problem, call]]}."""
    faulthandler.enable()
    warnings.simplefilter("error")
    out = sys.stdout
    problems: List[Any] = []
    threads, isa = gdfast.get_num_threads(), gdfast.isa_info()["active"]
    try:
        for i in range(start, start + count):
            out.write(f"{i}\n")
            out.flush()
            call = make_call(i)
            problems += [[i, [d.kind for d in call.defects], p, call.describe()]
                         for p in run_call(call)]
            if i % 50 == 0:
                problems += [[i, ["config"], p, "set_isa / set_num_threads"]
                             for p in _config_problems(np.random.default_rng([SEED, i, 1]))]
    finally:
        gdfast.set_num_threads(threads)
        gdfast.set_isa(isa)
    out.write("RESULT " + json.dumps({"iterations": count, "problems": problems, **TALLY}) + "\n")


# --- the test -------------------------------------------------------------------------------


def _run_children(iterations: int) -> Tuple[Dict[str, int], List[Any]]:
    """Runs the loop in child processes; after a crash, a new child goes on from the next
    iteration. Returns (counts of iterations and calls, problems), crashes among them."""
    problems: List[Any] = []
    start = 0
    counts = {"iterations": 0, "stepped": 0, "rejected": 0}
    env = {k: v for k, v in os.environ.items() if k not in ("GDFAST_ISA", "GDFAST_NUM_THREADS")}
    while start < iterations:
        proc = subprocess.run([sys.executable, os.path.abspath(__file__), str(start),
                               str(iterations - start)], capture_output=True, text=True,
                              env=env, cwd=tempfile.gettempdir(), timeout=600)
        lines = proc.stdout.splitlines()
        result = [json.loads(line[7:]) for line in lines if line.startswith("RESULT ")]
        if proc.returncode == 0 and result:
            problems += result[0].pop("problems")
            counts = {k: counts[k] + result[0][k] for k in counts}
            break
        started = [int(line) for line in lines if line.isdigit()]
        if not started:
            raise RuntimeError(f"the fuzz child failed before its first call "
                               f"(exit {proc.returncode}):\n{proc.stderr[-3000:]}")
        crashed = started[-1]
        call = make_call(crashed)
        problems.append([crashed, [d.kind for d in call.defects],
                         f"crash (exit status {proc.returncode}): {proc.stderr[-2000:]}",
                         call.describe()])
        counts["iterations"] += crashed - start + 1
        start = crashed + 1
    return counts, problems


def test_fuzz_ops_reject_bad_input_by_name_and_never_crash(capsys: Any) -> None:
    counts, problems = _run_children(ITERATIONS)
    open_kinds = set(KNOWN_OPEN)
    new = [p for p in problems if not open_kinds & set(p[1])]
    seen = {k for p in problems for k in p[1] if k in open_kinds}
    with capsys.disabled():  # the CI log says how much was fuzzed
        print(f" fuzz: {counts['iterations']} iterations (seed {SEED}; {counts['stepped']} calls "
              f"stepped, {counts['rejected']} rejected), {len(problems) - len(new)} known-open "
              f"failures ({len(seen)} kinds), {len(new)} new", end=" ")
    report = "\n".join(f"- {p[2]}\n  {p[3]}" for p in new[:25])
    assert not new, f"{len(new)} fuzz problems (first 25):\n{report}"
    stale = sorted(open_kinds - ROUTE_ONLY - seen)
    assert not stale, f"KNOWN_OPEN kinds that no longer fail (remove them): {stale}"


if __name__ == "__main__":
    if sys.argv[1] == "--describe":
        print(make_call(int(sys.argv[2])).describe())
    else:
        child(int(sys.argv[1]), int(sys.argv[2]))
