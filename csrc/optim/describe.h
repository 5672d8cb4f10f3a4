// The vocabulary a rule header declares its interface with, once: its hyperparameter fields
// (name, member, default, valid range), the arrays it reads (inputs) and updates (states: the
// option flags that switch each one on, and how it starts), its host-side scalar states, and
// whether torch keeps a step count for it. The bindings register every rule from these
// declarations and publish them; the Python front ends, ops and benchmark are built from them.
#pragma once

#include <limits>

#include "core/config.h"

namespace gdfast::optim {

// An interval of finite reals; an infinite bound admits every finite value on its side.
struct Range {
  double lo, hi;
  bool lo_open, hi_open;
};
inline constexpr double kInfinity = std::numeric_limits<double>::infinity();
inline constexpr Range kFinite{-kInfinity, kInfinity, true, true};
inline constexpr Range kNonNegative{0.0, kInfinity, false, true};
inline constexpr Range kPositive{0.0, kInfinity, true, true};
inline constexpr Range kUnitOpen{0.0, 1.0, false, true};     // [0, 1): betas
inline constexpr Range kUnit{0.0, 1.0, false, false};        // [0, 1]
inline constexpr Range kUnitInterior{0.0, 1.0, true, true};  // (0, 1)

enum class FieldKind : int {
  kReal,         // a hyperparameter, double
  kFlag,         // a hyperparameter, bool
  kScalarState,  // per-parameter state kept on the host (NAdam's mu_product), double
};

template <class H, class M>
struct Field {
  const char* name;
  M H::* member;
  M initial;  // the default; for a scalar state the value it starts at
  Range range;
  FieldKind kind;
  const char* start_from;  // a scalar state that starts at this hyperparameter's value
};

template <class H>
constexpr Field<H, double> real(const char* name, double H::* member, double default_value,
                                Range range) {
  return {name, member, default_value, range, FieldKind::kReal, nullptr};
}
template <class H>
constexpr Field<H, bool> flag(const char* name, bool H::* member, bool default_value) {
  return {name, member, default_value, kFinite, FieldKind::kFlag, nullptr};
}
template <class H>
constexpr Field<H, double> scalar_state(const char* name, double H::* member, double start,
                                        const char* start_from = nullptr) {
  return {name, member, start, kFinite, FieldKind::kScalarState, start_from};
}

// How a state array starts, made by the front ends on a parameter's first step.
enum class Init : int {
  kZeros,
  kUnset,  // written before it is read on the first step (SGD's momentum buffer)
  kFill,   // every element set to the value of the hyperparameter `fill_from`
};

struct StateSpec {
  const char* name;       // torch's state name
  unsigned needs = 0;     // flag bits that must all be set for the rule to use it
  const char* when = "";  // those flags in the caller's terms, for messages
  Init init = Init::kZeros;
  const char* fill_from = nullptr;
  // Never negative (a sum of squares): stored 8-bit, it takes the unsigned map (core/quant8.h),
  // which spends the sign bit on precision.
  bool nonnegative = false;
  // A point in parameter space (Schedule-Free's z), not a statistic of the gradients: stored
  // narrow, it is rounded like the param (the benchmark's gate allows for that); never 8-bit.
  bool iterate = false;

  constexpr StateSpec never_negative() const {
    StateSpec s = *this;
    s.nonnegative = true;
    return s;
  }
  constexpr StateSpec an_iterate() const {
    StateSpec s = *this;
    s.iterate = true;
    return s;
  }
};

// The step count a front end passes, and whether it is kept as state["step"] (as torch does).
enum class StepCount : int {
  kNone,       // no count (Lion)
  kCounted,    // 1, 2, 3, ... kept per parameter
  kFirstCall,  // not kept: 1 on the call that makes the states, 2 afterwards (SGD)
};

}  // namespace gdfast::optim
