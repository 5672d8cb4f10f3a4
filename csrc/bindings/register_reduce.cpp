// Reductions for the step path (clipping by the gradients' norm):
//   sum_squares(arrays, name="grad")
//                        per array (one, or a list), the sum of the squares of its elements,
//                        in double, bitwise the same for any thread count and ISA level;
//                        messages name the arrays `name`
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings/convert.h"
#include "bindings/register.h"
#include "cpu/reduce.h"

namespace gdfast::bindings {
namespace {

std::vector<double> sum_squares(py::handle arrays, const std::string& name) {
  TensorBatch batch({{name.c_str(), arrays, false}}, py::none());
  if (batch.on_cuda()) {
    throw py::value_error(
        name + ": norms are taken of CPU arrays only (the CUDA kernels have no reduction yet)");
  }
  const StepArgs args = batch.step_args();
  const Dtype type = batch.storage() != nullptr ? batch.storage()->slot[0] : batch.dtype();
  std::vector<double> out(static_cast<std::size_t>(args.num_tensors));
  {
    const py::gil_scoped_release release;
    cpu::sum_squares(args.arrays, args.num_arrays, args.offsets, args.num_tensors, type,
                     out.data());
  }
  return out;
}

}  // namespace

void register_reduce(py::module_& m) {
  m.def("sum_squares", &sum_squares, py::arg("arrays"), py::arg("name") = "grad");
}

}  // namespace gdfast::bindings
