// Build-wide basics shared by the math, the loops and the glue.
#pragma once

#include <cstdint>

// Functions that must compile for both host and CUDA device (the update rules).
#if defined(__CUDACC__)
#define GDFAST_HD __host__ __device__ __forceinline__
#else
#define GDFAST_HD inline
#endif

namespace gdfast {

// All element counts and offsets are 64-bit: tensors above 2^31 elements are normal.
using index_t = std::int64_t;

}  // namespace gdfast
