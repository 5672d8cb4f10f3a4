"""DLPack producers made by hand with ctypes (the DLPack ABI, dlpack.h v1.0, written here
independently of gdfast's csrc/bindings/dlpack.h), every field chosen by the test: for the
protocol tests, the fuzz run and the bad-input tests."""

from __future__ import annotations

import ctypes

import numpy as np

capsule_get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(
    ("PyCapsule_GetName", ctypes.pythonapi))
capsule_new = ctypes.PYFUNCTYPE(ctypes.py_object, ctypes.c_void_p, ctypes.c_char_p,
                                 ctypes.c_void_p)(("PyCapsule_New", ctypes.pythonapi))


def capsule_name(capsule) -> bytes:
    return capsule_get_name(capsule)


# The DLPack ABI (dlpack.h v1.0), written here independently of gdfast's csrc/bindings/dlpack.h.
class DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


DLDeleter = ctypes.CFUNCTYPE(None, ctypes.c_void_p)


class DLManagedTensor(ctypes.Structure):  # DLManagedTensor, capsule "dltensor"
    _fields_ = [("dl_tensor", DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", DLDeleter)]


class DLPackVersion(ctypes.Structure):
    _fields_ = [("major", ctypes.c_uint32), ("minor", ctypes.c_uint32)]


class DLManagedTensorVersioned(ctypes.Structure):  # capsule "dltensor_versioned"
    _fields_ = [("version", DLPackVersion), ("manager_ctx", ctypes.c_void_p),
                ("deleter", DLDeleter), ("flags", ctypes.c_uint64), ("dl_tensor", DLTensor)]


DL_CPU, DL_CUDA, DL_CUDA_HOST, DL_VULKAN = 1, 2, 3, 7
DL_INT, DL_FLOAT, DL_BFLOAT = 0, 2, 4
_FLAG_READ_ONLY = 1
# Capsule names must outlive the capsules: module constants.
_NAME = b"dltensor"
_NAME_VERSIONED = b"dltensor_versioned"


class Handmade:
    """A DLPack producer over NumPy memory, built with ctypes, with every field chosen by the
    test. The tensor gdfast sees starts ``byte_offset`` bytes into ``base``. Each capsule's
    deleter appends the managed struct's address to ``deleted``; ``made`` lists the address of
    every struct handed out. The capsules carry no destructor (so a capsule gdfast failed to
    consume is visible by its name, never silently released)."""

    def __init__(self, base: np.ndarray, *, shape=None, strides=None, byte_offset=0,
                 versioned=True, read_only=False, device=(DL_CPU, 0), dtype=None,
                 version=(1, 0), device_hint=None, ndim=None):
        self.base = base
        self.shape = tuple(base.shape if shape is None else shape)
        self.ndim = len(self.shape) if ndim is None else ndim  # a liar may claim another
        self.strides = strides
        self.byte_offset = byte_offset
        self.versioned = versioned
        self.read_only = read_only
        self.device = device
        self.device_hint = device if device_hint is None else device_hint
        if dtype is None:
            dtype = (DL_FLOAT, base.dtype.itemsize * 8, 1)
        self.dtype = dtype
        self.version = version
        self.made = []
        self.deleted = []
        self.capsules = []
        self.requests = []
        self._alive = []
        self._deleter = DLDeleter(self.deleted.append)

    def __dlpack__(self, *, stream=None, max_version=None, dl_device=None, copy=None):
        self.requests.append(max_version)
        shape = (ctypes.c_int64 * max(len(self.shape), 1))(*self.shape)
        strides = None
        if self.strides is not None:
            strides = (ctypes.c_int64 * len(self.strides))(*self.strides)
        t = DLTensor(data=self.base.ctypes.data, device=DLDevice(*self.device),
                    ndim=self.ndim, dtype=DLDataType(*self.dtype),
                    shape=ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64)),
                    strides=None if strides is None else ctypes.cast(
                        strides, ctypes.POINTER(ctypes.c_int64)),
                    byte_offset=self.byte_offset)
        if self.versioned and max_version is not None and tuple(max_version) >= (1, 0):
            managed = DLManagedTensorVersioned(version=DLPackVersion(*self.version),
                                               deleter=self._deleter,
                                               flags=_FLAG_READ_ONLY if self.read_only else 0,
                                               dl_tensor=t)
            name = _NAME_VERSIONED
        else:
            managed = DLManagedTensor(dl_tensor=t, deleter=self._deleter)
            name = _NAME
        self._alive.append((managed, shape, strides))
        self.made.append(ctypes.addressof(managed))
        capsule = capsule_new(ctypes.addressof(managed), name, None)
        self.capsules.append(capsule)
        return capsule

    def __dlpack_device__(self):
        return self.device_hint

    def check_released(self):
        """Every capsule handed out was consumed and its deleter called exactly once."""
        assert sorted(self.deleted) == sorted(self.made), "deleter not called exactly once"
        for capsule in self.capsules:
            assert capsule_name(capsule).startswith(b"used_"), capsule_name(capsule)


def handmade_view(n, *, byte_offset=0, dtype=np.float32, fill=0.0, **kwargs):
    """A Handmade producer of n elements starting byte_offset bytes into its own buffer, and
    the NumPy view of exactly those elements."""
    item = np.dtype(dtype).itemsize
    pad = -(-byte_offset // item)
    base = np.full(n + pad + 1, -7.0, dtype=dtype)  # -7: a sentinel outside the tensor
    view = base.view(np.uint8)[byte_offset:byte_offset + n * item].view(dtype)
    view[...] = fill
    return Handmade(base, shape=(n,), byte_offset=byte_offset, **kwargs), view
