// What the bindings and the C API read off any rule's declarations (optim/describe.h): its
// counts of fields, inputs and states, its optional members, and which states a set of option
// flags uses.
#pragma once

#include <cstddef>
#include <tuple>
#include <type_traits>
#include <utility>

namespace gdfast::optim {

template <class Rule>
inline constexpr std::size_t kNumFields = std::tuple_size_v<decltype(Rule::kFields)>;
template <class Rule>
inline constexpr int kNumStates = static_cast<int>(std::extent_v<decltype(Rule::kStates)>);
template <class Rule>
inline constexpr int kNumInputs = static_cast<int>(std::extent_v<decltype(Rule::kInputs)>);

// Optional members of a rule: invalid(h) (a cross-field check), advance(h) (scalar states).
template <class Rule, class = void>
struct HasInvalid : std::false_type {};
template <class Rule>
struct HasInvalid<Rule,
                  std::void_t<decltype(Rule::invalid(std::declval<const typename Rule::Hyper&>()))>>
    : std::true_type {};
template <class Rule, class = void>
struct HasAdvance : std::false_type {};
template <class Rule>
struct HasAdvance<Rule, std::void_t<decltype(Rule::advance(std::declval<typename Rule::Hyper&>()))>>
    : std::true_type {};

// Optional declaration `static constexpr bool kStorageRecipes = true;`: the rules most used
// with bfloat16 get their common storage layouts compiled in (speed only; cpu/kernels/storage.h).
template <class Rule, class = void>
struct HasStorageRecipes : std::false_type {};
template <class Rule>
struct HasStorageRecipes<Rule, std::void_t<decltype(Rule::kStorageRecipes)>>
    : std::bool_constant<Rule::kStorageRecipes> {};

// Optional declaration `static constexpr int kTensorSums = n;`: the rule's update needs n sums of
// squares over each whole tensor first (LAMB), so it runs in two passes (cpu/kernels/two_pass.h)
// with update_moments() and summed() (pass 1: the CPU stores the moments between the two, so a
// narrow state is summed as stored; moments() is both, for CUDA's float32/float64 arrays),
// tensor_factor() and apply() instead of update().
template <class Rule, class = void>
struct TensorSums : std::integral_constant<int, 0> {};
template <class Rule>
struct TensorSums<Rule, std::void_t<decltype(Rule::kTensorSums)>>
    : std::integral_constant<int, Rule::kTensorSums> {};
template <class Rule>
inline constexpr bool kTwoPass = TensorSums<Rule>::value > 0;

// Optional declaration `static constexpr bool kPartial = true;`: the rule is a part of a step that
// the front end composes (Muon's phases around its Newton-Schulz iteration): it is published
// as partial, and Python builds no optimizer from it alone.
template <class Rule, class = void>
struct IsPartial : std::false_type {};
template <class Rule>
struct IsPartial<Rule, std::void_t<decltype(Rule::kPartial)>> : std::bool_constant<Rule::kPartial> {
};

template <class Rule>
bool uses_state(int k, unsigned flags) {
  return (Rule::kStates[k].needs & flags) == Rule::kStates[k].needs;
}

}  // namespace gdfast::optim
