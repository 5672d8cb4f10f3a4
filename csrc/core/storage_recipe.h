// Storage recipes: a combination of storage types fixed at compile time, so the loops for
// narrow arrays compile without a branch on each array's type. The CPU kernels
// (cpu/kernels/storage.h) and the CUDA loop (cuda/stored.cuh) compile the same recipes for
// the same rules; any other combination reads the types from the call (same bits, slower).
#pragma once

#include <tuple>

#include "core/config.h"
#include "core/dtype.h"
#include "core/step_args.h"

namespace gdfast {

// How an array is stored, fixed at compile time (kCall: read from the call).
enum class Kind { kCall, kFloat32, kBfloat16, kFloat16, kMasterOfBfloat16, kMasterOfFloat16 };

GDFAST_HD constexpr bool is_master(Kind k) {
  return k == Kind::kMasterOfBfloat16 || k == Kind::kMasterOfFloat16;
}
// The 16-bit type of a narrow kind.
GDFAST_HD constexpr Dtype narrow_type(Kind k) {
  return k == Kind::kBfloat16 || k == Kind::kMasterOfBfloat16 ? Dtype::kBfloat16 : Dtype::kFloat16;
}

// A combination of storage kinds: the param's, the inputs', the states'.
template <Kind kParam, Kind kInput, Kind kState>
struct Recipe {
  GDFAST_HD static constexpr Kind kind(int slot, int num_inputs) {
    return slot == 0 ? kParam : slot <= num_inputs ? kInput : kState;
  }
};
using AnyRecipe = Recipe<Kind::kCall, Kind::kCall, Kind::kCall>;

// Whether a call's storage is that recipe's.
template <class R>
bool matches(const Storage& s, bool master, int num_arrays, int num_inputs) {
  for (int k = 0; k < num_arrays; ++k) {
    const Kind kind = R::kind(k, num_inputs);
    // (a master copy is the param's alone)
    if (k == 0 && kind != Kind::kCall && is_master(kind) != master) return false;
    const bool ok = kind == Kind::kCall      ? true
                    : kind == Kind::kFloat32 ? s.slot[k] == Dtype::kFloat32
                                             : s.slot[k] == narrow_type(kind);
    if (!ok) return false;
  }
  return true;
}

// The storage combinations of the precision modes users pick most (bfloat16 params with
// bfloat16 or float32 states, with or without a master copy; float32 params with bfloat16
// states), compiled in for the rules that declare kStorageRecipes (Adam, SGD, Lion). Each
// recipe costs compile time and code size; float16, the other combinations and the other
// rules take the general loop.
using ModeRecipes = std::tuple<Recipe<Kind::kBfloat16, Kind::kBfloat16, Kind::kBfloat16>,
                               Recipe<Kind::kBfloat16, Kind::kBfloat16, Kind::kFloat32>,
                               Recipe<Kind::kMasterOfBfloat16, Kind::kBfloat16, Kind::kFloat32>,
                               Recipe<Kind::kFloat32, Kind::kFloat32, Kind::kBfloat16>>;

}  // namespace gdfast
