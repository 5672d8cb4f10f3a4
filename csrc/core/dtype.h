// Element types a kernel can be instantiated for.
#pragma once

namespace gdfast {

enum class Dtype : int { kFloat32 = 0, kFloat64 = 1 };
inline constexpr int kNumDtypes = 2;

inline const char* dtype_name(Dtype dtype) {
  return dtype == Dtype::kFloat32 ? "float32" : "float64";
}

}  // namespace gdfast
