"""Rounding to bfloat16 / float16 storage, in NumPy, for tests/test_precision.py.

Imports nothing of gdfast. Three groups:

* Round to nearest even from float32 *bit patterns*, as gdfast's stores are specified (bitwise
  torch's ``.to(torch.bfloat16)`` / ``.to(torch.float16)``): integer arithmetic on the bits, so
  that NaN payloads, subnormals, ties and overflow are spelled out rather than inherited from a
  library. test_precision checks these against ml_dtypes, numpy and torch.
* Correct (single) rounding of float64 values to float32 / bfloat16 / float16, for comparing
  with a float64 reference. ml_dtypes' float64 -> bfloat16 cast rounds twice (through float32),
  so it is not used for that.
* The stochastic-rounding generator of gdfast's spec (splitmix64, lowbias32, key32) and the
  stochastic stores built on it, bit for bit.

Every function takes array-likes and returns new arrays; uint16 results are the storage bits,
``as_storage`` turns them into arrays of the storage dtype.
"""

from __future__ import annotations

from typing import Any, Dict, NamedTuple

import ml_dtypes
import numpy as np

BFLOAT16 = np.dtype(ml_dtypes.bfloat16)
FLOAT16 = np.dtype(np.float16)
FLOAT32 = np.dtype(np.float32)
FLOAT64 = np.dtype(np.float64)

__all__ = [
    "BFLOAT16", "FLOAT16", "FLOAT32", "FLOAT64", "FORMATS", "Format",
    "f32_bits", "f32_from_bits", "storage_bits", "as_storage", "widen",
    "bf16_nearest_bits", "fp16_nearest_bits", "nearest_bits", "round_nearest",
    "round_f64", "ordinal", "ulp_distance",
    "splitmix64", "lowbias32", "key32", "element_hashes",
    "bf16_stochastic_bits", "fp16_stochastic_bits", "stochastic_bits", "round_stochastic",
]

_M32 = (1 << 32) - 1
_M64 = (1 << 64) - 1


class Format(NamedTuple):
    """A binary floating-point storage format: ``precision`` significand bits (with the
    implicit one), smallest normal exponent ``emin``, largest finite value ``max``."""

    dtype: np.dtype
    precision: int
    emin: int
    max: float


FORMATS: Dict[str, Format] = {
    "float32": Format(FLOAT32, 24, -126, float(np.finfo(np.float32).max)),
    "bfloat16": Format(BFLOAT16, 8, -126, float(ml_dtypes.finfo(ml_dtypes.bfloat16).max)),
    "float16": Format(FLOAT16, 11, -14, 65504.0),
}


# -- bits ------------------------------------------------------------------------------------
def f32_bits(x: Any) -> np.ndarray:
    """The float32 values' bit patterns (uint32; NaN payloads kept)."""
    return np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).copy()


def f32_from_bits(bits: Any) -> np.ndarray:
    return np.ascontiguousarray(bits, dtype=np.uint32).view(np.float32).copy()


def storage_bits(a: np.ndarray) -> np.ndarray:
    """The bit patterns of a 16-bit (uint16) or float32 (uint32) array, for bitwise compares."""
    a = np.ascontiguousarray(a)
    return a.view(np.uint16 if a.dtype.itemsize == 2 else np.uint32).copy()


def as_storage(bits: Any, dtype: Any) -> np.ndarray:
    """uint16 bits as a bfloat16 / float16 array."""
    return np.ascontiguousarray(bits, dtype=np.uint16).view(np.dtype(dtype)).copy()


def widen(a: np.ndarray, dtype: Any = np.float32) -> np.ndarray:
    """Exact widening (bf16/fp16 -> float32 -> float64 are exact casts)."""
    return np.asarray(a).astype(dtype)


# -- round to nearest even from float32 bits ------------------------------------------------
def bf16_nearest_bits(x: Any) -> np.ndarray:
    """float32 -> bfloat16 bits, round to nearest even; every NaN -> 0x7FC0 (torch's choice:
    no sign, no payload); overflow rounds to +-Inf as IEEE specifies."""
    b = f32_bits(x)
    nan = (b & 0x7FFFFFFF) > 0x7F800000
    # b + 0x7FFF + lsb carries into the upper half exactly when the lower half is above the
    # tie, or at the tie with an odd upper half; -Inf (0xFF800000) + 0x8000 fits in 32 bits.
    rounded = (b + np.uint32(0x7FFF) + ((b >> 16) & 1)) >> 16
    return np.where(nan, np.uint32(0x7FC0), rounded).astype(np.uint16)


def fp16_nearest_bits(x: Any) -> np.ndarray:
    """float32 -> float16 bits, round to nearest even, subnormals kept; NaN -> sign | 0x7E00 |
    payload bits 21..13 (quiet, as x86's F16C conversion); |x| >= 65520 (the tie above the
    largest finite 65504, whose significand is odd) -> +-Inf."""
    b = f32_bits(x)
    a = b & 0x7FFFFFFF
    sign = (b >> 16) & 0x8000
    nan = a > 0x7F800000
    overflow = a >= 0x477FF000  # 65520.0
    normal = a >= 0x38800000  # 2**-14, the smallest normal float16
    # Normal: rebias the exponent (127 -> 15, i.e. subtract 112 << 23) and round the 23-bit
    # significand to 10 bits, carrying into the exponent as the encoding is monotone.
    r = a - np.uint32(0x38000000)
    normal_bits = (r + np.uint32(0xFFF) + ((r >> 13) & 1)) >> 13
    # Subnormal: value m * 2**(e - 150) in units of 2**-24 is m >> (126 - e), rounded; a
    # shift of 25 or more leaves less than half a unit (m < 2**24): zero.
    e = (a >> 23).astype(np.int64)
    m = ((a & 0x7FFFFF) | 0x800000).astype(np.int64)
    shift = np.clip(126 - e, 1, 40)
    q = m >> shift
    rem = m - (q << shift)
    half = np.int64(1) << (shift - 1)
    up = (rem > half) | ((rem == half) & ((q & 1) == 1))
    sub_bits = np.where((shift >= 25) | (e == 0), 0, q + up).astype(np.uint32)
    out = np.where(normal, normal_bits, sub_bits)
    out = np.where(overflow, np.uint32(0x7C00), out)
    out = np.where(nan, np.uint32(0x7E00) | ((a >> 13) & 0x1FF), out)
    return (out | sign).astype(np.uint16)


def nearest_bits(x: Any, dtype: Any) -> np.ndarray:
    """float32 values rounded to nearest even into bfloat16 / float16 (uint16 bits), or float32
    bits unchanged."""
    dtype = np.dtype(dtype)
    if dtype == BFLOAT16:
        return bf16_nearest_bits(x)
    if dtype == FLOAT16:
        return fp16_nearest_bits(x)
    if dtype == FLOAT32:
        return f32_bits(x)
    raise TypeError(f"no storage rounding to {dtype}")


def round_nearest(x: Any, dtype: Any) -> np.ndarray:
    """float32 values stored as ``dtype`` the way gdfast stores with round to nearest."""
    dtype = np.dtype(dtype)
    if dtype == FLOAT32:
        return np.array(x, dtype=np.float32)
    return as_storage(nearest_bits(x, dtype), dtype)


# -- float64 -> a format, correctly rounded (once) -----------------------------------------------
def round_f64(x: Any, fmt: Any) -> np.ndarray:
    """float64 values rounded to nearest even in ``fmt`` (a FORMATS key or dtype), returned as
    float64: one rounding, with the format's subnormals and overflow to +-Inf. NaN and Inf
    pass through; the sign of zero is kept."""
    f = FORMATS[np.dtype(fmt).name] if not isinstance(fmt, Format) else fmt
    x = np.asarray(x, dtype=np.float64)
    finite = np.isfinite(x) & (x != 0)
    safe = np.where(finite, x, 1.0)
    _, exponent = np.frexp(np.abs(safe))  # |x| = f * 2**exponent, f in [0.5, 1)
    quantum = np.maximum(exponent - 1, f.emin) - (f.precision - 1)
    # x / 2**quantum is exact (a power-of-two scaling within float64's range), and np.rint
    # rounds half to even: the correctly rounded significand.
    q = np.ldexp(np.rint(np.ldexp(safe, -quantum)), quantum)
    q = np.where(np.abs(q) > f.max, np.copysign(np.inf, safe), q)
    return np.where(finite, q, x)


# -- ulps ------------------------------------------------------------------------------------------
def ordinal(a: np.ndarray) -> np.ndarray:
    """A monotone integer image of a float array's values (bitwise: adjacent representable
    values differ by one; +0 and -0 both map to 0)."""
    a = np.ascontiguousarray(a)
    width = a.dtype.itemsize * 8
    if width not in (16, 32):
        raise TypeError("ordinal: 16- and 32-bit formats only")
    bits = a.view(np.uint16 if width == 16 else np.uint32).astype(np.int64)
    magnitude = bits & ((1 << (width - 1)) - 1)
    return np.where(bits >> (width - 1) != 0, -magnitude, magnitude)


def ulp_distance(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """How many representable values of their (common) format lie between a and b."""
    assert np.asarray(a).dtype == np.asarray(b).dtype
    return np.abs(ordinal(a) - ordinal(b))


# -- the stochastic rounding generator (gdfast's spec, bit for bit) -------------------------------
def splitmix64(z: int) -> int:
    """One output of Steele et al.'s SplitMix64 from state z (the state advanced first)."""
    z = (z + 0x9E3779B97F4A7C15) & _M64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def lowbias32(x: Any) -> np.ndarray:
    """Wellons' lowbias32 integer hash, elementwise on uint32 (wrapping arithmetic)."""
    x = np.array(x, dtype=np.uint32)
    x ^= x >> 16
    x *= np.uint32(0x7FEB352D)
    x ^= x >> 15
    x *= np.uint32(0x846CA68B)
    x ^= x >> 16
    return x


def key32(seed: int, step: int, param_index: int, stream: int, hi: int = 0) -> int:
    """The key of one (seed, step, tensor, stream, upper index half): the low 32 bits of
    splitmix64(splitmix64(splitmix64(seed ^ splitmix64(step)) ^ param_index)
               ^ (stream << 32 | hi))."""
    z = splitmix64((seed ^ splitmix64(step & _M64)) & _M64)
    z = splitmix64(z ^ (param_index & _M64))
    return splitmix64(z ^ (((stream << 32) | hi) & _M64)) & _M32


def element_hashes(n: int, seed: int, step: int, param_index: int, role: int) -> np.ndarray:
    """The 16 random bits of role `role` (0 the param, 1 + k state k) for flat elements 0..n-1
    of one tensor (uint32 < 2**16): the hash h of stream role // 2, its high half for an even
    role, its low half for an odd one. Only n <= 2**32 (hi = 0)."""
    assert n <= 1 << 32
    i = np.arange(n, dtype=np.uint64).astype(np.uint32)
    h = lowbias32(i ^ np.uint32(key32(seed, step, param_index, role // 2, 0)))
    return h >> 16 if role % 2 == 0 else h & np.uint32(0xFFFF)


def bf16_stochastic_bits(x: Any, r16: Any) -> np.ndarray:
    """float32 -> bfloat16 bits rounding up with probability (lower 16 bits) / 2**16, using 16
    random bits r16: (b + r16) >> 16; NaN -> 0x7FC0."""
    b = f32_bits(x)
    r16 = np.asarray(r16, dtype=np.uint32)
    nan = (b & 0x7FFFFFFF) > 0x7F800000
    return np.where(nan, np.uint32(0x7FC0), (b + r16) >> 16).astype(np.uint16)


def fp16_stochastic_bits(x: Any, r16: Any) -> np.ndarray:
    """float32 -> float16 bits, stochastic as the spec writes it (NaN as round to nearest;
    |x| >= 65536 -> Inf; normals add r16 >> 3 below the 13 dropped bits; subnormals add
    (r16 << 16) >> (32 - shift) below the shifted-out bits; a shift above 31 or a float32
    subnormal gives a signed zero)."""
    b = f32_bits(x)
    r16 = np.asarray(r16, dtype=np.uint32).astype(np.uint64)
    a = b & 0x7FFFFFFF
    sign = (b >> 16) & 0x8000
    a64 = a.astype(np.uint64)
    normal_bits = ((a64 - 0x38000000) + (r16 >> 3)) >> 13
    e = (a >> 23).astype(np.int64)
    shift = 126 - e
    tiny = (shift > 31) | (e == 0)
    s = np.clip(shift, 1, 31).astype(np.uint64)
    m = (a64 & 0x7FFFFF) | 0x800000
    sub_bits = np.where(tiny, 0, (m + ((r16 << np.uint64(16)) >> (np.uint64(32) - s))) >> s)
    out = np.where(a >= 0x38800000, normal_bits, sub_bits)
    out = np.where(a >= 0x47800000, 0x7C00, out)
    out = np.where(a > 0x7F800000, np.uint64(0x7E00) | ((a64 >> 13) & 0x1FF), out)
    return (out.astype(np.uint32) | sign).astype(np.uint16)


def stochastic_bits(x: Any, h: Any, dtype: Any) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == BFLOAT16:
        return bf16_stochastic_bits(x, h)
    if dtype == FLOAT16:
        return fp16_stochastic_bits(x, h)
    raise TypeError(f"no stochastic rounding to {dtype}")


def round_stochastic(x: Any, dtype: Any, *, seed: int, step: int, param_index: int,
                     role: int) -> np.ndarray:
    """The float32 values x of one tensor (flat order) stored as ``dtype`` with stochastic
    rounding keyed as gdfast's spec says; float32 is stored unchanged."""
    dtype = np.dtype(dtype)
    x = np.ascontiguousarray(x, dtype=np.float32)
    if dtype == FLOAT32:
        return x.copy()
    h = element_hashes(x.size, seed, step, param_index, role).reshape(x.shape)
    return as_storage(stochastic_bits(x, h, dtype), dtype)
