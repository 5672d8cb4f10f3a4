"""Precision modes: how a step stores its arrays (param, grad, states, an fp32 master copy of
the param) and how it rounds what it stores. ``--precisions`` names them; ``--dtype`` is the
plain fp32 or fp64 mode.

A step in place moves, per element: the param read and written (with a master copy: the
float32 master read and written, the narrow param only written), the grad read, every state
read and written. AdamW: fp32 28 B, all-bf16 14 B, bf16 params and grads with fp32 states 22 B
(DeepSpeed's fp32_optimizer_states), bf16 params and grads with fp32 master and states 28 B
(8 + 2 + 2 + 16), fp32 params and grads with bf16 states 20 B. Modes that store the same
arrays in the same types share a *layout*: they move the same bytes and have one memory bound;
only their rounding (to nearest, or stochastic) differs.

bfloat16 arrays are NumPy arrays of ml_dtypes.bfloat16 (imported only when a mode stores one).
Imports nothing of gdfast.bench.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np

NARROW = ("bfloat16", "float16")  # stored narrower than the float32 math that steps them
SHORT = {"float32": "fp32", "float64": "fp64", "bfloat16": "bf16", "float16": "fp16"}


def storage_dtype(name: str) -> np.dtype:
    """The NumPy dtype of a storage type name (bfloat16: ml_dtypes')."""
    if name == "bfloat16":
        try:
            import ml_dtypes
        except ImportError:
            raise ImportError("bfloat16 arrays need ml_dtypes (pip install ml_dtypes)") from None
        bfloat16: np.dtype = np.dtype(ml_dtypes.bfloat16)  # (ml_dtypes is untyped)
        return bfloat16
    return np.dtype(name)


def itemsize(name: str) -> int:
    return 2 if name in NARROW else int(np.dtype(name).itemsize)


def finfo(name: str) -> Any:
    """np.finfo of a storage type (ml_dtypes.finfo for bfloat16): eps, nmant, minexp."""
    if name == "bfloat16":
        import ml_dtypes

        return ml_dtypes.finfo(ml_dtypes.bfloat16)  # type: ignore[no-untyped-call]
    return np.finfo(np.dtype(name))


@dataclass(frozen=True)
class Precision:
    name: str  # what --precisions takes
    param: str  # storage type names: float32, float64, bfloat16, float16
    grad: str
    state: str
    master: bool = False  # a float32 master copy of the (narrow) param is stepped
    stochastic: bool = False  # narrowed stores round stochastically (else to nearest)

    @property
    def compute(self) -> str:
        """The type the step computes in: float64 for float64 arrays, else float32."""
        return "float64" if self.param == "float64" else "float32"

    @property
    def plain(self) -> bool:
        """Every array in the type the step computes in (float32 or float64), no master, no
        stochastic rounding: what --dtype runs, and what every library can run."""
        return (self.param == self.grad == self.state == self.compute and not self.master
                and not self.stochastic)

    @property
    def uniform(self) -> bool:
        """Params, grads and states in one type, no master copy (the rounding aside)."""
        return self.param == self.grad == self.state and not self.master

    @property
    def layout(self) -> Tuple[str, str, str, bool]:
        """What is stored in which type: modes with one layout move the same bytes."""
        return (self.param, self.grad, self.state, self.master)

    @property
    def rounding(self) -> str:
        return "stochastic" if self.stochastic else "nearest"

    def bytes_per_elem(self, n_states: int, two_pass: bool = False) -> int:
        """Bytes one in-place step moves per parameter: param (or master and param), grad,
        states. A two-pass rule's (LAMB's) first pass reads the param (or master) and the grad
        and updates the states; its second reads the states and updates the param (or master,
        and writes the param)."""
        p = itemsize(self.param)
        if two_pass:  # (with a master: read in pass 1, read and written in pass 2 with the param)
            param = 3 * 4 + p if self.master else 3 * p
            return param + itemsize(self.grad) + 3 * itemsize(self.state) * n_states
        param = (2 * 4 + p) if self.master else 2 * p  # master read and written, param written
        return param + itemsize(self.grad) + 2 * itemsize(self.state) * n_states

    def state_bytes_per_param(self, n_states: int) -> int:
        """Optimizer memory per parameter: the states, plus the master copy if kept."""
        return itemsize(self.state) * n_states + (4 if self.master else 0)

    def describe_layout(self) -> str:
        """"bf16 params and grads, fp32 master and states" (no bytes, no rounding)."""
        p, g, s = SHORT[self.param], SHORT[self.grad], SHORT[self.state]
        if self.master:
            kept = "fp32 master and states" if s == "fp32" else f"fp32 master, {s} states"
            return f"{p} params and {g} grads, {kept}" if p != g else (
                f"{p} params and grads, {kept}")
        if p == g == s:
            return f"{p} params, grads and states"
        if p == g:
            return f"{p} params and grads, {s} states"
        return f"{p} params, {g} grads, {s} states"

    def describe(self) -> str:
        """The layout and, where something is narrowed, the rounding."""
        text = self.describe_layout()
        narrowed = {self.param, self.state} & set(NARROW)
        if narrowed and not self.master:
            text += ", stochastic rounding" if self.stochastic else ", round to nearest"
        return text


def _modes() -> List[Precision]:
    out = [Precision("fp32", "float32", "float32", "float32"),
           Precision("fp64", "float64", "float64", "float64")]
    narrow = "bfloat16"
    out += [Precision("bf16", narrow, narrow, narrow),
            Precision("bf16-sr", narrow, narrow, narrow, stochastic=True),
            Precision("bf16-fp32-states", narrow, narrow, "float32"),
            Precision("bf16-master", narrow, narrow, "float32", master=True),
            Precision("fp32-bf16-states", "float32", "float32", narrow),
            Precision("fp32-bf16-states-sr", "float32", "float32", narrow, stochastic=True)]
    # float16 params and grads with float32 states only: float16 states cannot hold what
    # Adam-like rules keep (a squared gradient of 1e-3 times (1 - 0.999) is below float16's
    # smallest normal number, 6.1e-5; its subnormals are spaced 6e-8 apart), so a step on
    # them is off by a large factor wherever the gradient is small, whatever it rounds
    narrow = "float16"
    out += [Precision("fp16-fp32-states", narrow, narrow, "float32"),
            Precision("fp16-master", narrow, narrow, "float32", master=True)]
    return out


PRECISIONS: Dict[str, Precision] = {p.name: p for p in _modes()}
FP32, FP64 = PRECISIONS["fp32"], PRECISIONS["fp64"]
# `--precisions all`: every mode of float32 math (fp64 is --dtype float64's)
ALL = tuple(n for n, p in PRECISIONS.items() if p.compute == "float32")


@functools.lru_cache(maxsize=None)
def plain(dtype_name: str) -> Precision:
    """The plain mode of a dtype (float32 -> fp32, float64 -> fp64)."""
    for p in PRECISIONS.values():
        if p.plain and p.param == dtype_name:
            return p
    raise ValueError(f"no precision mode stores everything as {dtype_name}")


def as_precision(x: Any) -> Precision:
    """A Precision, its name, or a dtype (its plain mode)."""
    if isinstance(x, Precision):
        return x
    if isinstance(x, str) and x in PRECISIONS:
        return PRECISIONS[x]
    return plain(np.dtype(x).name)


def parse_precisions(text: str) -> List[Precision]:
    """``"fp32,bf16-sr"`` -> those modes; ``"all"`` -> ALL."""
    text = text.strip()
    names: Sequence[str] = (ALL if text == "all" else [s.strip() for s in text.split(",")
                                                      if s.strip()])
    unknown = [n for n in names if n not in PRECISIONS]
    if unknown or not names:
        raise ValueError(f"unknown precision {', '.join(unknown) or '(none)'}; choose from "
                         f"{', '.join(PRECISIONS)} or all")
    return [PRECISIONS[n] for n in dict.fromkeys(names)]


def ulp(x: np.ndarray, name: str) -> np.ndarray:
    """The spacing of storage type ``name`` at magnitude |x| (float64): 2^(exponent - nmant),
    subnormals included (the exponent never below the type's smallest)."""
    info = finfo(name)
    mag = np.abs(np.asarray(x, np.float64))
    with np.errstate(divide="ignore"):
        e = np.floor(np.log2(np.where(mag > 0, mag, 1.0)))
    e = np.where(mag > 0, np.maximum(e, info.minexp), info.minexp)
    spacing: np.ndarray = np.ldexp(1.0, (e - info.nmant).astype(np.int64))
    return spacing


def round_to(x: np.ndarray, name: str) -> np.ndarray:
    """``x`` (float64) stored as ``name`` the way a float32 step stores it: rounded to float32,
    then to ``name`` to nearest (float64 arrays are kept as they are)."""
    x = np.asarray(x, np.float64)
    if name == "float64":
        return x
    f32 = x.astype(np.float32)
    if name == "float32":
        return f32.astype(np.float64)
    return f32.astype(storage_dtype(name)).astype(np.float64)
