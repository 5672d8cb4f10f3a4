// What one optimizer call hands to a kernel: a list of tensors, each a fixed set of arrays
// (param, grad, then the optimizer's states), seen as one virtual concatenation so that any
// element range [begin, end) of it can be given to a thread.
#pragma once

#include <cstdint>
#include <limits>

#include "core/config.h"
#include "core/dtype.h"

namespace gdfast {

// How the arrays of a float32 call are stored when some are narrower than float32 (16-bit
// floats, 8-bit blockwise states), and how narrowed stores round. Absent (null) when every array
// holds the compute type.
struct Storage {
  static constexpr int kMaxArrays = 8;
  Dtype slot[kMaxArrays] = {};  // each array's storage type, in kernel order
  // Each array's role in stochastic rounding: 0 the param, 1 + k the rule's state k.
  std::uint8_t role[kMaxArrays] = {};
  void* const* masters = nullptr;  // per tensor: a float32 master copy of the param, or null
  bool stochastic = false;         // narrowed stores round stochastically (else to nearest)
  std::uint64_t seed = 0;
  std::uint64_t step = 0;
  const std::uint64_t* keys = nullptr;  // per tensor: its index among the optimizer's params
  // Blockwise 8-bit states (core/quant8.h): per array, 0 (not quantized, its slot's type) or
  // the map of its uint8 codes; per tensor and array, the blocks' absmax (null where none).
  std::uint8_t quantized[kMaxArrays] = {};
  float* const* absmax = nullptr;
  bool any_quantized = false;
};

// Reductions sum chunks of this many elements (of one tensor), each in an order fixed by the
// source, and combine them in index order: results never depend on how chunks are shared among
// threads, nor on the device (cpu/kernels/reduce.h, cuda/reduce.cu).
inline constexpr index_t kReduceChunk = 16384;

// Monitoring sums (StepArgs::monitor): of the gradients' squares, the updates' and the new params'.
inline constexpr int kMonitorSums = 3;

enum Quantized : std::uint8_t { kNotQuantized = 0, kSignedMap = 1, kUnsignedMap = 2 };

struct StepArgs {
  int num_arrays;  // arrays per tensor: param, grad, states...
  index_t num_tensors;
  void* const* arrays;         // num_tensors * num_arrays pointers, tensor-major
  const index_t* offsets;      // num_tensors + 1 prefix sums of the tensor sizes
  const void* coef;            // the rule's Coef<T>, computed once per call on the host
  index_t prefetch_bytes = 0;  // how far ahead the CPU loop prefetches its arrays (0: not)
  const Storage* storage = nullptr;
  // Clipping by value (torch.nn.utils.clip_grad_value_ before the step): the gradients, as
  // stored, are clamped to [-grad_bound, grad_bound] as they are loaded (+inf: not).
  double grad_bound = std::numeric_limits<double>::infinity();
  // Monitoring: when set, the step adds to monitor[0..2] the sums of squares of the gradients
  // (as clamped by grad_bound, before any factor), of the updates (new param - old) and of the
  // new params, each summed in fixed chunks (kReduceChunk) combined in index order: bitwise the
  // same for any thread count, ISA level and device (a host array; on CUDA, float32/float64
  // arrays, and the step waits for its stream).
  double* monitor = nullptr;
  // Set by the dispatcher for the kernels that sum whole chunks (monitoring, a two-pass rule's
  // first pass): per tensor its first chunk's index (num_tensors + 1 entries), and the sums of
  // each chunk (kMonitorSums, or the rule's kTensorSums).
  const index_t* first_chunk = nullptr;
  double* chunk_sums = nullptr;
  // A two-pass rule's second pass (cpu/kernels/two_pass.h): each tensor's factor.
  const double* tensor_factor = nullptr;
};

// Updates elements [begin, end) of the virtual concatenation.
using StepFn = void (*)(const StepArgs& args, index_t begin, index_t end);

}  // namespace gdfast
