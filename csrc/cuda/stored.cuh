// The CUDA loop for calls with narrow arrays (bfloat16/float16 params, grads or states) or a
// float32 master copy of the param: the rule in float32, each element widened as it is loaded
// and narrowed as it is stored with the functions of core/rounding.h, the very code the CPU
// kernels match bit for bit (to nearest even, or stochastically with the same generator).
// Four elements per thread and step of the loop (16-byte or 8-byte accesses); tensors as in
// multi_tensor.cuh. The storage recipes of core/storage_recipe.h are compiled in with their
// types fixed; any other call's types are read from it (a branch per array and element).
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <tuple>

#include "core/rounding.h"
#include "core/step_args.h"
#include "core/storage_recipe.h"
#include "cuda/check.h"
#include "cuda/multi_tensor.cuh"
#include "optim/layout.h"
#include "optim/rule_traits.h"

namespace gdfast::cuda {

template <int kArrays>
struct StoredLaunchTable {
  static constexpr int kMaxBytes = 31000;
  static constexpr int kMaxTensors = (kMaxBytes - 64) / (kArrays * 8 + 8 + 8 + 8 + 4);
  void* arrays[kMaxTensors][kArrays];
  float* masters[kMaxTensors];            // null: the param is stored as it is computed
  std::uint64_t param_keys[kMaxTensors];  // rounding::param_key of each tensor
  index_t sizes[kMaxTensors];
  int first_block[kMaxTensors + 1];
  int num_tensors;
  index_t chunk;                // elements a block steps
  Dtype slot[kArrays];          // each array's storage type
  unsigned char role[kArrays];  // each array's stochastic-rounding role
  bool stochastic;
};

__device__ __forceinline__ float load_stored(const void* p, Dtype type, index_t i) {
  switch (type) {
    case Dtype::kBfloat16:
      return rounding::widen_bf16(static_cast<const std::uint16_t*>(p)[i]);
    case Dtype::kFloat16:
      return rounding::widen_f16(static_cast<const std::uint16_t*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}

// Four consecutive elements from i (a multiple of 4, the array aligned for it), as stored:
// one 16-byte load of float32 or one 8-byte load of 16-bit values (in .x and .y). Loading
// every array before widening any lets the loads of one step overlap.
__device__ __forceinline__ uint4 load_raw4(const void* p, Dtype type, index_t i) {
  if (type == Dtype::kFloat32) {
    return *reinterpret_cast<const uint4*>(static_cast<const float*>(p) + i);
  }
  const uint2 v = *reinterpret_cast<const uint2*>(static_cast<const std::uint16_t*>(p) + i);
  return {v.x, v.y, 0, 0};
}

__device__ __forceinline__ void widen4(const uint4& raw, Dtype type, float* out) {
  const std::uint32_t words[4] = {raw.x, raw.y, raw.z, raw.w};
  for (int e = 0; e < 4; ++e) {
    if (type == Dtype::kFloat32) {
      out[e] = rounding::float_of(words[e]);
    } else {
      const auto bits = static_cast<std::uint16_t>(words[e / 2] >> (16 * (e % 2)));
      out[e] = type == Dtype::kBfloat16 ? rounding::widen_bf16(bits) : rounding::widen_f16(bits);
    }
  }
}

// Array k's storage type: the recipe's where it fixes one (a constant, once the loops over
// the arrays are unrolled), else the call's.
template <class R, int kInputs>
__device__ __forceinline__ Dtype stored_type(const Dtype* call, int k) {
  const Kind kind = R::kind(k, kInputs);
  return kind == Kind::kCall      ? call[k]
         : kind == Kind::kFloat32 ? Dtype::kFloat32
                                  : narrow_type(kind);
}

// The 16 bits array `slot` of tensor `t` (of 16-bit type `type`) stores for `value` at element
// i: to nearest even, or stochastically with the CPU kernels' generator.
template <class Table>
__device__ __forceinline__ std::uint16_t narrowed(const Table& table, int t, int slot, Dtype type,
                                                  index_t i, float value, bool stochastic) {
  std::uint32_t random16 = 0;
  if (stochastic) {
    const unsigned role = table.role[slot];
    const std::uint32_t key =
        rounding::stream_key(table.param_keys[t], role / 2, static_cast<std::uint64_t>(i));
    random16 = rounding::random16(rounding::random_bits(key, static_cast<std::uint64_t>(i)), role);
  }
  return rounding::narrow(type == Dtype::kBfloat16, value, stochastic, random16);
}

// Element i of array `slot`, of storage type `type`, as the step reads it (the param's master
// copy where one is kept) ...
__device__ __forceinline__ float load_element(void* const* arrays, const float* master, int slot,
                                              Dtype type, index_t i) {
  return slot == 0 && master != nullptr ? master[i] : load_stored(arrays[slot], type, i);
}
// ... and as it is stored back: a master copy and the param rounded to nearest from it, else the
// array in its type (narrowed as the table says) of tensor t.
template <class Table>
__device__ __forceinline__ void store_element(const Table& table, int t, void* const* arrays,
                                              float* master, int slot, Dtype type, index_t i,
                                              float value) {
  const bool from_master = slot == 0 && master != nullptr;
  if (from_master) master[i] = value;
  if (type == Dtype::kFloat32) {
    static_cast<float*>(arrays[slot])[i] = value;
    return;
  }
  static_cast<std::uint16_t*>(arrays[slot])[i] =
      narrowed(table, t, slot, type, i, value, table.stochastic && !from_master);
}

template <class Rule, unsigned kFlags, int kArrays, class Recipe>
__global__ void __launch_bounds__(kThreads)
    stored_step_kernel(const StoredLaunchTable<kArrays> table, typename Rule::Hyper hyper,
                       DeviceScalars scalars) {
  if (!take_device_scalars(hyper, scalars)) return;
  const auto coef = Rule::template coef<float>(hyper);
  const float bound = grad_bound<float>(scalars);
  using R = optim::Registers<Rule, kFlags, float>;
  constexpr int kInputs = optim::Layout<Rule, kFlags>::kNumInputs;
  const auto type = [&](int k) { return stored_type<Recipe, kInputs>(table.slot, k); };

  const BlockChunk chunk = block_chunk(table);
  const int lo = chunk.tensor;
  const index_t begin = chunk.begin, end = chunk.end;
  void* const* arrays = table.arrays[lo];
  float* const master = table.masters[lo];
  const auto written = [](int slot) { return slot == 0 || slot > kInputs; };

  // Four elements a thread where every array is aligned for it (chunks start at multiples of
  // 1024 elements, so this holds for whole tensors), then one at a time.
  bool aligned = master == nullptr || reinterpret_cast<std::uintptr_t>(master + begin) % 16 == 0;
  for (int k = 0; k < kArrays; ++k) {
    const auto size = static_cast<std::uintptr_t>(dtype_size(type(k)));
    aligned =
        aligned && (reinterpret_cast<std::uintptr_t>(arrays[k]) + size * begin) % (4 * size) == 0;
  }
  const index_t vector_end = aligned ? begin + (end - begin) / 4 * 4 : begin;
  for (index_t i = begin + 4 * index_t{threadIdx.x}; i < vector_end; i += 4 * index_t{kThreads}) {
    uint4 raw[kArrays];
    for (int k = 0; k < kArrays; ++k) {
      raw[k] = k == 0 && master != nullptr ? load_raw4(master, Dtype::kFloat32, i)
                                           : load_raw4(arrays[k], type(k), i);
    }
    float v[kArrays][4];
    for (int k = 0; k < kArrays; ++k) {
      widen4(raw[k], k == 0 && master != nullptr ? Dtype::kFloat32 : type(k), v[k]);
    }
    for (int e = 0; e < 4; ++e) {
      R r = R::load([&](int slot) { return v[slot][e]; });
      r.update(coef, bound);
      r.store([&](int slot, float value) { v[slot][e] = value; });
    }
    for (int k = 0; k < kArrays; ++k) {
      if (!written(k)) continue;
      const bool from_master = k == 0 && master != nullptr;
      if (from_master)
        *reinterpret_cast<float4*>(master + i) = {v[0][0], v[0][1], v[0][2], v[0][3]};
      if (type(k) == Dtype::kFloat32) {
        *reinterpret_cast<float4*>(static_cast<float*>(arrays[k]) + i) = {v[k][0], v[k][1], v[k][2],
                                                                          v[k][3]};
        continue;
      }
      const bool stochastic = table.stochastic && !from_master;
      std::uint32_t words[2] = {0, 0};
      for (int e = 0; e < 4; ++e) {
        words[e / 2] |= std::uint32_t{narrowed(table, lo, k, type(k), i + e, v[k][e], stochastic)}
                        << (16 * (e % 2));
      }
      *reinterpret_cast<uint2*>(static_cast<std::uint16_t*>(arrays[k]) + i) = {words[0], words[1]};
    }
  }
  for (index_t i = vector_end + threadIdx.x; i < end; i += kThreads) {
    R r = R::load([&](int slot) { return load_element(arrays, master, slot, type(slot), i); });
    r.update(coef, bound);
    r.store([&](int slot, float value) {
      store_element(table, lo, arrays, master, slot, type(slot), i, value);
    });
  }
}

// What a narrow-storage launch table (StoredLaunchTable, QuantizedLaunchTable) keeps of the
// call's storage: per array, its type and rounding role; per tensor, its master copy and its
// stochastic-rounding key.
template <class Table>
void copy_storage(Table& table, const Storage& s, int num_arrays) {
  for (int k = 0; k < num_arrays; ++k) {
    table.slot[k] = s.slot[k];
    table.role[k] = s.role[k];
  }
  table.stochastic = s.stochastic;
}
template <class Table>
void add_stored_tensor(Table& table, const Storage& s, int slot, index_t t) {
  table.masters[slot] = s.masters != nullptr ? static_cast<float*>(s.masters[t]) : nullptr;
  table.param_keys[slot] = s.stochastic ? rounding::param_key(s.seed, s.step, s.keys[t]) : 0;
}

template <class Rule, unsigned kFlags, class R>
void launch_recipe(const typename Rule::Hyper& hyper, const StepArgs& args,
                   const DeviceScalars& scalars, cudaStream_t stream) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  using Table = StoredLaunchTable<kArrays>;
  static_assert(sizeof(Table) <= 32764, "kernel parameters are limited to 32764 bytes");
  const Storage& s = *args.storage;
  Table table;
  copy_storage(table, s, kArrays);
  launch_tables(
      args, chunk_elements<float>(true), table,
      [&](int slot, index_t t) { add_stored_tensor(table, s, slot, t); },
      [&](int blocks) {
        stored_step_kernel<Rule, kFlags, kArrays, R>
            <<<blocks, kThreads, 0, stream>>>(table, hyper, scalars);
      });
}

// The first of the recipes that matches the call's storage, if one does.
template <class Rule, unsigned kFlags, class... Rs>
bool launch_mode_recipe(const typename Rule::Hyper& hyper, const StepArgs& args,
                        const DeviceScalars& scalars, cudaStream_t stream, std::tuple<Rs...>*) {
  constexpr int kArrays = optim::Layout<Rule, kFlags>::kNumArrays;
  constexpr int kInputs = optim::Layout<Rule, kFlags>::kNumInputs;
  const bool master = args.storage->masters != nullptr;
  return ((matches<Rs>(*args.storage, master, kArrays, kInputs) &&
           (launch_recipe<Rule, kFlags, Rs>(hyper, args, scalars, stream), true)) ||
          ...);
}

template <class Rule, unsigned kFlags>
void launch_stored(const typename Rule::Hyper& hyper, const StepArgs& args,
                   const DeviceScalars& scalars, cudaStream_t stream) {
  if constexpr (optim::HasStorageRecipes<Rule>::value) {
    if (launch_mode_recipe<Rule, kFlags>(hyper, args, scalars, stream,
                                         static_cast<ModeRecipes*>(nullptr))) {
      return;
    }
  }
  launch_recipe<Rule, kFlags, AnyRecipe>(hyper, args, scalars, stream);
}

}  // namespace gdfast::cuda
