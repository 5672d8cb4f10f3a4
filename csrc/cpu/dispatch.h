// Picks the kernel table (once, from the CPU, GDFAST_ISA or an in-process override) and runs
// an optimizer step over a tensor list on the thread pool.
#pragma once

#include <string>

#include "core/dtype.h"
#include "core/step_args.h"
#include "cpu/kernel_table.h"

namespace gdfast::cpu {

// The table in use. First call: the best supported level, or GDFAST_ISA's if set (throws
// std::invalid_argument naming the problem if that level is unknown or unsupported).
const KernelTable& active_kernels();
// Switches level for the whole process; throws std::invalid_argument like above.
void set_active_isa(const std::string& name);

// Runs fn over [0, args.offsets[num_tensors]) split across the pool's threads in contiguous
// ranges; falls back to the calling thread alone when the work is too small to pay.
void run_parallel(StepFn fn, const StepArgs& args);

// While one is alive, every step started on this thread runs its kernel `repeats` times over
// each thread's range, with one wake-up and no per-call cost: how the benchmark measures the
// arithmetic throughput of a step on cache-resident data. Not for training: the update is
// applied `repeats` times.
class ScopedKernelRepeats {
 public:
  explicit ScopedKernelRepeats(index_t repeats);
  ~ScopedKernelRepeats();
  ScopedKernelRepeats(const ScopedKernelRepeats&) = delete;
  ScopedKernelRepeats& operator=(const ScopedKernelRepeats&) = delete;

 private:
  index_t previous_;
};

template <class Rule>
void run_step(const typename Rule::Hyper& hyper, Dtype dtype, StepArgs args) {
  const StepFn* by_flags =
      active_kernels().steps[static_cast<int>(optim::RuleId<Rule>::value)][static_cast<int>(dtype)];
  const StepFn fn = by_flags[Rule::flags(hyper)];
  if (dtype == Dtype::kFloat32) {
    const auto coef = Rule::template coef<float>(hyper);
    args.coef = &coef;
    run_parallel(fn, args);
  } else {
    const auto coef = Rule::template coef<double>(hyper);
    args.coef = &coef;
    run_parallel(fn, args);
  }
}

}  // namespace gdfast::cpu
