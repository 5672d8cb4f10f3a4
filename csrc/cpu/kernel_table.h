// The interface every per-ISA kernel library exports: one step function per optimizer,
// element type and option set (the rule's flag bits index the innermost array).
#pragma once

#include "core/dtype.h"
#include "core/step_args.h"
#include "optim/registry.h"

namespace gdfast::cpu {

// (prefetch: how many bytes ahead to prefetch, 0 for none)
using ChunkReduceFn = double (*)(const void* data, index_t n, index_t prefetch);

struct KernelTable {
  const char* isa;
  int float32_lanes;
  const StepFn* steps[optim::kNumOptimizers][kNumDtypes];  // [id][dtype][flags]
  // A two-pass rule's second pass (optim/rule_traits.h's kTwoPass), like steps; null for others.
  const StepFn* second_pass[optim::kNumOptimizers][kNumDtypes];
  // The benchmark's in-place access pattern (optim/stream.h): [dtype][2^states - 1].
  const StepFn* stream[kNumDtypes];
  // The same with a second input, only read (optim/stream.h's StreamWithInput), for arrays all
  // of the compute type (no narrow storage): [dtype][states, 0 or 1].
  const StepFn* stream_with_input[kNumDtypes];
  // Sum of squares of one chunk of at most kReduceChunk elements (kernels/reduce.h), by the
  // array's storage type (Dtype order).
  ChunkReduceFn sum_squares[4];
};

// One accessor per compiled ISA, defined in csrc/cpu/kernels/kernels.cpp.
#define GDFAST_ISA(name) const KernelTable& kernel_table_##name();
#include "cpu/isa_list.def"
#undef GDFAST_ISA

}  // namespace gdfast::cpu
