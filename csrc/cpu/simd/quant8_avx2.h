// Quant8 (cpu/simd/quant8.h) for AVX2: 8 elements at a time; the per-p and per-decade
// constants of core/quant8.h by in-register permutes (vpermps, 8 entries); the decade by
// comparing with each decade's lower end (the count the decade tables hold, without their
// 32-entry lookups: gathers here cost 5x more); the tail through a zero-padded buffer.
// Included only by vec_avx2.h.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "core/config.h"
#include "core/quant8.h"
#include "cpu/simd/quant8.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

struct Quant8 {
  using Decode = simd::DecodeByExponent<8>;
  static constexpr Decode kSignedDecode = simd::decode_by_exponent<8>(quant8::kDecodeSigned);
  static constexpr Decode kUnsignedDecode = simd::decode_by_exponent<8>(quant8::kDecodeUnsigned);

  static float absmax(const float* x, index_t n) {
    __m256i largest = _mm256_setzero_si256();
    const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF);
    index_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const __m256i b = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(x + i));
      largest = _mm256_max_epu32(largest, _mm256_and_si256(b, magnitude));
    }
    alignas(32) std::uint32_t lanes[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(lanes), largest);
    std::uint32_t top = 0;
    for (const std::uint32_t b : lanes) top = b > top ? b : top;
    const float rest = simd::Quant8Generic::absmax(x + i, n - i);  // (the tail; NaN if bad)
    const std::uint32_t rest_bits = rounding::bits_of(rest) & 0x7FFFFFFFu;
    return quant8::absmax_of_bits(rest_bits > top ? rest_bits : top);
  }

  template <bool kSigned>
  static void decode(const std::uint8_t* codes, float absmax, float* out, index_t n) {
    const Decode& t = kSigned ? kSignedDecode : kUnsignedDecode;
    const __m256 scale = _mm256_set1_ps(absmax);
    const __m256 slope = _mm256_mul_ps(_mm256_load_ps(t.slope), scale);
    const __m256 offset = _mm256_mul_ps(_mm256_load_ps(t.offset), scale);
    const __m256 zero = _mm256_set1_ps(0.0f * absmax);
    const auto lane = [&](const std::uint8_t* at) {
      std::int64_t eight;
      std::memcpy(&eight, at, sizeof eight);
      const __m256i c = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(eight));
      const __m256i magnitude = kSigned ? _mm256_and_si256(c, _mm256_set1_epi32(0x7F)) : c;
      const __m256 m = _mm256_cvtepi32_ps(magnitude);
      const __m256i exponent = _mm256_srli_epi32(_mm256_castps_si256(m), 23);
      __m256 value = _mm256_add_ps(_mm256_mul_ps(m, _mm256_permutevar8x32_ps(slope, exponent)),
                                   _mm256_permutevar8x32_ps(offset, exponent));
      const __m256 is_zero =
          _mm256_castsi256_ps(_mm256_cmpeq_epi32(magnitude, _mm256_setzero_si256()));
      value = _mm256_blendv_ps(value, zero, is_zero);
      if (kSigned) {  // (bit 7 of the code to bit 31 of the float)
        const __m256i sign = _mm256_and_si256(_mm256_slli_epi32(c, 24),
                                              _mm256_set1_epi32(static_cast<int>(0x80000000u)));
        value = _mm256_castsi256_ps(_mm256_xor_si256(_mm256_castps_si256(value), sign));
      }
      return value;
    };
    index_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(out + i, lane(codes + i));
    if (i < n) {
      std::uint8_t in[8] = {};
      alignas(32) float values[8];
      std::memcpy(in, codes + i, static_cast<std::size_t>(n - i));
      _mm256_store_ps(values, lane(in));
      std::memcpy(out + i, values, static_cast<std::size_t>(n - i) * sizeof(float));
    }
  }

  template <bool kSigned>
  static void encode(const float* x, float absmax, std::uint8_t* codes, index_t n) {
    const quant8::EncodeTables& e = kSigned ? quant8::kEncodeSigned : quant8::kEncodeUnsigned;
    constexpr int kBits = quant8::magnitude_bits(kSigned);
    // (z = kBits, below the map, only where y < 10^-kBits: there the code is 0 anyway)
    const __m256 slope = _mm256_loadu_ps(e.slope);
    const __m256 offset = _mm256_loadu_ps(e.offset);
    const __m256 inverse = _mm256_set1_ps(quant8::inverse_scale(absmax));
    const __m256 floor = _mm256_set1_ps(quant8::kFloor);
    const __m256 lowest = _mm256_set1_ps(quant8::ten_to(kBits));
    const __m256 top = _mm256_set1_ps(kSigned ? 127.0f : 255.0f);
    const __m256i last = _mm256_set1_epi32(7);
    const auto lane = [&](__m256 v) {
      const __m256 magnitude =
          kSigned ? _mm256_and_ps(v, _mm256_castsi256_ps(_mm256_set1_epi32(0x7FFFFFFF))) : v;
      const __m256 y = _mm256_max_ps(_mm256_mul_ps(magnitude, inverse), floor);
      // z = the number of decades whose lower end 10^-(k+1) lies above y (a true compare is -1)
      __m256i z = _mm256_setzero_si256();
      for (int k = 0; k < kBits; ++k) {
        z = _mm256_sub_epi32(z, _mm256_castps_si256(_mm256_cmp_ps(
                                    y, _mm256_set1_ps(quant8::ten_to(k + 1)), _CMP_LT_OQ)));
      }
      z = _mm256_min_epi32(z, last);
      const __m256 code =
          _mm256_min_ps(_mm256_add_ps(_mm256_mul_ps(y, _mm256_permutevar8x32_ps(slope, z)),
                                      _mm256_permutevar8x32_ps(offset, z)),
                        top);
      __m256i bits = _mm256_andnot_si256(_mm256_castps_si256(_mm256_cmp_ps(y, lowest, _CMP_LT_OQ)),
                                         _mm256_cvttps_epi32(code));
      if (kSigned) {
        bits = _mm256_or_si256(bits, _mm256_and_si256(_mm256_srai_epi32(_mm256_castps_si256(v), 31),
                                                      _mm256_set1_epi32(0x80)));
      }
      // 8 int32 to 8 bytes: pack to 16 bits, then to 8 (in-lane packs, so halves interleave)
      const __m128i words =
          _mm_packus_epi32(_mm256_castsi256_si128(bits), _mm256_extracti128_si256(bits, 1));
      return _mm_cvtsi128_si64(_mm_packus_epi16(words, words));
    };
    index_t i = 0;
    for (; i + 8 <= n; i += 8) {
      const std::int64_t eight = lane(_mm256_loadu_ps(x + i));
      std::memcpy(codes + i, &eight, sizeof eight);
    }
    if (i < n) {
      alignas(32) float in[8] = {};
      std::memcpy(in, x + i, static_cast<std::size_t>(n - i) * sizeof(float));
      const std::int64_t eight = lane(_mm256_load_ps(in));
      std::memcpy(codes + i, &eight, static_cast<std::size_t>(n - i));
    }
  }
};

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
