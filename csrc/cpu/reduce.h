// Deterministic reductions over a tensor list on the thread pool: each tensor's chunks
// (kReduceChunk elements) are summed by the active level's kernel, on whichever thread, and
// combined in index order, so a result is bitwise the same for any thread count and level.
#pragma once

#include "core/dtype.h"
#include "core/step_args.h"

namespace gdfast::cpu {

// out[t] = the sum of squares of tensor t, whose elements are arrays[t * stride] (stored as
// `type`) and number offsets[t + 1] - offsets[t].
void sum_squares(void* const* arrays, int stride, const index_t* offsets, index_t num_tensors,
                 Dtype type, double* out);

}  // namespace gdfast::cpu
