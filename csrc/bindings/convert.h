// Turns the tensor arguments of one optimizer call into a checked StepArgs. Every check
// (type, dtype, device, shape, contiguity, alignment, writability, list lengths, overlapping
// memory) runs before any kernel does, so a rejected call leaves every array untouched.
// Accepts NumPy arrays directly and any other object through the DLPack protocol.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "bindings/torch_tensor.h"
#include "core/dtype.h"
#include "core/step_args.h"

namespace gdfast::bindings {

namespace py = pybind11;

// One tensor argument of an op: a single array, or a list/tuple with one array per tensor.
struct TensorArg {
  const char* name;
  py::handle value;
  bool written;         // updated in place (must be writeable, must not overlap anything)
  bool master = false;  // the param's float32 master copy: checked like a state, kept apart
  // An 8-bit state's codes: the map (Quantized of core/step_args.h), else kNotQuantized.
  std::uint8_t quantized = 0;
  int absmax_of = -1;  // the blocks' absmax of the 8-bit state in this array slot (kept apart)
  bool extra() const { return master || absmax_of >= 0; }  // not one of the kernel's arrays
};

// A DLPack tensor this call consumed: its deleter runs when the call is over.
struct ConsumedDlpack {
  void* managed;
  bool versioned;
};

// How a batch's messages name its arrays: a prefix ("param_groups[1]: ") and, where the
// batch's list is a subset of the caller's, each entry's index in the caller's list.
struct BatchLabel {
  std::string prefix;
  py::object indices;  // a tuple of ints, read only for a message; None: an entry's own index
  std::string name(const char* arg, bool is_list, index_t index) const;  // without the prefix
};

// The memory one array of a batch spans, for the check that written arrays overlap nothing.
struct Extent {
  std::uintptr_t begin, end;
  bool written;
  const TensorArg* arg;
  bool is_list;
  index_t index;
  const BatchLabel* label;
  std::string who() const;   // "param_groups[1]: exp_avg[3]": the batch's prefix, the name
  std::string bare() const;  // "exp_avg[3]"
};

class TensorBatch {
 public:
  // Raises TypeError / ValueError naming the argument (e.g. "exp_avg[3]: ...", after `label`).
  // `stream` (None, or the consumer's CUDA stream as an int) is handed to __dlpack__. Overlap
  // between arrays is checked separately (check_disjoint), across every batch of a call.
  TensorBatch(std::vector<TensorArg> args, py::handle stream, BatchLabel label = {});
  ~TensorBatch();
  TensorBatch(const TensorBatch&) = delete;
  TensorBatch& operator=(const TensorBatch&) = delete;

  Dtype dtype() const { return dtype_; }  // the compute type: float32 or float64
  bool on_cuda() const { return on_cuda_; }
  int device_id() const { return device_id_; }
  StepArgs step_args() const {
    return {num_arrays_,
            num_tensors_,
            arrays_.data(),
            offsets_.data(),
            nullptr,
            0,
            stored_ ? &storage_ : nullptr};
  }
  // Where some array is stored narrower than float32 or a master copy is given: its storage
  // description, for the caller to complete (roles, rounding); else null.
  Storage* storage() { return stored_ ? &storage_ : nullptr; }
  const Storage* storage() const { return stored_ ? &storage_ : nullptr; }
  // The per-tensor keys of stochastic rounding, kept here for storage().keys to point at.
  std::vector<std::uint64_t>& rounding_keys() { return keys_; }
  const std::vector<Extent>& extents() const { return extents_; }

 private:
  void gather(py::handle stream);
  // Fills storage_ when some array is narrow or a master is given (after every check passed).
  void describe_storage(const std::vector<Dtype>& arg_dtypes, bool has_master, bool is_list);
  bool any_quantized() const;
  void release();  // calls each consumed DLPack tensor's deleter once

  std::vector<TensorArg> args_;
  BatchLabel label_;
  Dtype dtype_ = Dtype::kFloat32;
  bool on_cuda_ = false;
  int device_id_ = 0;
  int num_arrays_ = 0;
  index_t num_tensors_ = 0;
  std::vector<void*> arrays_;     // tensor-major, num_arrays_ per tensor
  std::vector<index_t> offsets_;  // num_tensors_ + 1
  bool stored_ = false;
  Storage storage_;
  std::vector<void*> masters_;  // per tensor, when a master copy is given
  std::vector<float*> absmax_;  // per tensor and array, when an 8-bit state is given
  std::vector<std::uint64_t> keys_;
  std::vector<ConsumedDlpack> consumed_;
  std::vector<TorchTensor> torch_tensors_;  // read without DLPack; their shapes live here
  std::vector<Extent> extents_;             // of the arrays with elements
  // Every argument's arrays, referenced until the call is over: another Python thread may
  // drop its own references while the GIL is released around the kernel.
  std::vector<py::object> keep_alive_;
};

// Raises ValueError naming both if a written array shares memory with any other array of the
// batches (read-only arrays may share memory with each other).
void check_disjoint(const std::vector<const TensorBatch*>& batches);

}  // namespace gdfast::bindings
