// Blockwise 8-bit states (Dettmers et al. 2022, "8-bit Optimizers via Block-wise
// Quantization"): a state is stored as one byte per element plus one float32 per block of
// kBlock elements, the block's absolute maximum. A byte is a code of the dynamic tree map of
// the paper's Section 2.2, scaled by the block's absmax:
//   signed map (states of either sign): bit 7 the sign; the other 7 bits, read from the top,
//     hold z zero bits (the decade, base 10), an indicator bit 1, then 6 - z fraction bits;
//   unsigned map (states never negative, e.g. Adam's second moment): no sign bit, so one more
//     fraction bit in every decade (8 magnitude bits: z in 0..7).
// With B magnitude bits, code c >= 1 has p = floor(log2 c) (so z = B - 1 - p) and fraction
// j = c - 2^p, and stands for the centre of bin j of 2^p equal bins over [0.1, 1) * 10^-z:
//   value(c) = (0.1 + (j + 0.5) * 0.9 / 2^p) * 10^-z;   value(0) = 0
// (evaluated in float32 as decode() says).
// Encoding puts y = |x| / absmax into the bin that holds it, so |decode - x| is at most half a
// bin (0.45 * 10^-z / 2^p * absmax), plus float32 rounding; y below 10^-B becomes 0. A block
// holding a NaN or an Inf gets absmax NaN: all of it decodes to NaN, nothing passes as finite.
//
// This is the scalar definition. The vectorized block loops (cpu/simd: Quant8) compute the
// same float32 operations in the same order with the same constants (no FMA: builds use
// -ffp-contract=off), so every instruction set stores the same bytes.
#pragma once

#include <cfloat>
#include <cstdint>

#include "core/config.h"
#include "core/rounding.h"

namespace gdfast::quant8 {

inline constexpr index_t kBlock = 256;

GDFAST_HD constexpr int magnitude_bits(bool is_signed) { return is_signed ? 7 : 8; }

// Every constant below is a function for host and device code: the CPU's tables and CUDA's
// (filled in shared memory by each thread block) are built by the same functions.

// float32(10^-k), k = 0..8 (the literals are correctly rounded).
GDFAST_HD constexpr float ten_to(int k) {
  switch (k) {
    case 0:
      return 1.0f;
    case 1:
      return 1e-1f;
    case 2:
      return 1e-2f;
    case 3:
      return 1e-3f;
    case 4:
      return 1e-4f;
    case 5:
      return 1e-5f;
    case 6:
      return 1e-6f;
    case 7:
      return 1e-7f;
    default:
      return 1e-8f;
  }
}
// 10^k, k = 0..7: exact in float32.
GDFAST_HD constexpr float ten_pow(int k) {
  float x = 1.0f;
  for (int i = 0; i < k; ++i) x *= 10.0f;
  return x;
}

// Decoding constants per p = floor(log2 c). value(c) = (0.1 + (c - 2^p + 0.5) * width) * 10^-z
// with width = 0.9 / 2^p is evaluated as c * slope + offset (one multiply and one add per
// element, the block's absmax folded into both once per block):
//   slope = width * 10^-z,  offset = (0.1 + 0.5 * width - 0.9) * 10^-z   (2^p * width = 0.9).
// (The cancellation costs at most ~1e-6 of a value; a bin is at least 0.7% of one wide.)
GDFAST_HD constexpr float decode_slope(int p, int bits) {
  return 0.9f / static_cast<float>(1 << p) * ten_to(bits - 1 - p);  // (0.9f / 2^p is exact)
}
GDFAST_HD constexpr float decode_offset(int p, int bits) {
  return (0.1f + 0.5f * (0.9f / static_cast<float>(1 << p)) - 0.9f) * ten_to(bits - 1 - p);
}
struct DecodeTables {
  float slope[8], offset[8];
};
constexpr DecodeTables decode_tables(bool is_signed) {
  const int bits = magnitude_bits(is_signed);
  DecodeTables t{};
  for (int p = 0; p < bits; ++p) {
    t.slope[p] = decode_slope(p, bits);
    t.offset[p] = decode_offset(p, bits);
  }
  return t;
}

// Encoding constants per decade z: y in decade z lies in bin floor(t) of it, with
// t = (y * 10^z - 0.1) * 2^p / 0.9, so its code 2^p + floor(t) is floor(y * slope + offset):
//   slope = 10^z * 2^p / 0.9,  offset = 2^p * 8 / 9   (each rounded once to float32).
// A value just below a decade's lower end (float32 rounding of y) lands in the top bin of the
// decade below, which holds it: the codes of adjacent decades are adjacent. z = B: below
// the map (slope and offset 0: code 0).
GDFAST_HD constexpr float encode_slope(int z, int bits) {
  return static_cast<float>(static_cast<double>(ten_pow(z)) *
                            static_cast<double>(1 << (bits - 1 - z)) / 0.9);
}
GDFAST_HD constexpr float encode_offset(int z, int bits) {
  return static_cast<float>(static_cast<double>(1 << (bits - 1 - z)) * 8.0 / 9.0);
}
struct EncodeTables {
  float slope[16], offset[16];
};
constexpr EncodeTables encode_tables(bool is_signed) {
  const int bits = magnitude_bits(is_signed);
  EncodeTables t{};
  for (int z = 0; z < bits; ++z) {
    t.slope[z] = encode_slope(z, bits);
    t.offset[z] = encode_offset(z, bits);
  }
  return t;
}

// What y is raised to first: below every decade (so it takes code 0), and a NaN becomes it.
inline constexpr float kFloor = 0x1p-28f;

// The decade z of y >= kFloor from its binary exponent: for y in [2^E, 2^(E+1)), the decades
// whose lower end 10^-(k+1) lies above the binade (`above`), plus one if y is below the one
// lower end that may lie inside it (`inside`, else 0). A binade (factor 2) holds at most one
// lower end (factor 10 apart); z = B is below the map. Indexed by the biased exponent modulo
// 32: 100 (2^-27 < 10^-8) to 127 (y < 2; y <= 1 + ulp in fact); index 3 holds kFloor's
// exponent, 99 (and 131, never reached).
struct DecadeTables {
  std::int32_t above[32];
  float inside[32];
};
constexpr DecadeTables decade_tables(bool is_signed) {
  const int bits = magnitude_bits(is_signed);
  DecadeTables t{};
  for (int biased = 100; biased < 131; ++biased) {
    const int e = biased - 127;
    const double low = e >= 0 ? static_cast<double>(1 << e) : 1.0 / static_cast<double>(1 << -e);
    const double high = 2.0 * low;
    const int index = biased & 31;
    for (int k = 0; k < bits; ++k) {
      const float lower_end = ten_to(k + 1);
      if (static_cast<double>(lower_end) >= high) ++t.above[index];
      if (static_cast<double>(lower_end) >= low && static_cast<double>(lower_end) < high) {
        t.inside[index] = lower_end;
      }
    }
  }
  t.above[99 & 31] = bits;
  return t;
}

inline constexpr DecodeTables kDecodeSigned = decode_tables(true);
inline constexpr DecodeTables kDecodeUnsigned = decode_tables(false);
inline constexpr EncodeTables kEncodeSigned = encode_tables(true);
inline constexpr EncodeTables kEncodeUnsigned = encode_tables(false);
inline constexpr DecadeTables kDecadeSigned = decade_tables(true);
inline constexpr DecadeTables kDecadeUnsigned = decade_tables(false);

// A block's absmax from its largest |x| as an integer (the bits of non-negative floats order as
// the floats do, with Inf and NaN above every finite value): NaN if that is not finite.
GDFAST_HD float absmax_of_bits(std::uint32_t largest) {
  return largest >= 0x7F800000u ? rounding::float_of(0x7FC00000u) : rounding::float_of(largest);
}

// What a block's absmax scales by when encoding: 1 / absmax, kept finite (a subnormal absmax
// would give Inf, and 0 * Inf a NaN), and 0 for an all-zero block.
GDFAST_HD float inverse_scale(float absmax) {
  if (!(absmax > 0.0f)) return 0.0f;
  const float inverse = 1.0f / absmax;
  return inverse < FLT_MAX ? inverse : FLT_MAX;
}

// The decade of y >= kFloor: the number of decades whose lower end lies above it (B: below
// the map). The CPU reads it from DecadeTables, CUDA counts it.
GDFAST_HD int decade(float y, int bits) {
#if defined(__CUDA_ARCH__)
  int z = 0;
  for (int k = 0; k < bits; ++k) z += y < ten_to(k + 1) ? 1 : 0;
  return z;
#else
  const DecadeTables& d = bits == 7 ? kDecadeSigned : kDecadeUnsigned;
  const int index = static_cast<int>((rounding::bits_of(y) >> 23) & 31u);
  return d.above[index] + (y < d.inside[index] ? 1 : 0);
#endif
}

// The code of x in a block whose absmax scales by `inverse` (inverse_scale), with its map's
// encoding constants per decade (EncodeTables' slope and offset: 0 at z = B). A negative x
// takes the unsigned map's code 0, and -0 (or a tiny negative x) the signed map's 0x80.
GDFAST_HD std::uint8_t encode_with(float x, float inverse, bool is_signed, const float* slope,
                                   const float* offset) {
  const int bits = magnitude_bits(is_signed);
  const std::uint32_t sign = rounding::bits_of(x) >> 31;
  float y = (is_signed ? rounding::float_of(rounding::bits_of(x) & 0x7FFFFFFFu) : x) * inverse;
  y = y > kFloor ? y : kFloor;  // (as maxps: a NaN y becomes kFloor)
  const int z = decade(y, bits);
  float code = y * slope[z] + offset[z];
  const float top = is_signed ? 127.0f : 255.0f;
  code = code < top ? code : top;
  const auto magnitude = static_cast<std::uint32_t>(code);  // truncation (code >= 0)
  return static_cast<std::uint8_t>(is_signed ? magnitude | sign << 7 : magnitude);
}

// The value of code c in a block of absmax `absmax`, with its map's decoding constants per p
// (DecodeTables' slope and offset). Bit 7 of a signed code negates, also 0.
GDFAST_HD float decode_with(std::uint8_t c, float absmax, bool is_signed, const float* slope,
                            const float* offset) {
  const std::uint32_t magnitude = is_signed ? c & 0x7Fu : c;
  float value = 0.0f * absmax;  // (code 0; a NaN absmax marks a block that was not finite)
  if (magnitude != 0) {
    const float m = static_cast<float>(magnitude);
    const int p = static_cast<int>(rounding::bits_of(m) >> 23) - 127;
    value = m * (slope[p] * absmax) + offset[p] * absmax;
  }
  return is_signed && (c & 0x80u) != 0 ? -value : value;
}

// The same with the tables above (the CPU; CUDA fills its own from the same functions).
inline std::uint8_t encode(float x, float inverse, bool is_signed) {
  const EncodeTables& e = is_signed ? kEncodeSigned : kEncodeUnsigned;
  return encode_with(x, inverse, is_signed, e.slope, e.offset);
}
inline float decode(std::uint8_t c, float absmax, bool is_signed) {
  const DecodeTables& t = is_signed ? kDecodeSigned : kDecodeUnsigned;
  return decode_with(c, absmax, is_signed, t.slope, t.offset);
}

}  // namespace gdfast::quant8
