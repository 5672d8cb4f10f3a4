// What one optimizer call hands to a kernel: a list of tensors, each a fixed set of arrays
// (param, grad, then the optimizer's states), seen as one virtual concatenation so that any
// element range [begin, end) of it can be given to a thread.
#pragma once

#include "core/config.h"

namespace gdfast {

struct StepArgs {
  int num_arrays;  // arrays per tensor: param, grad, states...
  index_t num_tensors;
  void* const* arrays;         // num_tensors * num_arrays pointers, tensor-major
  const index_t* offsets;      // num_tensors + 1 prefix sums of the tensor sizes
  const void* coef;            // the rule's Coef<T>, computed once per call on the host
  index_t prefetch_bytes = 0;  // how far ahead the CPU loop prefetches its arrays (0: not)
};

// Updates elements [begin, end) of the virtual concatenation.
using StepFn = void (*)(const StepArgs& args, index_t begin, index_t end);

}  // namespace gdfast
