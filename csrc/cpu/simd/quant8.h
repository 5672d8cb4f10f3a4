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

// The decoding constants (per p = floor(log2 code), 0..7) in the order a permute of kLanes
// entries indexed by the biased exponent of float(code) reads them: (127 + p) mod kLanes (no
// subtraction in the loop).
template <int kLanes>
struct DecodeByExponent {
  alignas(4 * kLanes) float slope[kLanes];
  alignas(4 * kLanes) float offset[kLanes];
};
template <int kLanes>
constexpr DecodeByExponent<kLanes> decode_by_exponent(const quant8::DecodeTables& t) {
  DecodeByExponent<kLanes> out{};
  for (int p = 0; p < 8; ++p) {
    out.slope[(127 + p) % kLanes] = t.slope[p];
    out.offset[(127 + p) % kLanes] = t.offset[p];
  }
  return out;
}

struct Quant8Generic {
  static float absmax(const float* x, index_t n) {
    std::uint32_t largest = 0;
    for (index_t i = 0; i < n; ++i) {
      const std::uint32_t b = rounding::bits_of(x[i]) & 0x7FFFFFFFu;
      largest = b > largest ? b : largest;
    }
    return quant8::absmax_of_bits(largest);
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
