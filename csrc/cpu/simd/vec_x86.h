// SSE2 / AVX2 / AVX-512 lane operations. The three share intrinsic names up to a prefix
// (_mm, _mm256, _mm512) and a suffix (ps, pd), so one macro spells the common part; only
// the compare/select used by sign() and the partial loads differ per ISA.
#pragma once

#include <immintrin.h>

#include "cpu/simd/vec.h"

#define GDFAST_X86_COMMON_OPS(T, N, W, P, S)                                        \
  using Scalar = T;                                                                 \
  using Native = N;                                                                 \
  static constexpr int kLanes = W;                                                  \
  static N set1(T x) { return P##_set1_##S(x); }                                    \
  static N loadu(const T* p) { return P##_loadu_##S(p); }                           \
  static void storeu(T* p, N x) { P##_storeu_##S(p, x); }                           \
  static N add(N a, N b) { return P##_add_##S(a, b); }                              \
  static N sub(N a, N b) { return P##_sub_##S(a, b); }                              \
  static N mul(N a, N b) { return P##_mul_##S(a, b); }                              \
  static N div(N a, N b) { return P##_div_##S(a, b); }                              \
  static N sqrt(N a) { return P##_sqrt_##S(a); }                                    \
  /* maxps / minps: a > b ? a : b and a < b ? a : b, exactly optim::lane_max/min */ \
  static N max(N a, N b) { return P##_max_##S(a, b); }                              \
  static N min(N a, N b) { return P##_min_##S(a, b); }                              \
  static N abs(N a) { return P##_andnot_##S(P##_set1_##S(T(-0.0)), a); }            \
  static N neg(N a) { return P##_xor_##S(a, P##_set1_##S(T(-0.0))); }               \
  /* sign: copysign(1, a) where a is ordered and nonzero, else a itself */          \
  static N copysign_one(N a) {                                                      \
    return P##_or_##S(P##_and_##S(a, P##_set1_##S(T(-0.0))), P##_set1_##S(T(1)));   \
  }
