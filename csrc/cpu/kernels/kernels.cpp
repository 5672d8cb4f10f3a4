// Compiled once per instruction set, with that set's flags and
// GDFAST_ISA_NAMESPACE / GDFAST_ISA_HEADER defined by cmake/GdfastIsa.cmake.
#include GDFAST_ISA_HEADER

#include "cpu/kernel_table.h"
#include "cpu/kernels/reduce.h"
#include "cpu/kernels/tensor_list.h"
#include "cpu/kernels/two_pass.h"
#include "optim/rule_traits.h"
#include "optim/stream.h"

namespace gdfast::cpu {
namespace GDFAST_ISA_NAMESPACE {

// A rule's step function for one option set: run_range, or a two-pass rule's first pass.
template <class Rule, unsigned kFlags, class T>
constexpr StepFn step_fn() {
  if constexpr (optim::kTwoPass<Rule>) {
    return &TwoPass<Rule, kFlags, T>::run_moments;
  } else {
    return &run_range<Rule, kFlags, T>;
  }
}

// A two-pass rule's second pass (null for the others).
template <class Rule, unsigned kFlags, class T>
constexpr StepFn second_pass_fn() {
  if constexpr (optim::kTwoPass<Rule>) {
    return &TwoPass<Rule, kFlags, T>::run_apply;
  } else {
    return nullptr;
  }
}

template <class Rule, class T, class FlagSequence>
struct FlagTable;

template <class Rule, class T, unsigned... kFlags>
struct FlagTable<Rule, T, std::integer_sequence<unsigned, kFlags...>> {
  static constexpr StepFn fns[] = {step_fn<Rule, kFlags, T>()...};
  static constexpr StepFn second[] = {second_pass_fn<Rule, kFlags, T>()...};
};

template <class Rule, class T>
using RuleFlagTable =
    FlagTable<Rule, T, std::make_integer_sequence<unsigned, 1u << Rule::kNumFlags>>;

template <class Rule, class T>
constexpr const StepFn* flag_table() {
  return RuleFlagTable<Rule, T>::fns;
}

template <class Rule, class T>
constexpr const StepFn* second_pass_table() {
  return optim::kTwoPass<Rule> ? RuleFlagTable<Rule, T>::second : nullptr;
}

// The benchmark's stream pattern, for the flag sets it takes: the first k states, 2^k - 1
// (optim/stream.h); null for the others, which are never asked for and so not compiled.
template <unsigned kFlags, class T>
constexpr StepFn stream_fn() {
  if constexpr ((kFlags & (kFlags + 1)) == 0) {
    return &run_range<optim::Stream, kFlags, T>;
  } else {
    return nullptr;
  }
}

template <class T, class FlagSequence>
struct StreamTable;

template <class T, unsigned... kFlags>
struct StreamTable<T, std::integer_sequence<unsigned, kFlags...>> {
  static constexpr StepFn fns[] = {stream_fn<kFlags, T>()...};
};

template <class T>
constexpr const StepFn* stream_table() {
  return StreamTable<T, std::make_integer_sequence<unsigned, 1u << optim::Stream::kNumFlags>>::fns;
}

template <class T>
struct StreamWithInputTable {
  static constexpr StepFn fns[] = {&run_flat_range<optim::StreamWithInput, 0u, T>,
                                   &run_flat_range<optim::StreamWithInput, 1u, T>};
};

#define GDFAST_STRINGIFY2(x) #x
#define GDFAST_STRINGIFY(x) GDFAST_STRINGIFY2(x)

// clang-format off: one line of the table per optimizer, from optimizers.def
constexpr KernelTable kTable = {
    GDFAST_STRINGIFY(GDFAST_ISA_NAMESPACE),
    Lane<float>::kLanes,
    {
#define GDFAST_OPTIMIZER(Rule, header) \
  {flag_table<optim::Rule, float>(), flag_table<optim::Rule, double>()},
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER
    },
    {
#define GDFAST_OPTIMIZER(Rule, header) \
  {second_pass_table<optim::Rule, float>(), second_pass_table<optim::Rule, double>()},
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER
    },
    {stream_table<float>(), stream_table<double>()},
    {StreamWithInputTable<float>::fns, StreamWithInputTable<double>::fns},
    {&chunk_sum_squares<Dtype::kFloat32>, &chunk_sum_squares<Dtype::kFloat64>,
     &chunk_sum_squares<Dtype::kBfloat16>, &chunk_sum_squares<Dtype::kFloat16>}};
// clang-format on

}  // namespace GDFAST_ISA_NAMESPACE

#define GDFAST_TABLE_ACCESSOR2(isa) kernel_table_##isa
#define GDFAST_TABLE_ACCESSOR(isa) GDFAST_TABLE_ACCESSOR2(isa)
const KernelTable& GDFAST_TABLE_ACCESSOR(GDFAST_ISA_NAMESPACE)() {
  return GDFAST_ISA_NAMESPACE::kTable;
}

}  // namespace gdfast::cpu
