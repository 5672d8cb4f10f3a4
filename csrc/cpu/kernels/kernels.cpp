// Compiled once per instruction set, with that set's flags and
// GDFAST_ISA_NAMESPACE / GDFAST_ISA_HEADER defined by cmake/GdfastIsa.cmake.
#include GDFAST_ISA_HEADER

#include "cpu/kernel_table.h"
#include "cpu/kernels/reduce.h"
#include "cpu/kernels/tensor_list.h"
#include "optim/stream.h"

namespace gdfast::cpu {
namespace GDFAST_ISA_NAMESPACE {

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
    {flag_table<optim::Stream, float>(), flag_table<optim::Stream, double>()},
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
