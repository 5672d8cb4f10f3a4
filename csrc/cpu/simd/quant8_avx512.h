// Quant8 (cpu/simd/quant8.h) for AVX-512: 16 elements at a time, the per-decade constants of
// core/quant8.h looked up with in-register permutes (vpermps), the tail through masks.
// Included only by vec_avx512.h.
#pragma once

#include <immintrin.h>

#include <cstdint>

#include "core/config.h"
#include "core/quant8.h"
#include "cpu/simd/quant8.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

struct Quant8 {
  GDFAST_INLINE static __mmask16 first(index_t n) {
    return n >= 16 ? static_cast<__mmask16>(0xFFFF) : static_cast<__mmask16>((1u << n) - 1u);
  }
  using Decode = simd::DecodeByExponent<16>;
  static constexpr Decode kSignedDecode = simd::decode_by_exponent<16>(quant8::kDecodeSigned);
  static constexpr Decode kUnsignedDecode = simd::decode_by_exponent<16>(quant8::kDecodeUnsigned);

  static float absmax(const float* x, index_t n) {
    __m512i largest = _mm512_setzero_si512();
    const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF);
    for (index_t i = 0; i < n; i += 16) {
      const __m512i b = _mm512_maskz_loadu_epi32(first(n - i), x + i);
      largest = _mm512_max_epu32(largest, _mm512_and_si512(b, magnitude));
    }
    return quant8::absmax_of_bits(static_cast<std::uint32_t>(_mm512_reduce_max_epu32(largest)));
  }

  template <bool kSigned>
  static void decode(const std::uint8_t* codes, float absmax, float* out, index_t n) {
    const Decode& t = kSigned ? kSignedDecode : kUnsignedDecode;
    const __m512 scale = _mm512_set1_ps(absmax);
    const __m512 slope = _mm512_mul_ps(_mm512_load_ps(t.slope), scale);
    const __m512 offset = _mm512_mul_ps(_mm512_load_ps(t.offset), scale);
    const __m512 zero = _mm512_set1_ps(0.0f * absmax);
    // (whole vectors unmasked: masked byte loads and stores cost several times more)
    const auto lane = [&](__m128i bytes) {
      const __m512i c = _mm512_cvtepu8_epi32(bytes);
      const __m512i magnitude = kSigned ? _mm512_and_si512(c, _mm512_set1_epi32(0x7F)) : c;
      const __m512 m = _mm512_cvtepi32_ps(magnitude);
      const __m512i exponent = _mm512_srli_epi32(_mm512_castps_si512(m), 23);
      __m512 value = _mm512_mask_add_ps(zero, _mm512_test_epi32_mask(magnitude, magnitude),
                                        _mm512_mul_ps(m, _mm512_permutexvar_ps(exponent, slope)),
                                        _mm512_permutexvar_ps(exponent, offset));
      if (kSigned) {  // (bit 7 of the code to bit 31 of the float)
        const __m512i sign = _mm512_and_si512(_mm512_slli_epi32(c, 24),
                                              _mm512_set1_epi32(static_cast<int>(0x80000000u)));
        value = _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(value), sign));
      }
      return value;
    };
    index_t i = 0;
    for (; i + 16 <= n; i += 16) {
      _mm512_storeu_ps(out + i, lane(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + i))));
    }
    if (i < n) {
      const __mmask16 mask = first(n - i);
      _mm512_mask_storeu_ps(out + i, mask, lane(_mm_maskz_loadu_epi8(mask, codes + i)));
    }
  }

  template <bool kSigned>
  static void encode(const float* x, float absmax, std::uint8_t* codes, index_t n) {
    const quant8::DecadeTables& d = kSigned ? quant8::kDecadeSigned : quant8::kDecadeUnsigned;
    const quant8::EncodeTables& e = kSigned ? quant8::kEncodeSigned : quant8::kEncodeUnsigned;
    const __m512i above_low = _mm512_loadu_si512(d.above);
    const __m512i above_high = _mm512_loadu_si512(d.above + 16);
    const __m512 inside_low = _mm512_loadu_ps(d.inside);
    const __m512 inside_high = _mm512_loadu_ps(d.inside + 16);
    const __m512 slope = _mm512_loadu_ps(e.slope);
    const __m512 offset = _mm512_loadu_ps(e.offset);
    const __m512 inverse = _mm512_set1_ps(quant8::inverse_scale(absmax));
    const __m512 floor = _mm512_set1_ps(quant8::kFloor);
    const __m512 top = _mm512_set1_ps(kSigned ? 127.0f : 255.0f);
    const __m512i one = _mm512_set1_epi32(1);
    const auto lane = [&](__m512 v) {
      const __m512 magnitude = kSigned ? _mm512_abs_ps(v) : v;
      const __m512 y = _mm512_max_ps(_mm512_mul_ps(magnitude, inverse), floor);
      const __m512i index = _mm512_srli_epi32(_mm512_castps_si512(y), 23);
      const __m512i above = _mm512_permutex2var_epi32(above_low, index, above_high);
      const __m512 inside = _mm512_permutex2var_ps(inside_low, index, inside_high);
      const __m512i z =
          _mm512_mask_add_epi32(above, _mm512_cmp_ps_mask(y, inside, _CMP_LT_OQ), above, one);
      const __m512 code =
          _mm512_min_ps(_mm512_add_ps(_mm512_mul_ps(y, _mm512_permutexvar_ps(z, slope)),
                                      _mm512_permutexvar_ps(z, offset)),
                        top);
      __m512i bits = _mm512_cvttps_epi32(code);
      if (kSigned) {
        bits = _mm512_mask_or_epi32(bits, _mm512_movepi32_mask(_mm512_castps_si512(v)), bits,
                                    _mm512_set1_epi32(0x80));
      }
      return _mm512_cvtepi32_epi8(bits);
    };
    index_t i = 0;
    for (; i + 16 <= n; i += 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(codes + i), lane(_mm512_loadu_ps(x + i)));
    }
    if (i < n) {
      const __mmask16 mask = first(n - i);
      _mm_mask_storeu_epi8(codes + i, mask, lane(_mm512_maskz_loadu_ps(mask, x + i)));
    }
  }
};

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
