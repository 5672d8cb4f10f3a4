// A plain torch tensor read from its own attributes (about 1 µs) instead of exported through
// DLPack (about 15 µs of torch's Python code a tensor: a GPT-2-small AdamW step on an H100,
// 592 arrays, took 12.5 ms with the export and 2.1–2.4 ms without; its GPU work is 1.2 ms).
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "core/dtype.h"

namespace gdfast::bindings {

struct TorchTensor {
  void* data = nullptr;
  std::vector<std::int64_t> shape;
  Dtype dtype = Dtype::kFloat32;
  int device = -1;  // the CUDA device; -1: CPU memory
};

// Whether obj is a torch.Tensor or torch.nn.Parameter (exactly: a subclass may override
// anything) of an imported torch; false without raising if torch is not imported.
bool is_plain_torch_tensor(PyObject* obj);

// Fills `out` and returns true for a plain torch tensor in CPU memory (or, if `cuda`, on a
// CUDA device) that DLPack would export as it is: C-contiguous, float32/float64/bfloat16/
// float16, not requiring grad, no negative bit, and (if `written`) not an inference tensor.
// Returns false for anything else, for the DLPack path to take (its checks name what is wrong).
// `likely_cuda`: CUDA is asked about first (a batch on CUDA), else CPU.
bool read_torch(PyObject* obj, bool written, bool cuda, TorchTensor& out, bool likely_cuda);

// A param or state tensor read once, for gdfast.torch to hand the kernels on every step (its
// batches re-check each step that no tensor was replaced and no param's memory changed, as
// they do for the NumPy views of CPU tensors). Reading 592 tensors took about 600 us of a
// 950 us host step (GPT-2 small, CUDA).
struct TorchView {
  pybind11::object tensor;  // keeps the memory alive
  TorchTensor info;
};

// The view obj is, or null.
const TorchView* as_torch_view(PyObject* obj);

// _core.torch_view(tensor): a capsule holding the TorchView of a written tensor read_torch
// takes (CPU or CUDA), else None (the tensor then goes through the full read every step).
// _core.torch_grads(grads, dtype): a list of such capsules for a list of grads, all plain
// tensors of the param's torch dtype, else None.
// _core.torch_identities(tensors): each tensor's (data_ptr(), shape), as a tuple.
void register_torch_view(pybind11::module_& m);

}  // namespace gdfast::bindings
