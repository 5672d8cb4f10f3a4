// The CUDA loops of a rule whose update needs sums over each whole tensor first (kTensorSums,
// LAMB's trust ratio), as cpu/kernels/two_pass.h runs them and bitwise the same: pass 1 updates
// the states and sums, per chunk, the squares of the values the rule names (chunk_sums.cuh);
// the host adds each tensor's chunks in order and makes its factor with the rule's own
// tensor_factor (the CPU's code, on the host: the same bits); pass 2 writes the params, each
// tensor's factor travelling in the launch's table. The coefficients are computed on the host
// too, as the CPU's are. float32/float64 arrays, and in a float32 call bfloat16/float16 params,
// grads and states, a float32 master copy (stored.cuh's loads and stores: to nearest or
// stochastically, as the CPU) and 8-bit states (quantized.cuh's codec), pass 1 summing the
// states as stored, which pass 2 reads back (the bindings refuse device scalars here); the
// step waits for pass 1's sums (one synchronisation). Monitoring (StepArgs::monitor): pass 1
// sums the gradients too, pass 2 the updates and the new params.
#pragma once

#include <cuda_runtime.h>

#include <type_traits>
#include <vector>

#include "core/step_args.h"
#include "cuda/chunk_sums.cuh"
#include "cuda/multi_tensor.cuh"
#include "cuda/quantized.cuh"
#include "cuda/stored.cuh"
#include "optim/layout.h"

namespace gdfast::cuda {

// A launch's tensors for pass 2, as block_chunk() reads them, with each tensor's factor.
template <int kArrays>
struct FactorTable {
  static constexpr int kMaxBytes = 32000;
  static constexpr int kMaxTensors = (kMaxBytes - 16) / (kArrays * 8 + 8 + 8 + 4);
  void* arrays[kMaxTensors][kArrays];
  index_t sizes[kMaxTensors];
  double factor[kMaxTensors];
  int first_block[kMaxTensors + 1];
  int num_tensors;
  index_t chunk;
};

// What the passes read of an element: its param, gradient (pass 1) and states.
template <class T, int kStates>
struct Loaded {
  T param, grad, state[kStates];
};

template <class T, int kArrays>
__device__ __forceinline__ Loaded<T, kArrays - 2> load_element(T* const (&ptr)[kArrays], index_t i,
                                                               bool grad) {
  Loaded<T, kArrays - 2> x;
  x.param = ptr[0][i];
  x.grad = grad ? ptr[1][i] : T(0);
  for (int k = 0; k < kArrays - 2; ++k) x.state[k] = ptr[2 + k][i];
  return x;
}

// Pass 1 over a chunk: the states stored; summed the rule's values, then (kMonitor) the
// gradient.
template <class Rule, unsigned kFlags, class T, int kArrays, bool kMonitor>
__global__ void __launch_bounds__(kThreads)
    moments_kernel(const LaunchTable<kArrays> table, const typename Rule::template Coef<T> coef,
                   T bound, double* chunk_sums) {
  constexpr int kSums = Rule::kTensorSums + kMonitor;
  const BlockChunk chunk = block_chunk(table);
  T* ptr[kArrays];
  chunk_arrays(table, chunk, ptr);
  step_and_sum_chunk<kSums, T>(
      chunk.end - chunk.begin, [&](index_t i) { return load_element(ptr, i, true); },
      [&](Loaded<T, kArrays - 2>& x, index_t i, T(&summed)[kSums]) {
        x.grad = optim::lane_min(bound, optim::lane_max(-bound, x.grad));  // (clipping by value)
        T rule_sums[Rule::kTensorSums];
        Rule::template moments<kFlags>(x.param, x.grad, x.state, coef, rule_sums);
        for (int s = 0; s < Rule::kTensorSums; ++s) summed[s] = rule_sums[s];
        if constexpr (kMonitor) summed[Rule::kTensorSums] = x.grad;
        for (int k = 0; k < kArrays - 2; ++k) ptr[2 + k][i] = x.state[k];
      },
      chunk_sums + kSums * blockIdx.x);
}

template <class Rule, unsigned kFlags, class T, int kArrays>
__global__ void __launch_bounds__(kThreads)
    apply_kernel(const FactorTable<kArrays> table, const typename Rule::template Coef<T> coef) {
  const BlockChunk chunk = block_chunk(table);
  const T factor = static_cast<T>(table.factor[chunk.tensor]);
  T* ptr[kArrays];
  chunk_arrays(table, chunk, ptr);
  // A batch of elements a thread, all loaded before any is stored (as chunk_sums.cuh's loop):
  // their loads are in flight together.
  constexpr int kBatch = 4;
  const index_t n = chunk.end - chunk.begin;
  for (index_t base = 0; base < n; base += index_t{kThreads} * kBatch) {
    Loaded<T, kArrays - 2> x[kBatch];
    for (int u = 0; u < kBatch; ++u) {
      const index_t i = base + threadIdx.x + u * kThreads;
      if (i < n) x[u] = load_element(ptr, i, false);
    }
    for (int u = 0; u < kBatch; ++u) {
      const index_t i = base + threadIdx.x + u * kThreads;
      if (i >= n) break;
      Rule::template apply<kFlags>(x[u].param, x[u].state, coef, factor);
      ptr[0][i] = x[u].param;
    }
  }
}

// Pass 2 over a chunk, monitored: summed the update (new param - old) and the new param.
template <class Rule, unsigned kFlags, class T, int kArrays>
__global__ void __launch_bounds__(kThreads)
    monitored_apply_kernel(const FactorTable<kArrays> table,
                           const typename Rule::template Coef<T> coef, double* chunk_sums) {
  const BlockChunk chunk = block_chunk(table);
  const T factor = static_cast<T>(table.factor[chunk.tensor]);
  T* ptr[kArrays];
  chunk_arrays(table, chunk, ptr);
  step_and_sum_chunk<2, T>(
      chunk.end - chunk.begin, [&](index_t i) { return load_element(ptr, i, false); },
      [&](Loaded<T, kArrays - 2>& x, index_t i, T(&summed)[2]) {
        const T before = x.param;
        Rule::template apply<kFlags>(x.param, x.state, coef, factor);
        ptr[0][i] = x.param;
        summed[0] = x.param - before;
        summed[1] = x.param;
      },
      chunk_sums + 2 * blockIdx.x);
}

// Pass 2's table for a call with narrow arrays or a master copy: stored.cuh's, with each
// tensor's factor.
template <int kArrays>
struct StoredFactorTable {
  static constexpr int kMaxBytes = 31000;
  static constexpr int kMaxTensors = (kMaxBytes - 64) / (kArrays * 8 + 8 + 8 + 8 + 8 + 4);
  void* arrays[kMaxTensors][kArrays];
  float* masters[kMaxTensors];            // null: the param is stored as it is computed
  std::uint64_t param_keys[kMaxTensors];  // rounding::param_key of each tensor
  index_t sizes[kMaxTensors];
  double factor[kMaxTensors];
  int first_block[kMaxTensors + 1];
  int num_tensors;
  index_t chunk;
  Dtype slot[kArrays];
  unsigned char role[kArrays];
  bool stochastic;
};

// Element i of a tensor's arrays in their storage, widened: the param (its master copy where
// one is kept), the gradient (pass 1) and the states.
template <int kArrays, class Table>
__device__ __forceinline__ Loaded<float, kArrays - 2> load_stored_element(const Table& table,
                                                                          void* const* arrays,
                                                                          const float* master,
                                                                          index_t i, bool grad) {
  Loaded<float, kArrays - 2> x;
  x.param = load_element(arrays, master, 0, table.slot[0], i);
  x.grad = grad ? load_element(arrays, master, 1, table.slot[1], i) : 0.0f;
  for (int k = 0; k < kArrays - 2; ++k) {
    x.state[k] = load_element(arrays, master, 2 + k, table.slot[2 + k], i);
  }
  return x;
}

// The values pass 1 sums for an element whose states are as stored: the rule's, then (when
// there is room for it: monitoring) the gradient, clamped as the step took it.
template <class Rule, unsigned kFlags, int kStates, int kSums>
__device__ __forceinline__ void values_to_sum(const Loaded<float, kStates>& x,
                                              const typename Rule::template Coef<float>& coef,
                                              float (&summed)[kSums]) {
  float rule_sums[Rule::kTensorSums];
  Rule::template summed<kFlags>(x.param, x.state, coef, rule_sums);
  for (int s = 0; s < Rule::kTensorSums; ++s) summed[s] = rule_sums[s];
  if constexpr (kSums > Rule::kTensorSums) summed[Rule::kTensorSums] = x.grad;
}

// State `slot` of a tensor's element i stored in its type (to nearest or stochastically), and
// its value as stored, which pass 2 reads (read back: the thread's own store).
template <class Table>
__device__ __forceinline__ float store_state(const Table& table, int t, int slot, index_t i,
                                             float value) {
  void* const* arrays = table.arrays[t];
  store_element(table, t, arrays, table.masters[t], slot, table.slot[slot], i, value);
  return load_stored(arrays[slot], table.slot[slot], i);
}

// Pass 1 over a chunk of a call with narrow arrays or a master copy: the states stored in
// their types (to nearest or stochastically), and summed as stored, i.e. as pass 2 reads them
// (read back: the thread's own stores).
template <class Rule, unsigned kFlags, int kArrays, bool kMonitor>
__global__ void __launch_bounds__(kThreads)
    stored_moments_kernel(const StoredLaunchTable<kArrays> table,
                          const typename Rule::template Coef<float> coef, float bound,
                          double* chunk_sums) {
  constexpr int kSums = Rule::kTensorSums + kMonitor;
  const BlockChunk chunk = block_chunk(table);
  const int t = chunk.tensor;
  void* const* arrays = table.arrays[t];
  float* const master = table.masters[t];
  step_and_sum_chunk<kSums, float>(
      chunk.end - chunk.begin,
      [&](index_t i) {
        return load_stored_element<kArrays>(table, arrays, master, chunk.begin + i, true);
      },
      [&](Loaded<float, kArrays - 2>& x, index_t i, float (&summed)[kSums]) {
        const index_t at = chunk.begin + i;
        x.grad = optim::lane_min(bound, optim::lane_max(-bound, x.grad));  // (clipping by value)
        Rule::template update_moments<kFlags>(x.grad, x.state, coef);
        for (int k = 0; k < kArrays - 2; ++k) {
          x.state[k] = store_state(table, t, 2 + k, at, x.state[k]);
        }
        values_to_sum<Rule, kFlags>(x, coef, summed);
      },
      chunk_sums + kSums * blockIdx.x);
}

// Pass 2's table for a call with 8-bit states: quantized.cuh's, with each tensor's factor.
template <int kArrays>
struct QuantizedFactorTable {
  static constexpr int kMaxBytes = 31000;
  static constexpr int kMaxTensors = (kMaxBytes - 64) / (2 * kArrays * 8 + 8 + 8 + 8 + 8 + 4);
  void* arrays[kMaxTensors][kArrays];
  float* absmax[kMaxTensors][kArrays];
  float* masters[kMaxTensors];
  std::uint64_t param_keys[kMaxTensors];
  index_t sizes[kMaxTensors];
  double factor[kMaxTensors];
  int first_block[kMaxTensors + 1];
  int num_tensors;
  index_t chunk;
  Dtype slot[kArrays];
  unsigned char role[kArrays];
  unsigned char quantized[kArrays];
  bool stochastic;
};

// Element i of a tensor's arrays with 8-bit states decoded with their blocks' absmax, the
// others as load_stored_element reads them.
template <int kArrays, class Table>
__device__ __forceinline__ Loaded<float, kArrays - 2> load_quantized_element(
    const Table& table, int t, index_t i, bool grad, const float (&codec)[2][4][16]) {
  void* const* arrays = table.arrays[t];
  Loaded<float, kArrays - 2> x =
      load_stored_element<kArrays>(table, arrays, table.masters[t], i, grad);
  for (int k = 0; k < kArrays - 2; ++k) {
    const unsigned char quantized = table.quantized[2 + k];
    if (quantized != kNotQuantized) {
      x.state[k] = decode_element(arrays[2 + k], quantized,
                                  table.absmax[t][2 + k][i / quant8::kBlock], i, codec);
    }
  }
  return x;
}

// Pass 1 over a chunk of a call with 8-bit states, a thread per element of each 256-element
// block in turn (the block synchronises): the moments updated, each 8-bit state encoded with
// its block's new absmax and decoded again (the others stored and read back), and the rule's
// values summed from the states as stored, element k of the chunk into accumulator k % 16 in
// order, as the CPU sums them.
template <class Rule, unsigned kFlags, int kArrays, bool kMonitor>
__global__ void __launch_bounds__(kThreads)
    quantized_moments_kernel(const QuantizedLaunchTable<kArrays> table,
                             const typename Rule::template Coef<float> coef, float bound,
                             double* chunk_sums) {
  constexpr int kSums = Rule::kTensorSums + kMonitor;
  static_assert(kSums * kSumAccumulators <= kThreads, "a thread per accumulator");
  __shared__ float codec[2][4][16];
  __shared__ float values[kSums][kThreads];
  load_codec(codec);
  const BlockChunk chunk = block_chunk(table);
  const int t = chunk.tensor;
  void* const* arrays = table.arrays[t];
  const int sum = static_cast<int>(threadIdx.x) / kSumAccumulators;
  const int lane = static_cast<int>(threadIdx.x) % kSumAccumulators;
  double acc = 0.0;
  // (every thread takes every turn of this loop: the block synchronises in it)
  for (index_t first = chunk.begin; first < chunk.end; first += kThreads) {
    const index_t i = first + threadIdx.x;
    const index_t block = first / quant8::kBlock;
    const bool active = i < chunk.end;
    Loaded<float, kArrays - 2> x{};
    if (active) {
      x = load_quantized_element<kArrays>(table, t, i, true, codec);
      x.grad = optim::lane_min(bound, optim::lane_max(-bound, x.grad));  // (clipping by value)
      Rule::template update_moments<kFlags>(x.grad, x.state, coef);
    }
    for (int k = 0; k < kArrays - 2; ++k) {
      const int slot = 2 + k;
      if (table.quantized[slot] != kNotQuantized) {  // (the same for the whole block)
        x.state[k] = encode_block(arrays[slot], table.absmax[t][slot], table.quantized[slot], block,
                                  i, x.state[k], active, codec);
      } else if (active) {
        x.state[k] = store_state(table, t, slot, i, x.state[k]);
      }
    }
    if (active) {
      float summed[kSums];
      values_to_sum<Rule, kFlags>(x, coef, summed);
      for (int s = 0; s < kSums; ++s) values[s][threadIdx.x] = summed[s];
    }
    __syncthreads();
    const int count = static_cast<int>(chunk.end - first < kThreads ? chunk.end - first : kThreads);
    if (sum < kSums) {
      for (int k = lane; k < count; k += kSumAccumulators) {
        const double v = values[sum][k];
        acc += v * v;
      }
    }
    __syncthreads();
  }
  finish_chunk_sums<kSums>(acc, chunk_sums + kSums * blockIdx.x);
}

// Pass 2 over a chunk of a call with narrow arrays, a master copy or 8-bit states (Table: a
// StoredFactorTable or a QuantizedFactorTable): the param (and its master copy) stored from
// the states as stored; monitored, summed the update (new param - old) and the new param.
template <class Rule, unsigned kFlags, int kArrays, bool kMonitor, class Table>
__global__ void __launch_bounds__(kThreads)
    narrow_apply_kernel(const Table table, const typename Rule::template Coef<float> coef,
                        double* chunk_sums) {
  constexpr bool kQuantized = std::is_same_v<Table, QuantizedFactorTable<kArrays>>;
  __shared__ float codec[2][4][16];
  if constexpr (kQuantized) load_codec(codec);
  const BlockChunk chunk = block_chunk(table);
  const int t = chunk.tensor;
  const auto factor = static_cast<float>(table.factor[t]);
  const auto load = [&](index_t i) {
    if constexpr (kQuantized) {
      return load_quantized_element<kArrays>(table, t, chunk.begin + i, false, codec);
    } else {
      return load_stored_element<kArrays>(table, table.arrays[t], table.masters[t], chunk.begin + i,
                                          false);
    }
  };
  const auto apply = [&](Loaded<float, kArrays - 2>& x, index_t i) {
    Rule::template apply<kFlags>(x.param, x.state, coef, factor);
    store_element(table, t, table.arrays[t], table.masters[t], 0, table.slot[0], chunk.begin + i,
                  x.param);
  };
  const index_t n = chunk.end - chunk.begin;
  if constexpr (kMonitor) {
    step_and_sum_chunk<2, float>(
        n, load,
        [&](Loaded<float, kArrays - 2>& x, index_t i, float (&summed)[2]) {
          const float before = x.param;
          apply(x, i);
          summed[0] = x.param - before;
          summed[1] = x.param;
        },
        chunk_sums + 2 * blockIdx.x);
  } else {
    for (index_t i = threadIdx.x; i < n; i += kThreads) {
      Loaded<float, kArrays - 2> x = load(i);
      apply(x, i);
    }
  }
}

// The step of a float32 call with narrow arrays, a master copy or 8-bit states: pass 1 with
// a MomentsTable (StoredLaunchTable or QuantizedLaunchTable), pass 2 with an ApplyTable (the
// same, with each tensor's factor).
template <class Rule, unsigned kFlags, class MomentsTable, class ApplyTable>
void run_narrow_passes(const typename Rule::Hyper& hyper, const StepArgs& args,
                       cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  constexpr bool kQuantized = std::is_same_v<MomentsTable, QuantizedLaunchTable<kArrays>>;
  static_assert(sizeof(MomentsTable) <= 32764 && sizeof(ApplyTable) <= 32764,
                "kernel parameters are limited to 32764 bytes");
  const bool monitored = args.monitor != nullptr;
  const int stride = Rule::kTensorSums + (monitored ? 1 : 0);
  const auto coef = Rule::template coef<float>(hyper);
  const auto bound = static_cast<float>(args.grad_bound);
  const Storage& s = *args.storage;
  const auto prepare = [&](auto& table) {
    copy_storage(table, s, kArrays);
    if constexpr (kQuantized) {
      for (int k = 0; k < kArrays; ++k) table.quantized[k] = s.quantized[k];
    }
  };
  const auto add_tensor = [&](auto& table, int slot, index_t t) {
    add_stored_tensor(table, s, slot, t);
    if constexpr (kQuantized) {
      for (int k = 0; k < kArrays; ++k) table.absmax[slot][k] = s.absmax[t * args.num_arrays + k];
    }
  };
  MomentsTable moments_table;
  prepare(moments_table);
  const std::vector<double> sums = sum_chunks(
      args, stride, stream, moments_table,
      [&](int slot, index_t t) { add_tensor(moments_table, slot, t); },
      [&](int blocks, double* out) {
        const auto launch = [&](auto monitor) {
          constexpr bool kMonitor = decltype(monitor)::value;
          if constexpr (kQuantized) {
            quantized_moments_kernel<Rule, kFlags, kArrays, kMonitor>
                <<<blocks, kThreads, 0, stream>>>(moments_table, coef, bound, out);
          } else {
            stored_moments_kernel<Rule, kFlags, kArrays, kMonitor>
                <<<blocks, kThreads, 0, stream>>>(moments_table, coef, bound, out);
          }
        };
        if (monitored) {
          launch(std::true_type{});
        } else {
          launch(std::false_type{});
        }
      });
  const std::vector<double> factors = tensor_factors<Rule>(sums, stride, hyper, args.num_tensors);
  ApplyTable table;
  prepare(table);
  const auto add_factor = [&](int slot, index_t t) {
    add_tensor(table, slot, t);
    table.factor[slot] = factors[t];
  };
  if (!monitored) {
    launch_tables(args, chunk_elements<float>(true), table, add_factor, [&](int blocks) {
      narrow_apply_kernel<Rule, kFlags, kArrays, false, ApplyTable>
          <<<blocks, kThreads, 0, stream>>>(table, coef, nullptr);
    });
    return;
  }
  add_two_pass_monitor(args, sums, stride,
                       sum_chunks(args, 2, stream, table, add_factor, [&](int blocks, double* out) {
                         narrow_apply_kernel<Rule, kFlags, kArrays, true, ApplyTable>
                             <<<blocks, kThreads, 0, stream>>>(table, coef, out);
                       }));
}

template <class Rule, unsigned kFlags>
void launch_two_pass_narrow(const typename Rule::Hyper& hyper, const StepArgs& args,
                            cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  if (args.storage->any_quantized) {
    run_narrow_passes<Rule, kFlags, QuantizedLaunchTable<kArrays>, QuantizedFactorTable<kArrays>>(
        hyper, args, stream);
  } else {
    run_narrow_passes<Rule, kFlags, StoredLaunchTable<kArrays>, StoredFactorTable<kArrays>>(
        hyper, args, stream);
  }
}

template <class Rule, unsigned kFlags, class T>
void launch_two_pass(const typename Rule::Hyper& hyper, const StepArgs& args, cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  constexpr int kSums = Rule::kTensorSums;
  const bool monitored = args.monitor != nullptr;
  const int stride = kSums + (monitored ? 1 : 0);
  const auto coef = Rule::template coef<T>(hyper);
  const auto bound = static_cast<T>(args.grad_bound);  // (host scalars only: see kernels.cu)
  LaunchTable<kArrays> moments_table;
  const std::vector<double> sums = sum_chunks(
      args, stride, stream, moments_table, [](int, index_t) {},
      [&](int blocks, double* out) {
        if (monitored) {
          moments_kernel<Rule, kFlags, T, kArrays, true>
              <<<blocks, kThreads, 0, stream>>>(moments_table, coef, bound, out);
        } else {
          moments_kernel<Rule, kFlags, T, kArrays, false>
              <<<blocks, kThreads, 0, stream>>>(moments_table, coef, bound, out);
        }
      });
  const std::vector<double> factors = tensor_factors<Rule>(sums, stride, hyper, args.num_tensors);
  FactorTable<kArrays> table;
  static_assert(sizeof(table) <= 32764, "kernel parameters are limited to 32764 bytes");
  const auto add_factor = [&](int slot, index_t t) { table.factor[slot] = factors[t]; };
  if (!monitored) {
    launch_tables(args, chunk_elements<T>(false), table, add_factor, [&](int blocks) {
      apply_kernel<Rule, kFlags, T, kArrays><<<blocks, kThreads, 0, stream>>>(table, coef);
    });
    return;
  }
  add_two_pass_monitor(args, sums, stride,
                       sum_chunks(args, 2, stream, table, add_factor, [&](int blocks, double* out) {
                         monitored_apply_kernel<Rule, kFlags, T, kArrays>
                             <<<blocks, kThreads, 0, stream>>>(table, coef, out);
                       }));
}

}  // namespace gdfast::cuda
