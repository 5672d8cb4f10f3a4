// Build-wide basics shared by the math, the loops and the glue.
#pragma once

#include <cstdint>

// Forced inlining, for the small functions a loop body is made of: left to its size
// heuristics, the compiler may leave a call per SIMD lane (seen: the rule's update in the loop
// for narrow arrays on AVX2, 8x slower).
// (Not in unoptimized builds, the sanitizers' Debug one: there it only costs compile time.)
#if defined(_MSC_VER)
#define GDFAST_INLINE __forceinline
#elif defined(__OPTIMIZE__)
#define GDFAST_INLINE inline __attribute__((always_inline))
#else
#define GDFAST_INLINE inline
#endif

// The opposite, for work a loop does only in some calls (monitoring's sums): one copy of it,
// called, instead of one inlined into every loop the rules and storage layouts instantiate.
#if defined(_MSC_VER)
#define GDFAST_NOINLINE __declspec(noinline)
#else
#define GDFAST_NOINLINE __attribute__((noinline))
#endif

// Functions that must compile for both host and CUDA device (the update rules).
#if defined(__CUDACC__)
#define GDFAST_HD __host__ __device__ __forceinline__
#else
#define GDFAST_HD GDFAST_INLINE
#endif

namespace gdfast {

// All element counts and offsets are 64-bit: tensors above 2^31 elements are normal.
using index_t = std::int64_t;

}  // namespace gdfast
