// aarch64: NEON (Advanced SIMD), 4 floats / 2 doubles per lane.
#pragma once

#include <arm_neon.h>

#include "cpu/simd/narrow.h"
#include "cpu/simd/quant8.h"
#include "cpu/simd/vec.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

#define GDFAST_NEON_OPS(Name, T, N, U, S, US)                                             \
  struct Name : simd::BufferedPartial<Name> {                                             \
    using Scalar = T;                                                                     \
    using Native = N;                                                                     \
    using Mask = U;                                                                       \
    static constexpr int kLanes = 16 / sizeof(T);                                         \
    static N set1(T x) { return vdupq_n_##S(x); }                                         \
    static N loadu(const T* p) { return vld1q_##S(p); }                                   \
    static void storeu(T* p, N x) { vst1q_##S(p, x); }                                    \
    static N add(N a, N b) { return vaddq_##S(a, b); }                                    \
    static N sub(N a, N b) { return vsubq_##S(a, b); }                                    \
    static N mul(N a, N b) { return vmulq_##S(a, b); }                                    \
    static N div(N a, N b) { return vdivq_##S(a, b); }                                    \
    static N sqrt(N a) { return vsqrtq_##S(a); }                                          \
    static N neg(N a) { return vnegq_##S(a); }                                            \
    /* a > b ? a : b like optim::lane_max (vmaxq would differ on NaN) */                  \
    static N max(N a, N b) { return vbslq_##S(vcgtq_##S(a, b), a, b); }                   \
    static N min(N a, N b) { return vbslq_##S(vcltq_##S(a, b), a, b); }                   \
    static N abs(N a) { return vabsq_##S(a); }                                            \
    static U gt(N a, N b) { return vcgtq_##S(a, b); }                                     \
    static U lt(N a, N b) { return vcltq_##S(a, b); }                                     \
    /* not (a == a and b == b): all-ones xor the ordered mask */                          \
    static U unordered(N a, N b) {                                                        \
      const U ordered = vandq_##US(vceqq_##S(a, a), vceqq_##S(b, b));                     \
      return veorq_##US(ordered, vceqq_##US(ordered, ordered));                           \
    }                                                                                     \
    static N select(U m, N a, N b) { return vbslq_##S(m, a, b); }                         \
    static N sign(N a) {                                                                  \
      const N zero = vdupq_n_##S(T(0));                                                   \
      const U nonzero = vorrq_##US(vcgtq_##S(a, zero), vcltq_##S(a, zero));               \
      const N one = vbslq_##S(vcltq_##S(a, zero), vdupq_n_##S(T(-1)), vdupq_n_##S(T(1))); \
      return vbslq_##S(nonzero, one, a);                                                  \
    }                                                                                     \
  };
GDFAST_NEON_OPS(OpsF32, float, float32x4_t, uint32x4_t, f32, u32)
GDFAST_NEON_OPS(OpsF64, double, float64x2_t, uint64x2_t, f64, u64)
#undef GDFAST_NEON_OPS

template <class T>
using Lane = simd::Vec<std::conditional_t<sizeof(T) == 4, OpsF32, OpsF64>>;

using Narrow16 = simd::NarrowGeneric<Lane<float>>;
using Quant8 = simd::Quant8Generic;

// Whether the common storage combinations get loops of their own (kernels/storage.h).
inline constexpr bool kVectorLanes = false;

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
