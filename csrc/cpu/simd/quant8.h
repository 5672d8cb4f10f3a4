// Blocks of 8-bit states to and from float32 (core/quant8.h), the conversions the loop for
// quantized states uses (kernels/quantized.h). Each instruction set supplies a Quant8; this
// portable one goes element by element through the scalar definition, which the vectorized
// ones match bit for bit.
//   absmax(x, n)                       the block's absolute maximum; NaN if some x is not finite
//   decode<kSigned>(codes, absmax, out, n)
//   encode<kSigned>(x, absmax, codes, n)
#pragma once

#include <cstdint>

#include "core/config.h"
#include "core/quant8.h"
#include "core/rounding.h"

namespace gdfast::simd {

// A block's absmax from the largest |x| as an integer (the bits of non-negative floats order
// as the floats do, with Inf and NaN above every finite value): NaN if that is not finite.
GDFAST_INLINE float absmax_from_bits(std::uint32_t largest) {
  return largest >= 0x7F800000u ? rounding::float_of(0x7FC00000u) : rounding::float_of(largest);
}

struct Quant8Generic {
  static float absmax(const float* x, index_t n) {
    std::uint32_t largest = 0;
    for (index_t i = 0; i < n; ++i) {
      const std::uint32_t b = rounding::bits_of(x[i]) & 0x7FFFFFFFu;
      largest = b > largest ? b : largest;
    }
    return absmax_from_bits(largest);
  }
  template <bool kSigned>
  static void decode(const std::uint8_t* codes, float absmax, float* out, index_t n) {
    for (index_t i = 0; i < n; ++i) out[i] = quant8::decode(codes[i], absmax, kSigned);
  }
  template <bool kSigned>
  static void encode(const float* x, float absmax, std::uint8_t* codes, index_t n) {
    const float inverse = quant8::inverse_scale(absmax);
    for (index_t i = 0; i < n; ++i) codes[i] = quant8::encode(x[i], inverse, kSigned);
  }
};

}  // namespace gdfast::simd
