// The interface every per-ISA kernel library exports: one step function per optimizer,
// element type and option set (the rule's flag bits index the innermost array).
#pragma once

#include "core/dtype.h"
#include "core/step_args.h"
#include "optim/registry.h"

namespace gdfast::cpu {

struct KernelTable {
  const char* isa;
  int float32_lanes;
  const StepFn* steps[optim::kNumOptimizers][kNumDtypes];  // [id][dtype][flags]
  // The benchmark's in-place access pattern (optim/stream.h): [dtype][2^states - 1].
  const StepFn* stream[kNumDtypes];
};

// One accessor per compiled ISA, defined in csrc/cpu/kernels/kernels.cpp.
#define GDFAST_ISA(name) const KernelTable& kernel_table_##name();
#include "cpu/isa_list.def"
#undef GDFAST_ISA

}  // namespace gdfast::cpu
