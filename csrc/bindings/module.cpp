// The extension module gdfast._core: only calls the registrars.
#include <pybind11/pybind11.h>

#include "bindings/register.h"
#include "bindings/torch_tensor.h"
#include "cpu/isa.h"

#define GDFAST_STR2(x) #x
#define GDFAST_STR(x) GDFAST_STR2(x)

PYBIND11_MODULE(_core, m) {
  if (gdfast::cpu::cpu_lacks_baseline()) {
    throw pybind11::import_error(
        "gdfast: this CPU lacks the instruction set gdfast's baseline kernels need (SSE2)");
  }
  m.doc() = "gdfast's compiled kernels; use the gdfast package, not this module";
  m.attr("__version__") = GDFAST_STR(GDFAST_VERSION);
  gdfast::bindings::register_optim(m);
  gdfast::bindings::register_info(m);
  gdfast::bindings::register_bench(m);
  gdfast::bindings::register_reduce(m);
  gdfast::bindings::register_capi(m);
  gdfast::bindings::register_torch_view(m);
}
