// The C API's function table (gdfast/include/gdfast/capi.h), exported by the bindings as the
// capsule gdfast._core._C_API: C, C++ and Cython extensions step arrays through it, GIL-free.
#pragma once

#include "gdfast/capi.h"

namespace gdfast::capi {

const gdfast_capi* table();

}  // namespace gdfast::capi
