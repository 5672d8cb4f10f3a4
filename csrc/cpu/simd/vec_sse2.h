// x86-64 baseline: SSE2, 4 floats / 2 doubles per lane.
#pragma once

#include "cpu/simd/narrow.h"
#include "cpu/simd/quant8.h"
#include "cpu/simd/vec_x86.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

#define GDFAST_SSE2_OPS(Name, T, N, S)                                                             \
  struct Name : simd::BufferedPartial<Name> {                                                      \
    GDFAST_X86_COMMON_OPS(T, N, 16 / sizeof(T), _mm, S)                                            \
    using Mask = N;                                                                                \
    static N gt(N a, N b) { return _mm_cmpgt_##S(a, b); }                                          \
    static N lt(N a, N b) { return _mm_cmplt_##S(a, b); }                                          \
    static N unordered(N a, N b) { return _mm_cmpunord_##S(a, b); }                                \
    static N select(N m, N a, N b) { return _mm_or_##S(_mm_and_##S(m, a), _mm_andnot_##S(m, b)); } \
    static N sign(N a) {                                                                           \
      const N zero = _mm_setzero_##S();                                                            \
      const N nonzero = _mm_or_##S(_mm_cmpgt_##S(a, zero), _mm_cmplt_##S(a, zero));                \
      return _mm_or_##S(_mm_and_##S(nonzero, copysign_one(a)), _mm_andnot_##S(nonzero, a));        \
    }                                                                                              \
  };
GDFAST_SSE2_OPS(OpsF32, float, __m128, ps)
GDFAST_SSE2_OPS(OpsF64, double, __m128d, pd)
#undef GDFAST_SSE2_OPS

template <class T>
using Lane = simd::Vec<std::conditional_t<sizeof(T) == 4, OpsF32, OpsF64>>;

using Narrow16 = simd::NarrowGeneric<Lane<float>>;
using Quant8 = simd::Quant8Generic;

// Whether the common storage combinations get loops of their own (kernels/storage.h).
inline constexpr bool kVectorLanes = false;

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
