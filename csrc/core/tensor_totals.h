// The host's part of a reduction once each tensor's sums are in (tensor-major, `stride` sums a
// tensor, as the CPU's run_tensor_sums and CUDA's ChunkSums give them): one column added over
// the tensors in order, and a two-pass rule's per-tensor factors and monitoring sums. The CPU
// and CUDA steps share these, so their totals are the same bits.
#pragma once

#include <cstddef>
#include <vector>

#include "core/config.h"
#include "core/step_args.h"

namespace gdfast {

// Sum `column` of every tensor's sums, added in tensor order from 0.
inline double tensors_total(const std::vector<double>& tensor_sums, int stride, int column) {
  double total = 0.0;
  for (std::size_t i = static_cast<std::size_t>(column); i < tensor_sums.size();
       i += static_cast<std::size_t>(stride)) {
    total += tensor_sums[i];
  }
  return total;
}

// A two-pass rule's factor of each tensor (Rule::tensor_factor) from pass 1's sums, the rule's
// first in each tensor's `stride`.
template <class Rule>
std::vector<double> tensor_factors(const std::vector<double>& sums, int stride,
                                   const typename Rule::Hyper& hyper, index_t num_tensors) {
  std::vector<double> factors(static_cast<std::size_t>(num_tensors));
  for (index_t t = 0; t < num_tensors; ++t) {
    double tensor[Rule::kTensorSums];
    for (int s = 0; s < Rule::kTensorSums; ++s) {
      tensor[s] = sums[static_cast<std::size_t>(t * stride + s)];
    }
    factors[static_cast<std::size_t>(t)] = Rule::tensor_factor(tensor, hyper);
  }
  return factors;
}

// A monitored two-pass step's sums into args.monitor: the gradients' from pass 1 (its last
// column, after the rule's), the updates' and new params' from pass 2 (`applied`, 2 a tensor).
inline void add_two_pass_monitor(const StepArgs& args, const std::vector<double>& sums, int stride,
                                 const std::vector<double>& applied) {
  args.monitor[0] += tensors_total(sums, stride, stride - 1);  // the gradients
  args.monitor[1] += tensors_total(applied, 2, 0);             // the updates
  args.monitor[2] += tensors_total(applied, 2, 1);             // the new params
}

}  // namespace gdfast
