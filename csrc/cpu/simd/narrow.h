// One float32 lane to and from kLanes 16-bit values (bfloat16 or float16), the conversions the
// loop for narrow arrays uses (kernels/storage.h). Each instruction set supplies a Narrow16;
// this portable one converts element by element through a stack buffer with the scalar
// functions of core/rounding.h, which the vectorized ones match bit for bit.
//   Random random(key, index)       rounding::random_bits of elements index .. index+kLanes-1
//   Random random16(bits, role)     the 16 bits of each element role `role` rounds with
//   store(type, p, x, random16, n)  random16 null: to nearest even
#pragma once

#include <cstdint>

#include "core/config.h"
#include "core/dtype.h"
#include "core/rounding.h"

namespace gdfast::simd {

template <class L>
struct NarrowGeneric {
  static constexpr int kLanes = L::kLanes;
  struct Random {
    std::uint32_t bits[kLanes];
  };

  // The first n elements (n < kLanes: the other lanes are zero).
  GDFAST_INLINE static L load(Dtype type, const std::uint16_t* p, index_t n = kLanes) {
    alignas(64) float buf[kLanes] = {};
    for (index_t j = 0; j < n; ++j) {
      buf[j] = type == Dtype::kBfloat16 ? rounding::widen_bf16(p[j]) : rounding::widen_f16(p[j]);
    }
    return L::load(buf);
  }
  GDFAST_INLINE static Random random(std::uint32_t key, index_t index) {
    Random r;
    for (int j = 0; j < kLanes; ++j) {
      r.bits[j] = rounding::random_bits(key, static_cast<std::uint64_t>(index + j));
    }
    return r;
  }
  GDFAST_INLINE static Random random16(const Random& bits, unsigned role) {
    Random r;
    for (int j = 0; j < kLanes; ++j) r.bits[j] = rounding::random16(bits.bits[j], role);
    return r;
  }
  // Stores the first n elements.
  GDFAST_INLINE static void store_bits(Dtype type, std::uint16_t* p, L x,
                                       const std::uint32_t* random16, index_t n = kLanes) {
    alignas(64) float buf[kLanes];
    L::store(buf, x);
    for (index_t j = 0; j < n; ++j) {
      p[j] = rounding::narrow(type == Dtype::kBfloat16, buf[j], random16 != nullptr,
                              random16 != nullptr ? random16[j] : 0u);
    }
  }
  GDFAST_INLINE static void store(Dtype type, std::uint16_t* p, L x, const Random* random16,
                                  index_t n = kLanes) {
    store_bits(type, p, x, random16 != nullptr ? random16->bits : nullptr, n);
  }
};

}  // namespace gdfast::simd
