// Narrow storage types, element by element, in exact integer arithmetic: the same bits on every
// instruction set (the loops that call these are vectorized by the compiler) and on CUDA.
//   widen:  bfloat16/float16 -> float32, exact.
//   narrow: float32 -> bfloat16/float16, to nearest even (bitwise torch's .to(bfloat16) and
//           .to(float16): subnormals kept, Inf kept, NaN stays NaN) or stochastically with 32
//           random bits per element from a counter-based generator (below), so that the
//           expected stored value is the float32 value.
#pragma once

#include <cstdint>
#include <cstring>

#include "core/config.h"

namespace gdfast::rounding {

GDFAST_HD std::uint32_t bits_of(float x) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(x);
#else
  std::uint32_t b;
  std::memcpy(&b, &x, sizeof b);
  return b;
#endif
}
GDFAST_HD float float_of(std::uint32_t b) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(b);
#else
  float x;
  std::memcpy(&x, &b, sizeof x);
  return x;
#endif
}

GDFAST_HD float widen_bf16(std::uint16_t h) { return float_of(std::uint32_t{h} << 16); }

GDFAST_HD float widen_f16(std::uint16_t h) {
  const std::uint32_t sign = std::uint32_t{h & 0x8000u} << 16;
  const std::uint32_t exponent = (h >> 10) & 0x1Fu;
  const std::uint32_t mantissa = h & 0x3FFu;
  const std::uint32_t normal = sign | ((exponent + 112u) << 23) | (mantissa << 13);
  // (a NaN comes out quiet, as the F16C conversion makes it)
  const std::uint32_t inf_nan =
      sign | 0x7F800000u | (mantissa << 13) | (mantissa != 0 ? 0x400000u : 0);
  // A subnormal is mantissa * 2^-24: both factors exact in float32, so is the product.
  const std::uint32_t subnormal = sign | bits_of(static_cast<float>(mantissa) * 0x1p-24f);
  return float_of(exponent == 0 ? subnormal : exponent == 31 ? inf_nan : normal);
}

// `add` is added below the kept bits before they are cut: 0x7FFF plus the lowest kept bit
// rounds to nearest even; 16 random bits round stochastically.
GDFAST_HD std::uint16_t narrow_bf16(std::uint32_t b, std::uint32_t add) {
  const bool nan = (b & 0x7FFFFFFFu) > 0x7F800000u;
  return static_cast<std::uint16_t>(nan ? 0x7FC0u : (b + add) >> 16);
}
GDFAST_HD std::uint16_t bf16_nearest(float x) {
  const std::uint32_t b = bits_of(x);
  return narrow_bf16(b, 0x7FFFu + ((b >> 16) & 1u));
}
// random16: 16 random bits (in the low half).
GDFAST_HD std::uint16_t bf16_stochastic(float x, std::uint32_t random16) {
  return narrow_bf16(bits_of(x), random16);
}

// float16: 10 mantissa bits, exponent bias 15, subnormals below 2^-14 in steps of 2^-24.
// kStochastic: 16 random bits (`random16`, the low half) decide the rounding; else to nearest
// even.
template <bool kStochastic>
GDFAST_HD std::uint16_t narrow_f16(float x, std::uint32_t random16) {
  const std::uint32_t b = bits_of(x);
  const std::uint32_t a = b & 0x7FFFFFFFu;
  const std::uint32_t sign = (b >> 16) & 0x8000u;
  // Normal results: rebias the exponent (127 -> 15) and cut 13 mantissa bits; a carry out of
  // the mantissa moves to the next binade, and out of the largest one to Inf.
  const std::uint32_t normal_add = kStochastic ? random16 >> 3 : 0xFFFu + ((a >> 13) & 1u);
  const std::uint32_t normal = ((a - 0x38000000u) + normal_add) >> 13;
  // Subnormal results: the significand in units of 2^-24 is mantissa >> (126 - exponent).
  const std::uint32_t exponent = a >> 23;
  const std::uint32_t shift = 126u - (exponent < 126u ? exponent : 126u);
  // (cut: shift kept where it is defined; results with shift outside [14, 31] are not used)
  const std::uint32_t cut = shift < 14u ? 14u : shift > 31u ? 31u : shift;
  const std::uint32_t significand = (a & 0x7FFFFFu) | 0x800000u;
  const std::uint32_t sub_add = kStochastic
                                    ? (random16 << 16) >> (32u - cut)
                                    : ((1u << (cut - 1u)) - 1u) + ((significand >> cut) & 1u);
  const std::uint32_t subnormal = shift > 31u ? 0u : (significand + sub_add) >> cut;
  const std::uint32_t nan = 0x7E00u | ((a >> 13) & 0x1FFu);
  const std::uint32_t magnitude = a > 0x7F800000u    ? nan
                                  : a >= 0x47800000u ? 0x7C00u
                                  : a >= 0x38800000u ? normal
                                                     : subnormal;
  return static_cast<std::uint16_t>(sign | magnitude);
}

// One narrow store, by storage type (bfloat16 or float16) and rounding.
GDFAST_HD std::uint16_t narrow(bool bfloat16, float x, bool stochastic, std::uint32_t random16) {
  if (bfloat16) return stochastic ? bf16_stochastic(x, random16) : bf16_nearest(x);
  return stochastic ? narrow_f16<true>(x, random16) : narrow_f16<false>(x, random16);
}

// The counter-based generator of stochastic rounding. Keyed hashing, not a sequence: any
// element's bits are known without the others', so results do not depend on threads,
// instruction set or how the params are grouped. One 32-bit hash per element serves two
// arrays: role r (0 the param, 1 + k state k) takes the high (r even) or low (r odd) 16 bits
// of the hash of stream r / 2. A stream is (seed, step, the param's index in its optimizer,
// r / 2, element index >> 32).
GDFAST_HD std::uint64_t splitmix64(std::uint64_t z) {
  z += 0x9E3779B97F4A7C15ull;
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
GDFAST_HD std::uint32_t lowbias32(std::uint32_t x) {
  x ^= x >> 16;
  x *= 0x7FEB352Du;
  x ^= x >> 15;
  x *= 0x846CA68Bu;
  x ^= x >> 16;
  return x;
}
// The part of a stream's key shared by every array of one param in one step.
GDFAST_HD std::uint64_t param_key(std::uint64_t seed, std::uint64_t step,
                                  std::uint64_t param_index) {
  return splitmix64(splitmix64(seed ^ splitmix64(step)) ^ param_index);
}
GDFAST_HD std::uint32_t stream_key(std::uint64_t param, unsigned stream, std::uint64_t index) {
  const std::uint64_t high = index >> 32;
  return static_cast<std::uint32_t>(splitmix64(param ^ ((std::uint64_t{stream} << 32) | high)));
}
GDFAST_HD std::uint32_t random_bits(std::uint32_t key, std::uint64_t index) {
  return lowbias32(static_cast<std::uint32_t>(index) ^ key);
}
GDFAST_HD std::uint32_t random16(std::uint32_t bits, unsigned role) {
  return (role & 1u) == 0 ? bits >> 16 : bits & 0xFFFFu;
}

}  // namespace gdfast::rounding
