// Element types. A kernel computes in float32 or float64 (the compute types); an array may be
// stored narrower than its kernel computes (bfloat16, float16: the storage types), widened on
// load and narrowed on store.
#pragma once

#include "core/config.h"

namespace gdfast {

// kUint8: the codes of an 8-bit blockwise state (core/quant8.h), never a param or input.
enum class Dtype : int { kFloat32 = 0, kFloat64 = 1, kBfloat16 = 2, kFloat16 = 3, kUint8 = 4 };
inline constexpr int kNumDtypes = 2;  // the compute types, which index a KernelTable

inline const char* dtype_name(Dtype dtype) {
  switch (dtype) {
    case Dtype::kFloat32:
      return "float32";
    case Dtype::kFloat64:
      return "float64";
    case Dtype::kBfloat16:
      return "bfloat16";
    case Dtype::kFloat16:
      return "float16";
    case Dtype::kUint8:
      return "uint8";
  }
  return "?";
}

GDFAST_HD int dtype_size(Dtype dtype) {
  return dtype == Dtype::kFloat64   ? 8
         : dtype == Dtype::kFloat32 ? 4
         : dtype == Dtype::kUint8   ? 1
                                    : 2;
}

}  // namespace gdfast
