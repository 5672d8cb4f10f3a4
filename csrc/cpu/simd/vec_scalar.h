// One-lane "SIMD" in plain C++: the portable reference level, and the proof that the
// vectorized levels compute exactly what the scalar rule computes.
#pragma once

#include "cpu/simd/narrow.h"
#include "cpu/simd/quant8.h"
#include "cpu/simd/vec.h"
#include "optim/lane_math.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

template <class T>
struct ScalarOps {
  using Scalar = T;
  using Native = T;
  using Mask = bool;
  static constexpr int kLanes = 1;
  static T set1(T x) { return x; }
  static T loadu(const T* p) { return *p; }
  static void storeu(T* p, T x) { *p = x; }
  static T load_partial(const T* p, index_t) { return *p; }
  static void store_partial(T* p, index_t, T x) { *p = x; }
  static T add(T a, T b) { return a + b; }
  static T sub(T a, T b) { return a - b; }
  static T mul(T a, T b) { return a * b; }
  static T div(T a, T b) { return a / b; }
  static T neg(T a) { return -a; }
  static T sqrt(T a) { return optim::lane_sqrt(a); }
  static T max(T a, T b) { return optim::lane_max(a, b); }
  static T min(T a, T b) { return optim::lane_min(a, b); }
  static T abs(T a) { return optim::lane_abs(a); }
  static T sign(T a) { return optim::lane_sign(a); }
  static bool gt(T a, T b) { return a > b; }
  static bool lt(T a, T b) { return a < b; }
  static bool unordered(T a, T b) { return a != a || b != b; }
  static T select(bool m, T a, T b) { return m ? a : b; }
};

template <class T>
using Lane = simd::Vec<ScalarOps<T>>;

using Narrow16 = simd::NarrowGeneric<Lane<float>>;
using Quant8 = simd::Quant8Generic;

// Whether the common storage combinations get loops of their own (kernels/storage.h).
inline constexpr bool kVectorLanes = false;

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
