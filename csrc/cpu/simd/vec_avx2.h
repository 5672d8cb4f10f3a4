// x86-64-v3: AVX2 + FMA, 8 floats / 4 doubles per lane. (FMA is not used by the rules:
// contraction would make results differ from the other levels.)
#pragma once

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

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
