// Each register_*.cpp adds one group of functions to the extension module.
#pragma once

#include <pybind11/pybind11.h>

namespace gdfast::bindings {

void register_optim(pybind11::module_& m);
void register_info(pybind11::module_& m);
void register_bench(pybind11::module_& m);
void register_reduce(pybind11::module_& m);
void register_capi(pybind11::module_& m);  // the C API table, as the capsule _C_API

}  // namespace gdfast::bindings
