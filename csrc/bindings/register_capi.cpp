#include <pybind11/pybind11.h>

#include "bindings/register.h"
#include "capi/capi.h"

namespace gdfast::bindings {

void register_capi(pybind11::module_& m) {
  m.attr("_C_API") =
      pybind11::capsule(static_cast<const void*>(capi::table()), GDFAST_CAPI_CAPSULE);
}

}  // namespace gdfast::bindings
