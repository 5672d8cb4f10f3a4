// x86-64-v3: AVX2 + FMA, 8 floats / 4 doubles per lane. (FMA is not used by the rules:
// contraction would make results differ from the other levels.)
#pragma once

#include <cstdint>
#include <cstring>

#include "core/dtype.h"
#include "cpu/simd/narrow.h"
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

  static L widen(Dtype type, __m128i h) {
    if (type == Dtype::kBfloat16) {
      return L::wrap(_mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16)));
    }
    return L::wrap(_mm256_cvtph_ps(h));
  }
  static L load(Dtype type, const std::uint16_t* p, index_t n = kLanes) {
    if (n != kLanes) return Generic::load(type, p, n);
    return widen(type, _mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  }
  static Random random(std::uint32_t key, index_t index) {
    const Random counter = _mm256_add_epi32(
        _mm256_set1_epi32(static_cast<int>(static_cast<std::uint32_t>(index))),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    Random x = _mm256_xor_si256(counter, _mm256_set1_epi32(static_cast<int>(key)));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(0x7FEB352D));
    x = _mm256_xor_si256(x, _mm256_srli_epi32(x, 15));
    x = _mm256_mullo_epi32(x, _mm256_set1_epi32(static_cast<int>(0x846CA68Bu)));
    return _mm256_xor_si256(x, _mm256_srli_epi32(x, 16));
  }
  static Random random16(Random bits, unsigned role) {
    return (role & 1u) == 0 ? _mm256_srli_epi32(bits, 16)
                            : _mm256_and_si256(bits, _mm256_set1_epi32(0xFFFF));
  }
  static void store(Dtype type, std::uint16_t* p, L x, const Random* random16,
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
      const __m256i kept = _mm256_blendv_epi8(rounded, _mm256_set1_epi32(0x7FC0), nan);
      // Values fit 16 bits: pack within 128-bit halves, then gather the two low quarters.
      const __m256i packed = _mm256_packus_epi32(kept, kept);
      h = _mm256_castsi256_si128(_mm256_permute4x64_epi64(packed, 0x08));
    } else if (random16 == nullptr) {
      h = _mm256_cvtps_ph(x.v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    } else {  // float16, stochastically: element by element
      alignas(64) std::uint32_t bits[kLanes];
      _mm256_store_si256(reinterpret_cast<Random*>(bits), *random16);
      Generic::store_bits(type, p, x, bits, n);
      return;
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
