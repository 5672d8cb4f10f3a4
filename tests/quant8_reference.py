"""Blockwise 8-bit states in NumPy, written from the description (README "8-bit states";
Dettmers et al. 2022, Section 2.2, the dynamic tree map), for the tests to check gdfast's
kernels against bit for bit. Imports nothing of gdfast.

A state is one byte per element and one float32 absmax per block of 256. A byte holds a sign
bit (signed map) and B magnitude bits (B = 7 signed, 8 unsigned): magnitude code c >= 1 has
p = floor(log2 c), decade z = B - 1 - p, fraction j = c - 2**p, and stands for the centre of
bin j of 2**p equal bins over [0.1, 1) * 10**-z. Every step below is one float32 operation,
in the order the kernels do them, so the results are exact, not approximate.
"""

from __future__ import annotations

import numpy as np

BLOCK = 256
F32 = np.float32


def bits(signed: bool) -> int:
    return 7 if signed else 8


def ten_to(k: int) -> np.float32:
    """float32(10**-k), correctly rounded (the decimal literal 1e-kf)."""
    return F32(float(f"1e-{k}"))


def _per_element(absmax: np.ndarray, n: int) -> np.ndarray:
    return np.repeat(np.asarray(absmax, F32), BLOCK)[:n]


def decode(codes: np.ndarray, absmax: np.ndarray, signed: bool) -> np.ndarray:
    """float32 values of uint8 codes, block by block: the bin centre
    (0.1 + (c - 2**p + 0.5) * width) * 10**-z, width = 0.9 / 2**p, evaluated as
    c * (slope * absmax) + offset * absmax with slope = width * 10**-z and
    offset = (0.1 + 0.5 * width - 0.9) * 10**-z (2**p * width = 0.9)."""
    codes = np.asarray(codes, np.uint8).ravel()
    scale_of = _per_element(absmax, codes.size)
    c = (codes & 0x7F if signed else codes).astype(np.int64)
    p = np.frexp(np.maximum(c, 1).astype(np.float64))[1] - 1  # floor(log2 c), exact
    width = F32(0.9) / (2**p).astype(F32)
    decade = np.array([ten_to(k) for k in range(9)], F32)[bits(signed) - 1 - p]
    slope = width * decade
    offset = (F32(0.1) + F32(0.5) * width - F32(0.9)) * decade
    with np.errstate(invalid="ignore", over="ignore"):
        value = c.astype(F32) * (slope * scale_of) + offset * scale_of
        value = np.where(c == 0, F32(0.0) * scale_of, value)
        return np.where(signed & (codes >= 0x80), -value, value).astype(F32)


def block_absmax(x: np.ndarray) -> np.ndarray:
    """Each block's largest |x|; NaN for a block holding a NaN or an Inf."""
    x = np.asarray(x, F32).ravel()
    blocks = -(-x.size // BLOCK)
    padded = np.zeros(blocks * BLOCK, F32)
    padded[:x.size] = np.abs(x)
    padded = padded.reshape(blocks, BLOCK)
    finite = np.all(np.isfinite(padded), axis=1)
    with np.errstate(invalid="ignore"):
        return np.where(finite, padded.max(axis=1), F32(np.nan)).astype(F32)


def encode(x: np.ndarray, absmax: np.ndarray, signed: bool) -> np.ndarray:
    """uint8 codes of float32 values: the bin of the decade that holds y = |x| / absmax
    (signed map; the unsigned map takes x / absmax, so a negative x gets code 0), computed
    as floor(y * slope + offset) with slope = 10**z * 2**p / 0.9 and offset = 2**p * 8 / 9
    (each rounded to float32; 2**p + floor((y * 10**z - 0.1) * 2**p / 0.9)); below 10**-B
    the code is 0; the signed map sets bit 7 for a negative x (also -0)."""
    x = np.asarray(x, F32).ravel()
    a = _per_element(absmax, x.size)
    top = bits(signed)
    with np.errstate(invalid="ignore", over="ignore", divide="ignore"):
        inverse = np.where(a > 0, F32(1.0) / np.where(a > 0, a, F32(1.0)), F32(0.0))
        inverse = np.minimum(inverse, np.finfo(F32).max).astype(F32)
        y = (np.abs(x) if signed else x) * inverse
        below = ~(y >= ten_to(top))  # (NaN too)
        z = np.zeros(x.size, np.int64)
        for k in range(top):  # the decades whose lower end lies above y
            z += y < ten_to(k + 1)
        z = np.minimum(z, top - 1)
        bins = 2.0 ** (top - 1 - z)
        slope = (np.array([10.0**k for k in range(8)])[z] * bins / 0.9).astype(F32)
        offset = (bins * 8.0 / 9.0).astype(F32)
        code = np.minimum(np.where(below, F32(0), y) * slope + offset, F32(2**top - 1))
        magnitude = np.where(below, 0, np.trunc(code)).astype(np.int64)
    if signed:
        magnitude = magnitude | np.where(np.signbit(x), 0x80, 0)
    return magnitude.astype(np.uint8)


def requantize(x: np.ndarray, signed: bool) -> tuple[np.ndarray, np.ndarray]:
    """(codes, absmax) a kernel stores for new float32 values x."""
    absmax = block_absmax(x)
    return encode(x, absmax, signed), absmax


def half_bin(codes: np.ndarray, absmax: np.ndarray, signed: bool) -> np.ndarray:
    """Half the width of each code's bin (float64): how far encoding may move a value."""
    magnitude = (np.asarray(codes, np.uint8) & (0x7F if signed else 0xFF)).astype(np.int64)
    p = np.floor(np.log2(np.maximum(magnitude, 1))).astype(np.int64)
    z = bits(signed) - 1 - p
    scale = np.repeat(np.asarray(absmax, np.float64), BLOCK)[:magnitude.size]
    return 0.45 * 10.0 ** (-z.astype(np.float64)) / 2.0 ** p * scale
