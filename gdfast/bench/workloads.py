"""What gets stepped: single tensors of a size sweep, and model-shaped lists of tensors.

Inputs are made once per workload (seeded) and shared by every implementation: each one
steps its own copy of the initial parameters, all read the same gradients.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .precision import FP32, Precision, as_precision, storage_dtype

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class Workload:
    name: str  # "1e6", "gpt2-small", "1000x1024"
    shapes: Tuple[Shape, ...]
    kind: str  # "single" (one array, passed as such) or "list" (a list of arrays)
    note: str = ""  # e.g. why it was scaled down

    @property
    def numel(self) -> int:
        return sum(math.prod(s) for s in self.shapes)

    @property
    def tensors(self) -> int:
        return len(self.shapes)

    @property
    def largest(self) -> int:
        return max((math.prod(s) for s in self.shapes), default=0)


def size_name(n: int) -> str:
    """1000 -> "1e3", 2500000 -> "2.5e6", 1234 -> "1234"."""
    if n >= 1000:
        exp = int(math.floor(math.log10(n)))
        mant = n / 10**exp
        if abs(mant - round(mant, 1)) < 1e-9 * mant:
            m = f"{round(mant, 1):g}"
            return f"{m}e{exp}"
    return str(n)


def single(n: int, note: str = "") -> Workload:
    return Workload(size_name(n), ((n,),), "single", note)


def gpt2_small(layers: int = 12) -> Workload:
    """GPT-2 small's parameter tensors (HF layout, tied head): token and position embeddings,
    per block ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj (weights and
    biases), final ln_f. 12 layers: 148 tensors, 124,439,808 parameters."""
    d, vocab, ctx = 768, 50257, 1024
    shapes: List[Shape] = [(vocab, d), (ctx, d)]
    for _ in range(layers):
        shapes += [(d,), (d,),  # ln_1
                   (d, 3 * d), (3 * d,),  # attn.c_attn
                   (d, d), (d,),  # attn.c_proj
                   (d,), (d,),  # ln_2
                   (d, 4 * d), (4 * d,),  # mlp.c_fc
                   (4 * d, d), (d,)]  # mlp.c_proj
    shapes += [(d,), (d,)]  # ln_f
    name = "gpt2-small" if layers == 12 else f"gpt2-small[{layers}L]"
    note = "" if layers == 12 else f"{layers} of 12 blocks (memory)"
    return Workload(name, tuple(shapes), "list", note)


def many_small(count: int = 1000, size: int = 1024) -> Workload:
    return Workload(f"{count}x{size}", tuple((size,) for _ in range(count)), "list")


LISTS = ("gpt2-small", "1000x1024")


def make_list(name: str) -> Workload:
    if name == "gpt2-small":
        return gpt2_small()
    if name == "1000x1024":
        return many_small()
    raise ValueError(f"unknown list workload {name!r}; choose from {', '.join(LISTS)}")


def parse_sizes(text: str) -> List[int]:
    """``"1e3,1e4,250000"`` -> [1000, 10000, 250000]; ``"none"`` -> []."""
    if text.strip().lower() in ("", "none"):
        return []
    out = []
    for part in text.split(","):
        part = part.strip()
        try:
            value = float(part)
        except ValueError:
            raise ValueError(f"size {part!r}: expected a number like 1e6") from None
        if not math.isfinite(value) or value < 1 or value != int(value):
            raise ValueError(f"size {part!r}: expected a whole number >= 1")
        out.append(int(value))
    return list(dict.fromkeys(out))


def parse_lists(text: str) -> List[str]:
    if text.strip().lower() in ("", "none"):
        return []
    names = [s.strip() for s in text.split(",") if s.strip()]
    for n in names:
        make_list(n)  # raises on an unknown name
    return list(dict.fromkeys(names))


def fit(workload: Workload, bytes_for: Callable[[Workload], int],
        budget: int) -> Optional[Workload]:
    """``workload`` if ``bytes_for(workload) <= budget``, else the largest smaller one of its
    kind that fits (single: 1-2-5 sizes below; gpt2-small: fewer blocks), else None."""
    if bytes_for(workload) <= budget:
        return workload
    if workload.kind == "single":
        n = workload.numel
        for candidate in _sizes_below(n):
            w = single(candidate, f"scaled down from {size_name(n)} (memory)")
            if bytes_for(w) <= budget:
                return w
        return None
    if workload.name.startswith("gpt2-small"):
        for layers in range(11, 0, -1):
            w = gpt2_small(layers)
            if bytes_for(w) <= budget:
                return w
    return None


def _sizes_below(n: int) -> Sequence[int]:
    out = []
    exp = int(math.floor(math.log10(n)))
    while exp >= 3:
        for mant in (5, 2, 1):
            v = mant * 10**exp
            if v < n:
                out.append(v)
        exp -= 1
    return out


class Pool:
    """Arrays handed back by the runners of one group, handed out again to the next: fresh
    memory is expensive to touch the first time (page faults: ~0.5 GB/s on the VMs of
    shared/BENCHMARKING.md, 1 s per 1e8-element fp32 array), memory already touched is not."""

    def __init__(self) -> None:
        self.free: Dict[Tuple[Shape, str], List[np.ndarray]] = {}

    def take(self, like: np.ndarray, dtype: Any = None) -> np.ndarray:
        """An array of ``like``'s shape and dtype (or ``dtype``), contents undefined."""
        dtype = like.dtype if dtype is None else np.dtype(dtype)
        stack = self.free.get((like.shape, dtype.name))
        return stack.pop() if stack else np.empty(like.shape, dtype)

    def give(self, arrays: Sequence[np.ndarray]) -> None:
        for a in arrays:
            self.free.setdefault((a.shape, a.dtype.name), []).append(a)

    def clear(self) -> None:
        self.free.clear()


@dataclass
class Data:
    """A workload's inputs: initial parameters and gradients in the precision mode's storage
    types (shared, never written by a correct implementation), and the gate's sample of
    element positions. ``dtype`` is the parameters' type. Modes that store params and grads
    alike share the arrays (``for_precision``)."""

    workload: Workload
    dtype: np.dtype
    p0: List[np.ndarray]
    grads: List[np.ndarray]
    sample: List[np.ndarray] = field(default_factory=list)  # per tensor, flat indices
    pool: Pool = field(default_factory=Pool)  # the runners' arrays, reused across groups
    seed: int = 0
    precision: Precision = FP32

    def restore_grads(self) -> None:
        """Regenerate the gradients in place (after an implementation wrote into them)."""
        _, rng_g, _ = _streams(self.seed)
        for g in self.grads:
            np.copyto(g, _uniform(rng_g, g.shape, self.precision.compute).astype(g.dtype))

    @property
    def single(self) -> bool:
        return self.workload.kind == "single"

    def gather(self, arrays: Sequence[np.ndarray]) -> np.ndarray:
        """The sampled elements of ``arrays`` (one per tensor), concatenated."""
        parts = [np.asarray(a).reshape(-1)[idx] for a, idx in zip(arrays, self.sample)]
        return np.concatenate(parts) if parts else np.zeros(0)

    def for_precision(self, precision: Precision) -> "Data":
        """The same inputs for another mode storing params and grads in the same types."""
        if (precision.param, precision.grad) != (self.precision.param, self.precision.grad):
            raise ValueError(f"{precision.name} stores params and grads as {precision.param} "
                             f"and {precision.grad}, not {self.precision.param} and "
                             f"{self.precision.grad}")
        return dataclasses.replace(self, precision=precision)


def _uniform(rng: np.random.Generator, shape: Shape, dtype: Any) -> np.ndarray:
    """U[-1, 1) in ``dtype`` (float32 or float64), drawn in place: ~2 ns per element, where
    standard_normal takes ~10 (GPT-2-small's p0 and grads: 0.5 s instead of 2.5 s)."""
    a = np.empty(shape, dtype)
    rng.random(dtype=a.dtype, out=a)
    a *= 2
    a -= 1
    return a


def _streams(seed: int) -> Tuple[np.random.Generator, ...]:
    """Independent generators for p0, grads and the sample: each can be replayed alone."""
    return tuple(np.random.default_rng([seed, k]) for k in range(3))


def make_data(workload: Workload, precision: Any, seed: int = 0,
              sample_total: int = 20000) -> Data:
    """Parameters and gradients ~ U[-1, 1), from ``seed``, in the storage types of
    ``precision`` (a Precision, its name, or float32/float64 for the plain modes): drawn in
    the type the step computes in, then rounded to the storage type, so that every mode
    starts from the same values up to that rounding. The sample holds each tensor's first
    and last 32 elements and random positions (about ``sample_total`` overall, at least 16
    per tensor)."""
    precision = as_precision(precision)
    param_t, grad_t = storage_dtype(precision.param), storage_dtype(precision.grad)
    rng_p, rng_g, rng_s = _streams(seed)
    p0, grads, sample = [], [], []
    total = max(workload.numel, 1)
    for shape in workload.shapes:
        p0.append(_narrowed(_uniform(rng_p, shape, precision.compute), param_t))
        grads.append(_narrowed(_uniform(rng_g, shape, precision.compute), grad_t))
        n = math.prod(shape)
        quota = min(n, max(16, sample_total * n // total))
        edges = np.r_[np.arange(min(n, 32)), np.arange(max(0, n - 32), n)]
        idx = np.unique(np.r_[edges, rng_s.integers(0, n, quota) if n else []].astype(np.int64))
        sample.append(idx)
    return Data(workload, param_t, p0, grads, sample, seed=seed, precision=precision)


def _narrowed(a: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return a if a.dtype == dtype else a.astype(dtype)
