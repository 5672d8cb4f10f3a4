// Reductions for the step path (clipping by the gradients' norm):
//   sum_squares(arrays, name="grad", stream=None)
//                        per array (one, or a list), the sum of the squares of its elements,
//                        in double, bitwise the same for any thread count, ISA level and
//                        device; messages name the arrays `name`. CUDA arrays are read on
//                        `stream` (the caller's, as DLPack's __dlpack__ takes it), which the
//                        call synchronises with
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings/convert.h"
#include "bindings/register.h"
#include "cpu/reduce.h"
#include "cuda/api.h"

namespace gdfast::bindings {
namespace {

std::vector<double> sum_squares(py::handle arrays, const std::string& name, py::handle stream) {
  TensorBatch batch({{name.c_str(), arrays, false}}, stream);
  const StepArgs args = batch.step_args();
  const Dtype type = batch.storage() != nullptr ? batch.storage()->slot[0] : batch.dtype();
  std::vector<double> out(static_cast<std::size_t>(args.num_tensors));
  const auto stream_handle = stream.is_none() ? std::uintptr_t{1} : stream.cast<std::uintptr_t>();
  {
    const py::gil_scoped_release release;
    if (batch.on_cuda()) {
#if defined(GDFAST_HAVE_CUDA)
      cuda::sum_squares(args, type, out.data(), batch.device_id(), stream_handle);
#endif
    } else {
      cpu::sum_squares(args.arrays, args.num_arrays, args.offsets, args.num_tensors, type,
                       out.data());
    }
  }
  (void)stream_handle;
  return out;
}

}  // namespace

void register_reduce(py::module_& m) {
  m.def("sum_squares", &sum_squares, py::arg("arrays"), py::arg("name") = "grad",
        py::arg("stream") = py::none());
}

}  // namespace gdfast::bindings
