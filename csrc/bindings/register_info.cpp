// ISA and thread-pool introspection and control.
#include <pybind11/stl.h>

#include <stdexcept>

#include "bindings/register.h"
#include "cpu/dispatch.h"
#include "cpu/isa.h"
#include "cpu/parallel.h"

namespace gdfast::bindings {

namespace py = pybind11;

void register_info(py::module_& m) {
  m.def("compiled_isas", [] { return cpu::compiled_isas(); });
  m.def("supported_isas", [] { return cpu::supported_isas(); });
  m.def("active_isa", [] { return std::string(cpu::active_kernels().isa); });
  m.def(
      "set_active_isa", [](const std::string& name) { cpu::set_active_isa(name); },
      py::arg("name"));
  m.def("float32_lanes", [] { return cpu::active_kernels().float32_lanes; });
  m.def("prefetch_bytes", [] { return cpu::prefetch_bytes(); });
  m.def(
      "set_prefetch_bytes", [](index_t bytes) { cpu::set_prefetch_bytes(bytes); },
      py::arg("bytes"));
  m.def("get_num_threads", [] { return cpu::get_num_threads(); });
  m.def("openmp_runtime", [] {
    const std::string path = cpu::openmp_runtime();
    return path.empty() ? py::object(py::none()) : py::object(py::str(path));
  });
  m.def(
      "set_num_threads",
      [](int n) {
        if (n < 1) throw py::value_error("n: expected an int >= 1, got " + std::to_string(n));
        py::gil_scoped_release release;  // may wait for another thread's step to finish
        cpu::set_num_threads(n);
      },
      py::arg("n"));
}

}  // namespace gdfast::bindings
