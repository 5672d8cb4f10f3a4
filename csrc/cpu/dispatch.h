// Picks the kernel table (once, from the CPU, GDFAST_ISA or an in-process override) and runs
// an optimizer step over a tensor list on the thread pool.
#pragma once

#include <string>
#include <vector>

#include "core/dtype.h"
#include "core/step_args.h"
#include "core/tensor_totals.h"
#include "cpu/kernel_table.h"
#include "optim/rule_traits.h"

namespace gdfast::cpu {

// The table in use. First call: the best supported level, or GDFAST_ISA's if set (throws
// std::invalid_argument naming the problem if that level is unknown or unsupported).
const KernelTable& active_kernels();
// Switches level for the whole process; throws std::invalid_argument like above.
void set_active_isa(const std::string& name);

// How far ahead of the element it updates the CPU loop prefetches each array, in bytes; 0 for
// none. First call: GDFAST_PREFETCH if set (throws std::invalid_argument if it is not a byte
// count in [0, 65536]), else 1024 on Intel CPUs and 0 elsewhere.
index_t prefetch_bytes();
void set_prefetch_bytes(index_t bytes);  // throws std::invalid_argument like above

// Runs fn over [0, args.offsets[num_tensors]) split across the pool's threads in contiguous
// ranges; falls back to the calling thread alone when the work is too small to pay. With
// args.monitor, the ranges are whole chunks and the chunks' sums are added to args.monitor.
void run_parallel(StepFn fn, const StepArgs& args);

// Benchmark only: runs fn over each thread's range `repeats` times with one wake-up and no
// per-call cost, i.e. applies the update `repeats` times in place. This is how the benchmark
// measures the arithmetic throughput of a step on cache-resident data.
void run_parallel_repeated(StepFn fn, const StepArgs& args, index_t repeats);

// Runs fn, a loop that sums whole chunks into StepArgs::chunk_sums (`sums` per chunk), over the
// tensor list on the pool, whole chunks to each thread; returns each tensor's sums (tensor-major),
// its chunks' added in index order: bitwise the same for any thread count.
std::vector<double> run_tensor_sums(StepFn fn, const StepArgs& args, int sums);

// A two-pass rule's step (cpu/kernels/two_pass.h): pass 1 (the states, and each tensor's sums),
// each tensor's factor on the host, pass 2 (the params). When monitoring, pass 1 sums the
// gradients too and pass 2 the updates and params, both in whole chunks.
template <class Rule>
void run_two_passes(StepFn first, const StepFn* const* second, const typename Rule::Hyper& hyper,
                    Dtype dtype, const StepArgs& args) {
  const bool monitored = args.monitor != nullptr;
  const int stride = Rule::kTensorSums + (monitored ? 1 : 0);
  const std::vector<double> sums = run_tensor_sums(first, args, stride);
  const std::vector<double> factors = tensor_factors<Rule>(sums, stride, hyper, args.num_tensors);
  StepArgs apply = args;
  apply.tensor_factor = factors.data();
  const StepFn apply_fn = second[static_cast<int>(dtype)][Rule::flags(hyper)];
  if (!monitored) {
    run_parallel(apply_fn, apply);
    return;
  }
  add_two_pass_monitor(args, sums, stride, run_tensor_sums(apply_fn, apply, 2));
}

// One call of `Rule`'s kernels, `by_dtype` being a KernelTable entry ([dtype][flags]) and
// `second` a two-pass rule's second passes (else null), over the tensor list (repeated in place
// `repeats` times: benchmark only).
template <class Rule>
void run_kernels(const StepFn* const* by_dtype, const StepFn* const* second,
                 const typename Rule::Hyper& hyper, Dtype dtype, StepArgs args,
                 index_t repeats = 1) {
  const unsigned flags = Rule::flags(hyper);
  const StepFn fn = by_dtype[static_cast<int>(dtype)][flags];
  args.prefetch_bytes = prefetch_bytes();
  const auto run = [&](const auto& coef) {
    args.coef = &coef;
    if constexpr (optim::kTwoPass<Rule>) {
      for (index_t r = 0; r < repeats; ++r) run_two_passes<Rule>(fn, second, hyper, dtype, args);
    } else if (repeats == 1) {
      run_parallel(fn, args);
    } else {
      run_parallel_repeated(fn, args, repeats);
    }
  };
  if (dtype == Dtype::kFloat32) {
    run(Rule::template coef<float>(hyper));
  } else {
    run(Rule::template coef<double>(hyper));
  }
}

// One step of a registered `Rule` over the tensor list (repeated: benchmark only).
template <class Rule>
void run_step(const typename Rule::Hyper& hyper, Dtype dtype, StepArgs args, index_t repeats = 1) {
  const int id = static_cast<int>(optim::RuleId<Rule>::value);
  run_kernels<Rule>(active_kernels().steps[id], active_kernels().second_pass[id], hyper, dtype,
                    args, repeats);
}

}  // namespace gdfast::cpu
