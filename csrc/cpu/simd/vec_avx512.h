// x86-64-v4: AVX-512 F/BW/DQ/VL, 16 floats / 8 doubles per lane; tails use masked
// loads and stores (no buffer copy).
#pragma once

#include <cstdint>

#include "core/dtype.h"
#include "cpu/simd/narrow.h"
#include "cpu/simd/quant8_avx512.h"
#include "cpu/simd/vec_x86.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

#define GDFAST_AVX512_OPS(Name, T, N, S, M)                                                      \
  struct Name {                                                                                  \
    GDFAST_X86_COMMON_OPS(T, N, 64 / sizeof(T), _mm512, S)                                       \
    using Mask = M;                                                                              \
    static M gt(N a, N b) { return _mm512_cmp_##S##_mask(a, b, _CMP_GT_OQ); }                    \
    static M lt(N a, N b) { return _mm512_cmp_##S##_mask(a, b, _CMP_LT_OQ); }                    \
    static M unordered(N a, N b) { return _mm512_cmp_##S##_mask(a, b, _CMP_UNORD_Q); }           \
    static N select(M m, N a, N b) { return _mm512_mask_blend_##S(m, b, a); }                    \
    static M first(index_t n) { return static_cast<M>((1u << n) - 1u); }                         \
    static N load_partial(const T* p, index_t n) { return _mm512_maskz_loadu_##S(first(n), p); } \
    static void store_partial(T* p, index_t n, N x) { _mm512_mask_storeu_##S(p, first(n), x); }  \
    static N sign(N a) {                                                                         \
      const M nonzero = _mm512_cmp_##S##_mask(a, _mm512_setzero_##S(), _CMP_NEQ_OQ);             \
      return _mm512_mask_blend_##S(nonzero, a, copysign_one(a));                                 \
    }                                                                                            \
  };
GDFAST_AVX512_OPS(OpsF32, float, __m512, ps, __mmask16)
GDFAST_AVX512_OPS(OpsF64, double, __m512d, pd, __mmask8)
#undef GDFAST_AVX512_OPS

template <class T>
using Lane = simd::Vec<std::conditional_t<sizeof(T) == 4, OpsF32, OpsF64>>;

// bfloat16 by integer arithmetic (vcvtneps2bf16 would flush subnormals), float16 by the F16C
// conversions (exact, round to nearest even); float16 stochastic rounding element by element.
struct Narrow16 {
  using L = Lane<float>;
  static constexpr int kLanes = 16;
  using Generic = simd::NarrowGeneric<L>;
  using Random = __m512i;
  GDFAST_INLINE static __mmask16 first(index_t n) { return static_cast<__mmask16>((1u << n) - 1u); }
  GDFAST_INLINE static L widen(Dtype type, __m256i h) {
    if (type == Dtype::kBfloat16) {
      return L::wrap(_mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16)));
    }
    return L::wrap(_mm512_cvtph_ps(h));
  }
  // rounding::narrow_f16<true>, a lane at a time (the result in the low 16 bits of each element).
  GDFAST_INLINE static __m512i f16_stochastic(__m512 x, __m512i random16) {
    const __m512i b = _mm512_castps_si512(x);
    const __m512i a = _mm512_and_si512(b, _mm512_set1_epi32(0x7FFFFFFF));
    const __m512i sign = _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(0x8000));
    const __m512i normal =
        _mm512_srli_epi32(_mm512_add_epi32(_mm512_sub_epi32(a, _mm512_set1_epi32(0x38000000)),
                                           _mm512_srli_epi32(random16, 3)),
                          13);
    const __m512i shift = _mm512_sub_epi32(
        _mm512_set1_epi32(126), _mm512_min_epu32(_mm512_srli_epi32(a, 23), _mm512_set1_epi32(126)));
    const __m512i cut =
        _mm512_max_epu32(_mm512_min_epu32(shift, _mm512_set1_epi32(31)), _mm512_set1_epi32(14));
    const __m512i significand = _mm512_or_si512(_mm512_and_si512(a, _mm512_set1_epi32(0x7FFFFF)),
                                                _mm512_set1_epi32(0x800000));
    const __m512i sub_add = _mm512_srlv_epi32(_mm512_slli_epi32(random16, 16),
                                              _mm512_sub_epi32(_mm512_set1_epi32(32), cut));
    __m512i m = _mm512_maskz_srlv_epi32(_mm512_cmple_epu32_mask(shift, _mm512_set1_epi32(31)),
                                        _mm512_add_epi32(significand, sub_add), cut);
    m = _mm512_mask_blend_epi32(_mm512_cmpge_epu32_mask(a, _mm512_set1_epi32(0x38800000)), m,
                                normal);
    m = _mm512_mask_blend_epi32(_mm512_cmpge_epu32_mask(a, _mm512_set1_epi32(0x47800000)), m,
                                _mm512_set1_epi32(0x7C00));
    const __m512i nan =
        _mm512_or_si512(_mm512_set1_epi32(0x7E00),
                        _mm512_and_si512(_mm512_srli_epi32(a, 13), _mm512_set1_epi32(0x1FF)));
    m = _mm512_mask_blend_epi32(_mm512_cmpgt_epu32_mask(a, _mm512_set1_epi32(0x7F800000)), m, nan);
    return _mm512_or_si512(m, sign);
  }
  GDFAST_INLINE static L load(Dtype type, const std::uint16_t* p, index_t n = kLanes) {
    return widen(type, n == kLanes ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p))
                                   : _mm256_maskz_loadu_epi16(first(n), p));
  }
  GDFAST_INLINE static Random random(std::uint32_t key, index_t index) {
    const Random counter =
        _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(index))),
                         _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15));
    Random x = _mm512_xor_si512(counter, _mm512_set1_epi32(static_cast<int>(key)));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(0x7FEB352D));
    x = _mm512_xor_si512(x, _mm512_srli_epi32(x, 15));
    x = _mm512_mullo_epi32(x, _mm512_set1_epi32(static_cast<int>(0x846CA68Bu)));
    return _mm512_xor_si512(x, _mm512_srli_epi32(x, 16));
  }
  GDFAST_INLINE static Random random16(Random bits, unsigned role) {
    return (role & 1u) == 0 ? _mm512_srli_epi32(bits, 16)
                            : _mm512_and_si512(bits, _mm512_set1_epi32(0xFFFF));
  }
  GDFAST_INLINE static void store(Dtype type, std::uint16_t* p, L x, const Random* random16,
                                  index_t n = kLanes) {
    __m256i h;
    if (type == Dtype::kBfloat16) {
      const Random b = _mm512_castps_si512(x.v);
      const Random add =
          random16 != nullptr
              ? *random16
              : _mm512_add_epi32(_mm512_set1_epi32(0x7FFF),
                                 _mm512_and_si512(_mm512_srli_epi32(b, 16), _mm512_set1_epi32(1)));
      const Random rounded = _mm512_srli_epi32(_mm512_add_epi32(b, add), 16);
      const __mmask16 nan = _mm512_cmp_ps_mask(x.v, x.v, _CMP_UNORD_Q);
      h = _mm512_cvtepi32_epi16(_mm512_mask_blend_epi32(nan, rounded, _mm512_set1_epi32(0x7FC0)));
    } else if (random16 == nullptr) {
      h = _mm512_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      h = _mm512_cvtepi32_epi16(f16_stochastic(x.v, *random16));
    }
    if (n == kLanes) {
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(p), h);
    } else {
      _mm256_mask_storeu_epi16(p, first(n), h);
    }
  }
};

// Whether the common storage combinations get loops of their own (kernels/storage.h).
inline constexpr bool kVectorLanes = true;

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
