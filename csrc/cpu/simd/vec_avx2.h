// x86-64-v3: AVX2 + FMA, 8 floats / 4 doubles per lane. (FMA is not used by the rules:
// contraction would make results differ from the other levels.)
#pragma once

#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "cpu/simd/narrow.h"
#include "cpu/simd/quant8_avx2.h"
#include "cpu/simd/vec_x86.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

#define GDFAST_AVX2_OPS(Name, T, N, S)                                          \
  struct Name : simd::BufferedPartial<Name> {                                   \
    GDFAST_X86_COMMON_OPS(T, N, 32 / sizeof(T), _mm256, S)                      \
    using Mask = N;                                                             \
    static N gt(N a, N b) { return _mm256_cmp_##S(a, b, _CMP_GT_OQ); }          \
    static N lt(N a, N b) { return _mm256_cmp_##S(a, b, _CMP_LT_OQ); }          \
    static N unordered(N a, N b) { return _mm256_cmp_##S(a, b, _CMP_UNORD_Q); } \
    static N select(N m, N a, N b) { return _mm256_blendv_##S(b, a, m); }       \
    static N sign(N a) {                                                        \
      const N nonzero = _mm256_cmp_##S(a, _mm256_setzero_##S(), _CMP_NEQ_OQ);   \
      return _mm256_blendv_##S(a, copysign_one(a), nonzero);                    \
    }                                                                           \
  };
GDFAST_AVX2_OPS(OpsF32, float, __m256, ps)
GDFAST_AVX2_OPS(OpsF64, double, __m256d, pd)
#undef GDFAST_AVX2_OPS

template <class T>
using Lane = simd::Vec<std::conditional_t<sizeof(T) == 4, OpsF32, OpsF64>>;

// bfloat16 by integer arithmetic, float16 by the F16C conversions (exact, round to nearest
// even); float16 stochastic rounding element by element.
struct Narrow16 {
  using L = Lane<float>;
  static constexpr int kLanes = 8;
  using Generic = simd::NarrowGeneric<L>;
  using Random = __m256i;

  GDFAST_INLINE static L widen(Dtype type, __m128i h) {
    if (type == Dtype::kBfloat16) {
      return L::wrap(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    }
    return L::wrap(_mm256_cvtph_ps(h));
  }
  // 16-bit values (in 32-bit elements) to 16-bit elements: pack within 128-bit halves, then
  // gather the two low quarters.
  GDFAST_INLINE static __m128i pack(__m256i values) {
    const __m256i packed = _mm256_packus_epi32(values, values);
    return _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
  }
  // rounding::narrow_f16<true>, a lane at a time (the result in the low 16 bits of each element;
  // every value compared is below 2^31, so signed comparisons serve).
  GDFAST_INLINE static __m256i f16_stochastic(__m256 x, __m256i random16) {
    const __m256i b = _mm256_castps_si256(x);
    const __m256i a = _mm256_and_si256(b, _mm256_set1_epi32(0x7FFFFFFF));
    const __m256i sign = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(0x8000));
    const __m256i normal =
        _mm256_srli_epi32(_mm256_add_epi32(_mm256_sub_epi32(a, _mm256_set1_epi32(0x38000000)),
                                           _mm256_srli_epi32(random16, 3)),
                          13);
    const __m256i shift = _mm256_sub_epi32(
        _mm256_set1_epi32(126), _mm256_min_epi32(_mm256_srli_epi32(a, 23), _mm256_set1_epi32(126)));
    const __m256i cut =
        _mm256_max_epi32(_mm256_min_epi32(shift, _mm256_set1_epi32(31)), _mm256_set1_epi32(14));
    const __m256i significand = _mm256_or_si256(_mm256_and_si256(a, _mm256_set1_epi32(0x7FFFFF)),
                                                _mm256_set1_epi32(0x800000));
    const __m256i sub_add = _mm256_srlv_epi32(_mm256_slli_epi32(random16, 16),
                                              _mm256_sub_epi32(_mm256_set1_epi32(32), cut));
    __m256i m = _mm256_andnot_si256(_mm256_cmpgt_epi32(shift, _mm256_set1_epi32(31)),
                                    _mm256_srlv_epi32(_mm256_add_epi32(significand, sub_add), cut));
    m = _mm256_blendv_epi8(m, normal, _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x387FFFFF)));
    m = _mm256_blendv_epi8(m, _mm256_set1_epi32(0x7C00),
                           _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x477FFFFF)));
    const __m256i nan =
        _mm256_or_si256(_mm256_set1_epi32(0x7E00),
                        _mm256_and_si256(_mm256_srli_epi32(a, 13), _mm256_set1_epi32(0x1FF)));
    m = _mm256_blendv_epi8(m, nan, _mm256_cmpgt_epi32(a, _mm256_set1_epi32(0x7F800000)));
    return _mm256_or_si256(m, sign);
  }
  GDFAST_INLINE static L load(Dtype type, const std::uint16_t* p, index_t n = kLanes) {
    if (n != kLanes) return Generic::load(type, p, n);
    return widen(type, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  GDFAST_INLINE static Random random(std::uint32_t key, index_t index) {
    const Random counter =
        _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(index))),
                         _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    Random x = _mm256_xor_si256(counter, _mm256_set1_epi32(static_cast<int>(key)));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7FEB352D));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x846CA68Bu)));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  }
  GDFAST_INLINE static Random random16(Random bits, unsigned role) {
    return (role & 1u) == 0 ? _mm256_srli_epi32(bits, 16)
                            : _mm256_and_si256(bits, _mm256_set1_epi32(0xFFFF));
  }
  GDFAST_INLINE static void store(Dtype type, std::uint16_t* p, L x, const Random* random16,
                                  index_t n = kLanes) {
    __m128i h;
    if (type == Dtype::kBfloat16) {
      const Random b = _mm256_castps_si256(x.v);
      const Random add =
          random16 != nullptr
              ? *random16
              : _mm256_add_epi32(_mm256_set1_epi32(0x7FFF),
                                 _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1)));
      const Random rounded = _mm256_srli_epi32(_mm256_add_epi32(b, add), 16);
      const __m256i nan = _mm256_castps_si256(_mm256_cmp_ps(x.v, x.v, _CMP_UNORD_Q));
      h = pack(_mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), nan));
    } else if (random16 == nullptr) {
      h = _mm256_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {
      h = pack(f16_stochastic(x.v, *random16));
    }
    if (n == kLanes) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(p), h);
    } else {
      alignas(16) std::uint16_t buf[kLanes];
      _mm_store_si128(reinterpret_cast<__m128i*>(buf), h);
      std::memcpy(p, buf, static_cast<std::size_t>(n) * sizeof(std::uint16_t));
    }
  }
};

// Whether the common storage combinations get loops of their own (kernels/storage.h).
inline constexpr bool kVectorLanes = true;

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
