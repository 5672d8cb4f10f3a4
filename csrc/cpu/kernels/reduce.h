// Deterministic reductions: the sum of squares of a chunk of up to kReduceChunk elements, in
// double, in an order the source alone fixes: four streams of q elements (q = n / 64 * 16),
// element i of stream s into accumulator (s, i % 16) in order, the remaining n - 4q elements
// into (0, i % 16); then stream 1, 2, 3 added into stream 0's accumulators, and the 16 combined
// pairwise. Each instruction-set level vectorizes the same operations, so every
// level gives the same bits (the square of a float32, bfloat16 or float16 value is exact in
// double). Callers combine the chunks of a tensor in index order. Included only by
// kernels.cpp.
#pragma once

#include <cstdint>

#include "core/config.h"
#include "core/dtype.h"
#include "core/rounding.h"
#include "cpu/kernels/elementwise.h"

namespace gdfast::cpu::GDFAST_ISA_NAMESPACE {

template <class Load>
double sum_squares_of(const char* bytes, int element_size, index_t prefetch, index_t n, Load load) {
  // Four streams (quarters of the chunk's whole rows of 16) read side by side: one stream per
  // core leaves memory idle between requests. The rest goes to stream 0's accumulators.
  constexpr int kStreams = 4;
  constexpr int kAccumulators = 16;
  double acc[kStreams][kAccumulators] = {};
  const index_t quarter = n / (kStreams * kAccumulators) * kAccumulators;
  for (index_t i = 0; i < quarter; i += kAccumulators) {
    for (int s = 0; s < kStreams; ++s) {
      if (prefetch > 0) {
        prefetch_hint(bytes + ((s * quarter + i) * element_size + prefetch), false);
      }
      for (int j = 0; j < kAccumulators; ++j) {
        const double x = load(s * quarter + i + j);
        acc[s][j] += x * x;
      }
    }
  }
  for (index_t i = kStreams * quarter; i < n; ++i) {
    const double x = load(i);
    acc[0][(i - kStreams * quarter) % kAccumulators] += x * x;
  }
  for (int s = 1; s < kStreams; ++s) {
    for (int j = 0; j < kAccumulators; ++j) acc[0][j] += acc[s][j];
  }
  for (int width = kAccumulators / 2; width >= 1; width /= 2) {
    for (int j = 0; j < width; ++j) acc[0][j] += acc[0][j + width];
  }
  return acc[0][0];
}

template <Dtype kType>
double chunk_sum_squares(const void* data, index_t n, index_t prefetch) {
  const auto* bytes = static_cast<const char*>(data);
  const int size = dtype_size(kType);
  if constexpr (kType == Dtype::kFloat32) {
    const auto* x = static_cast<const float*>(data);
    return sum_squares_of(bytes, size, prefetch, n,
                          [x](index_t i) { return static_cast<double>(x[i]); });
  } else if constexpr (kType == Dtype::kFloat64) {
    const auto* x = static_cast<const double*>(data);
    return sum_squares_of(bytes, size, prefetch, n, [x](index_t i) { return x[i]; });
  } else if constexpr (kType == Dtype::kBfloat16) {
    const auto* x = static_cast<const std::uint16_t*>(data);
    return sum_squares_of(bytes, size, prefetch, n, [x](index_t i) {
      return static_cast<double>(rounding::widen_bf16(x[i]));
    });
  } else {
    const auto* x = static_cast<const std::uint16_t*>(data);
    return sum_squares_of(bytes, size, prefetch, n, [x](index_t i) {
      return static_cast<double>(rounding::widen_f16(x[i]));
    });
  }
}

}  // namespace gdfast::cpu::GDFAST_ISA_NAMESPACE
