// Vec<Ops>: a SIMD lane type the update rules can use like a float. Each instruction set
// supplies an Ops struct (its intrinsics for one element type); this wrapper turns them into
// operators and the lane_* functions of optim/lane_math.h.
//
// Only csrc/cpu/kernels/ includes this header: every Ops type lives in a per-ISA namespace,
// so no inline function compiled for one ISA can be picked by the linker for another.
#pragma once

#include <cstring>
#include <type_traits>

#include "core/config.h"

namespace gdfast::simd {

// A lane mask from a comparison, for lane_where.
template <class Ops>
struct VecMask {
  typename Ops::Mask m;
};

template <class Ops>
struct Vec {
  using T = typename Ops::Scalar;
  using Native = typename Ops::Native;
  static constexpr int kLanes = Ops::kLanes;

  Native v;

  Vec() = default;
  Vec(T x) : v(Ops::set1(x)) {}  // NOLINT: implicit broadcast lets rules write `p * c.lr`

  static Vec wrap(Native x) {
    Vec r;
    r.v = x;
    return r;
  }
  static Vec load(const T* p) { return wrap(Ops::loadu(p)); }
  static void store(T* p, Vec x) { Ops::storeu(p, x.v); }
  // First n < kLanes elements; the other lanes are zero (and never stored).
  static Vec load_partial(const T* p, index_t n) { return wrap(Ops::load_partial(p, n)); }
  static void store_partial(T* p, index_t n, Vec x) { Ops::store_partial(p, n, x.v); }

  friend Vec operator+(Vec a, Vec b) { return wrap(Ops::add(a.v, b.v)); }
  friend Vec operator-(Vec a, Vec b) { return wrap(Ops::sub(a.v, b.v)); }
  friend Vec operator*(Vec a, Vec b) { return wrap(Ops::mul(a.v, b.v)); }
  friend Vec operator/(Vec a, Vec b) { return wrap(Ops::div(a.v, b.v)); }
  friend Vec operator-(Vec a) { return wrap(Ops::neg(a.v)); }
  friend Vec lane_sqrt(Vec a) { return wrap(Ops::sqrt(a.v)); }
  friend Vec lane_max(Vec a, Vec b) { return wrap(Ops::max(a.v, b.v)); }
  friend Vec lane_min(Vec a, Vec b) { return wrap(Ops::min(a.v, b.v)); }
  friend Vec lane_abs(Vec a) { return wrap(Ops::abs(a.v)); }
  friend Vec lane_sign(Vec a) { return wrap(Ops::sign(a.v)); }
  friend VecMask<Ops> lane_gt(Vec a, Vec b) { return {Ops::gt(a.v, b.v)}; }
  friend VecMask<Ops> lane_lt(Vec a, Vec b) { return {Ops::lt(a.v, b.v)}; }
  friend VecMask<Ops> lane_is_nan(Vec a) { return {Ops::unordered(a.v, a.v)}; }
  friend Vec lane_where(VecMask<Ops> mask, Vec a, Vec b) {
    return wrap(Ops::select(mask.m, a.v, b.v));
  }
};

// Partial load/store through a zero-padded stack buffer, for ISAs without masked memory ops.
// (Member templates, so that Ops may derive from this before it is complete.)
template <class Ops>
struct BufferedPartial {
  template <class T>
  static auto load_partial(const T* p, index_t n) {
    alignas(64) T buf[Ops::kLanes] = {};
    std::memcpy(buf, p, static_cast<size_t>(n) * sizeof(T));
    return Ops::loadu(buf);
  }
  template <class T, class Native>
  static void store_partial(T* p, index_t n, Native x) {
    alignas(64) T buf[Ops::kLanes];
    Ops::storeu(buf, x);
    std::memcpy(p, buf, static_cast<size_t>(n) * sizeof(T));
  }
};

}  // namespace gdfast::simd
