# cython: language_level=3
"""The C functions that gdfast/cython_api.pxd declares, for Cython extensions to cimport (see
that file). They forward to the C API table that gdfast._core exports as a capsule."""

from cpython.pycapsule cimport PyCapsule_GetPointer
from libc.stdint cimport int64_t, uint32_t, uint64_t

from gdfast import _core


cdef extern from "gdfast/capi.h":
    ctypedef struct gdfast_capi:
        uint32_t abi_version
        int (*step)(int, uint64_t, void*, int, int64_t, const int64_t*, void***) noexcept nogil
        const char* (*last_error)() noexcept nogil


cdef const gdfast_capi* _api = <const gdfast_capi*>PyCapsule_GetPointer(
    _core._C_API, b"gdfast._core._C_API")
if _api.abi_version != ABI_VERSION:  # a gdfast/_core.so from another build beside this module
    raise ImportError(f"gdfast.cython_api: built for C API version {ABI_VERSION}, "
                      f"gdfast._core has {_api.abi_version}")


cdef int step_v1(int rule, uint64_t layout, void* hyper, int dtype, int64_t count,
                 const int64_t* sizes, void*** roles) noexcept nogil:
    return _api.step(rule, layout, hyper, dtype, count, sizes, roles)


cdef const char* last_error() noexcept nogil:
    return _api.last_error()
