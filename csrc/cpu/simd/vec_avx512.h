// x86-64-v4: AVX-512 F/BW/DQ/VL, 16 floats / 8 doubles per lane; tails use masked
// loads and stores (no buffer copy).
#pragma once

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

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
