#include "bindings/convert.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "bindings/dlpack.h"
#include "bindings/torch_tensor.h"
#include "core/quant8.h"

namespace gdfast::bindings {
namespace {

using py::detail::npy_api;

struct NamedArg {
  const TensorArg* arg;
  bool is_list;
  index_t index;
  const BatchLabel* label;
  std::string str() const { return label->prefix + bare(); }
  std::string bare() const { return label->name(arg->name, is_list, index); }  // in a message
};

[[noreturn]] void fail_type(const NamedArg& who, const std::string& what) {
  throw py::type_error(who.str() + ": " + what);
}
[[noreturn]] void fail_value(const NamedArg& who, const std::string& what) {
  throw py::value_error(who.str() + ": " + what);
}

// What the checks need to know of an array, whichever protocol it came through.
struct ArrayInfo {
  char* data = nullptr;
  int ndim = 0;
  const std::int64_t* shape = nullptr;
  bool dtype_ok = false;  // float32/64, bfloat16 or float16, native byte order, one lane
  Dtype dtype = Dtype::kFloat32;
  PyObject* numpy_array = nullptr;  // set for NumPy input: its dtype names itself in messages
  dlpack::DataType dlpack_dtype{};
  bool contiguous = false;
  bool aligned = false;  // to the element size
  bool writeable = false;
  std::int32_t device_type = dlpack::kDLCPU;
  std::int32_t device_id = 0;
};

static_assert(sizeof(std::int64_t) == sizeof(Py_ssize_t), "numpy dimensions are 64-bit here");

constexpr int kNpyHalf = 23;  // NPY_HALF, fixed by NumPy's ABI

// NumPy has no bfloat16: ml_dtypes registers one (a user dtype, kind 'V', type char 'E').
bool is_ml_dtypes_bfloat16(const py::detail::PyArrayDescr_Proxy* descr) {
  if (descr->kind != 'V' || descr->type != 'E' || descr->typeobj == nullptr) return false;
  const char* name = reinterpret_cast<PyTypeObject*>(descr->typeobj)->tp_name;
  const char* dot = std::strrchr(name, '.');
  if (std::strcmp(dot != nullptr ? dot + 1 : name, "bfloat16") != 0) return false;
  // (the element size, which NumPy 1 and 2 keep at different offsets of a descriptor)
  const auto size =
      py::reinterpret_borrow<py::object>(
          reinterpret_cast<PyObject*>(const_cast<py::detail::PyArrayDescr_Proxy*>(descr)))
          .attr("itemsize");
  return size.cast<int>() == 2;
}

ArrayInfo from_numpy(PyObject* obj) {
  const auto* a = py::detail::array_proxy(obj);
  const auto* descr = py::detail::array_descriptor_proxy(a->descr);
  ArrayInfo info;
  info.data = a->data;
  info.ndim = a->nd;
  info.shape = reinterpret_cast<const std::int64_t*>(a->dimensions);
  const bool native = descr->byteorder != '>';  // gdfast builds only for little-endian hosts
  if (native && descr->type_num == npy_api::NPY_FLOAT_) {
    info.dtype_ok = true;
  } else if (native && descr->type_num == npy_api::NPY_DOUBLE_) {
    info.dtype_ok = true;
    info.dtype = Dtype::kFloat64;
  } else if (descr->type_num == kNpyHalf) {
    info.dtype_ok = native;
    info.dtype = Dtype::kFloat16;
  } else if (descr->type_num == npy_api::NPY_UBYTE_) {
    info.dtype_ok = true;  // (only an 8-bit state's codes may be uint8: check_dtype)
    info.dtype = Dtype::kUint8;
  } else if (is_ml_dtypes_bfloat16(descr)) {
    info.dtype_ok = true;  // (a byte-swapped one is not a dtype ml_dtypes makes)
    info.dtype = Dtype::kBfloat16;
  }
  info.numpy_array = obj;
  info.contiguous = (a->flags & npy_api::NPY_ARRAY_C_CONTIGUOUS_) != 0;
  info.aligned = (a->flags & npy_api::NPY_ARRAY_ALIGNED_) != 0;
  info.writeable = (a->flags & npy_api::NPY_ARRAY_WRITEABLE_) != 0;
  return info;
}

std::string dlpack_dtype_text(const dlpack::DataType& t) {
  std::string name;
  switch (t.code) {
    case dlpack::kDLInt:
      name = "int";
      break;
    case dlpack::kDLUInt:
      name = "uint";
      break;
    case dlpack::kDLFloat:
      name = "float";
      break;
    case dlpack::kDLBfloat:
      name = "bfloat";
      break;
    case dlpack::kDLComplex:
      name = "complex";
      break;
    case dlpack::kDLBool:
      return "bool";
    default:
      name = "type code " + std::to_string(t.code) + " of ";
      break;
  }
  name += std::to_string(t.bits);
  return t.lanes == 1 ? name : name + "x" + std::to_string(t.lanes);
}

bool is_host(std::int32_t device_type) {
  return device_type == dlpack::kDLCPU || device_type == dlpack::kDLCUDAHost ||
         device_type == dlpack::kDLROCMHost;
}

std::string device_str(const ArrayInfo& a) {
  return is_host(a.device_type) ? std::string("cpu") : "cuda:" + std::to_string(a.device_id);
}

// CPU memory (pinned host memory included) for the CPU kernels; CUDA device memory for the
// CUDA kernels when this build has them. Every array of a call on the device of the first.
void check_device(const ArrayInfo& a, const NamedArg& who, const ArrayInfo* first,
                  const NamedArg& first_who) {
  const bool cuda = a.device_type == dlpack::kDLCUDA || a.device_type == dlpack::kDLCUDAManaged;
  if (!is_host(a.device_type) && !cuda) {
    fail_value(who, "is on DLPack device type " + std::to_string(a.device_type) +
                        ", which gdfast does not support (CPU and CUDA only)");
  }
#if !defined(GDFAST_HAVE_CUDA)
  if (cuda) {
    fail_value(who, "is on CUDA device " + std::to_string(a.device_id) +
                        ", but this gdfast build has no CUDA kernels (build it with "
                        "GDFAST_ENABLE_CUDA=ON); CPU tensors only");
  }
#endif
  const auto same_device = [](const ArrayInfo& x, const ArrayInfo& y) {
    return is_host(x.device_type) ? is_host(y.device_type)
                                  : !is_host(y.device_type) && x.device_id == y.device_id;
  };
  if (first != nullptr && !same_device(a, *first)) {
    fail_value(who, "is on " + device_str(a) + " but " + first_who.bare() + " is on " +
                        device_str(*first) + "; all arrays of one call must share a device");
  }
}

// Consumes obj.__dlpack__(): the capsule is renamed to "used_..." and its deleter recorded
// in `consumed`, to be called once when the call is over (the protocol's ownership rule).
// obj.__dlpack_device__(), which must be (device_type, device_id) of two ints in range.
void dlpack_device(py::handle obj, const NamedArg& who, ArrayInfo& where) {
  py::object device;
  try {
    device = obj.attr("__dlpack_device__")();
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_Exception)) throw;  // KeyboardInterrupt, SystemExit: as they are
    fail_value(who, "__dlpack_device__() raised " +
                        py::str(e.type().attr("__name__")).cast<std::string>() + ": " +
                        py::str(e.value()).cast<std::string>());
  }
  const std::string returned =
      "__dlpack_device__() returned " + py::repr(device).cast<std::string>();
  if (!PyTuple_Check(device.ptr()) || PyTuple_GET_SIZE(device.ptr()) != 2) {
    fail_type(who, returned + ", expected a (device_type, device_id) pair of ints");
  }
  std::int32_t parts[2];
  for (int i = 0; i < 2; ++i) {
    PyObject* item = PyTuple_GET_ITEM(device.ptr(), i);
    if (!PyLong_Check(item) || PyBool_Check(item)) {
      fail_type(who, returned + ", expected a (device_type, device_id) pair of ints");
    }
    int overflow = 0;
    const long long value = PyLong_AsLongLongAndOverflow(item, &overflow);
    if (overflow != 0 || value < 0 || value > INT32_MAX) {
      fail_value(
          who, returned + ", whose " + (i == 0 ? "device type" : "device id") + " is out of range");
    }
    parts[i] = static_cast<std::int32_t>(value);
  }
  where.device_type = parts[0];
  where.device_id = parts[1];
}

// torch tensors whose values DLPack cannot carry, or that torch forbids writing in place:
// a negative-bit view (torch._neg_view; DLPack exports the raw values, without the sign) and
// an inference tensor outside inference mode. Checked only where torch is already imported.
void check_torch_view(PyObject* obj, const NamedArg& who, bool written) {
  static PyObject* tensor_type = nullptr;
  if (tensor_type == nullptr) {
    PyObject* torch = PyImport_GetModule(py::str("torch").ptr());
    if (torch == nullptr) {
      PyErr_Clear();
      return;
    }
    tensor_type = PyObject_GetAttrString(torch, "Tensor");  // kept for the process
    Py_DECREF(torch);
    if (tensor_type == nullptr) throw py::error_already_set();
  }
  if (PyObject_IsInstance(obj, tensor_type) != 1) return;
  const py::handle t(obj);
  if (t.attr("is_neg")().cast<bool>()) {
    fail_value(who,
               "is a negative-bit view (torch._neg_view), which DLPack exports without "
               "its sign: pass .resolve_neg()");
  }
  if (written && t.attr("is_inference")().cast<bool>() &&
      !py::module_::import("torch").attr("is_inference_mode_enabled")().cast<bool>()) {
    fail_value(who,
               "is an inference tensor, which torch does not let anything update in place "
               "outside torch.inference_mode()");
  }
}

ArrayInfo from_dlpack(PyObject* obj, const NamedArg& who, bool written, py::handle stream,
                      std::vector<ConsumedDlpack>& consumed) {
  const py::handle h(obj);
  if (!py::hasattr(h, "__dlpack__")) {
    fail_type(who, std::string("expected a numpy.ndarray or a DLPack tensor (torch.Tensor, "
                               "cupy.ndarray, ...), got ") +
                       Py_TYPE(obj)->tp_name);
  }
  // The protocol has consumers ask the device first: it decides the stream argument (only
  // CUDA takes one), and a tensor this build cannot step is refused before it is exported.
  check_torch_view(obj, who, written);
  bool cuda_device = false;
  if (py::hasattr(h, "__dlpack_device__")) {
    ArrayInfo where;
    dlpack_device(h, who, where);
    check_device(where, who, nullptr, who);
    cuda_device = !is_host(where.device_type);
  }
  if (!cuda_device) stream = py::none();
  py::object capsule;
  try {
    const py::object method = h.attr("__dlpack__");
    try {
      capsule = stream.is_none() ? method(py::arg("max_version") = py::make_tuple(1, 0))
                                 : method(py::arg("stream") = stream,
                                          py::arg("max_version") = py::make_tuple(1, 0));
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_TypeError)) throw;
      // A producer that predates DLPack 1.0.
      capsule = stream.is_none() ? method() : method(py::arg("stream") = stream);
    }
  } catch (py::error_already_set& e) {
    if (!e.matches(PyExc_Exception)) throw;  // KeyboardInterrupt, SystemExit: as they are
    fail_value(who, std::string("could not be exported through DLPack: ") +
                        py::str(e.value()).cast<std::string>());
  }
  const char* name = PyCapsule_GetName(capsule.ptr());
  const bool versioned = name != nullptr && std::string(name) == dlpack::kCapsuleVersioned;
  if (!versioned && (name == nullptr || std::string(name) != dlpack::kCapsule)) {
    fail_type(who, "__dlpack__ returned something other than a DLPack capsule");
  }
  void* managed = PyCapsule_GetPointer(capsule.ptr(), name);
  if (managed == nullptr) throw py::error_already_set();
  consumed.push_back({managed, versioned});  // first: after the rename, the deleter is ours
  PyCapsule_SetName(capsule.ptr(),
                    versioned ? dlpack::kCapsuleVersionedUsed : dlpack::kCapsuleUsed);

  const dlpack::Tensor* t = nullptr;
  bool read_only = false;
  if (versioned) {
    const auto* mt = static_cast<const dlpack::ManagedTensorVersioned*>(managed);
    if (mt->version.major != 1) {
      fail_type(who, "DLPack major version " + std::to_string(mt->version.major) +
                         " is not supported (gdfast reads 1.x)");
    }
    t = &mt->dl_tensor;
    read_only = (mt->flags & dlpack::kFlagReadOnly) != 0;
  } else {
    t = &static_cast<const dlpack::ManagedTensor*>(managed)->dl_tensor;
  }

  if (t->ndim < 0 || (t->ndim > 0 && t->shape == nullptr)) {
    fail_value(who, "its DLPack tensor claims " + std::to_string(t->ndim) + " dimensions" +
                        (t->ndim > 0 ? " and no shape" : ""));
  }
  for (int d = 0; d < t->ndim; ++d) {
    if (t->shape[d] < 0) {
      fail_value(who, "its DLPack tensor claims extent " + std::to_string(t->shape[d]) +
                          " in dimension " + std::to_string(d));
    }
  }
  ArrayInfo info;
  info.data = static_cast<char*>(t->data) + t->byte_offset;
  info.ndim = t->ndim;
  info.shape = t->shape;
  info.device_type = t->device.device_type;
  info.device_id = t->device.device_id;
  const dlpack::DataType& dt = t->dtype;
  if (dt.code == dlpack::kDLFloat && dt.lanes == 1 &&
      (dt.bits == 16 || dt.bits == 32 || dt.bits == 64)) {
    info.dtype_ok = true;
    info.dtype = dt.bits == 16   ? Dtype::kFloat16
                 : dt.bits == 32 ? Dtype::kFloat32
                                 : Dtype::kFloat64;
  } else if (dt.code == dlpack::kDLBfloat && dt.lanes == 1 && dt.bits == 16) {
    info.dtype_ok = true;
    info.dtype = Dtype::kBfloat16;
  } else if (dt.code == dlpack::kDLUInt && dt.lanes == 1 && dt.bits == 8) {
    info.dtype_ok = true;
    info.dtype = Dtype::kUint8;
  }
  info.dlpack_dtype = dt;
  // Compact row-major; a dimension of extent 1 may carry any stride, and so may every
  // dimension of a tensor with no elements.
  info.contiguous = true;
  bool empty = false;
  for (int d = 0; d < t->ndim; ++d) empty = empty || t->shape[d] == 0;
  if (t->strides != nullptr && !empty) {
    std::int64_t expected = 1;
    for (int d = t->ndim - 1; d >= 0; --d) {
      if (t->shape[d] != 1 && t->strides[d] != expected) info.contiguous = false;
      expected *= t->shape[d];
    }
  }
  const auto element = static_cast<std::uintptr_t>(dt.bits / 8 > 0 ? dt.bits / 8 : 1);
  info.aligned = reinterpret_cast<std::uintptr_t>(info.data) % element == 0;
  info.writeable = !read_only;
  return info;
}

ArrayInfo from_torch(const TorchTensor& t) {
  ArrayInfo info;
  info.data = static_cast<char*>(t.data);
  info.ndim = static_cast<int>(t.shape.size());
  info.shape = t.shape.data();
  info.dtype_ok = true;
  info.dtype = t.dtype;
  info.dlpack_dtype = {static_cast<std::uint8_t>(t.dtype == Dtype::kBfloat16 ? dlpack::kDLBfloat
                                                 : t.dtype == Dtype::kUint8  ? dlpack::kDLUInt
                                                                             : dlpack::kDLFloat),
                       static_cast<std::uint8_t>(8 * dtype_size(t.dtype)), 1};
  info.contiguous = true;
  info.aligned =
      reinterpret_cast<std::uintptr_t>(t.data) % static_cast<std::uintptr_t>(dtype_size(t.dtype)) ==
      0;
  info.writeable = true;
  info.device_type = t.device < 0 ? dlpack::kDLCPU : dlpack::kDLCUDA;
  info.device_id = t.device < 0 ? 0 : t.device;
  return info;
}

std::string dtype_text(const ArrayInfo& a) {
  if (a.numpy_array != nullptr) {
    return py::str(py::handle(a.numpy_array).attr("dtype")).cast<std::string>();
  }
  return dlpack_dtype_text(a.dlpack_dtype);
}

std::string shape_str(const ArrayInfo& a) {
  std::string s = "(";
  for (int d = 0; d < a.ndim; ++d) s += (d > 0 ? ", " : "") + std::to_string(a.shape[d]);
  return s + (a.ndim == 1 ? ",)" : ")");
}

bool is_narrow(Dtype dtype) { return dtype == Dtype::kBfloat16 || dtype == Dtype::kFloat16; }

// The storage types an array may have: float64 goes only with float64; float32, bfloat16 and
// float16 with each other (the math is float32); a master copy is float32; every array of one
// argument (a list) has one type, that of its first (`list_dtype`, null for the first).
void check_dtype(Dtype dtype, Dtype compute, const TensorArg& arg, const NamedArg& who,
                 const Dtype* list_dtype, const NamedArg& param) {
  const std::string got = std::string(", got ") + dtype_name(dtype);
  if (arg.quantized != kNotQuantized) {
    if (dtype != Dtype::kUint8)
      fail_type(who, "expected uint8 (the codes of an 8-bit state)" + got);
    if (compute == Dtype::kFloat64) {
      fail_type(who, "8-bit states are for float32, bfloat16 and float16 params; " + param.bare() +
                         " is float64");
    }
    return;
  }
  if (dtype == Dtype::kUint8) {
    const bool state = arg.written && &arg != param.arg;
    fail_type(who,
              "expected float32, float64, bfloat16 or float16 (native byte order)" + got +
                  (state ? " (the uint8 codes of an 8-bit state need its blocks' absmax)" : ""));
  }
  if (arg.absmax_of >= 0) {
    if (dtype != Dtype::kFloat32) fail_type(who, "expected float32 (a block absmax)" + got);
    return;
  }
  if (arg.master) {  // (whether the param may have one is checked once all are gathered)
    if (dtype != Dtype::kFloat32)
      fail_type(who, "expected float32 (a master copy is float32)" + got);
    return;
  }
  if (compute == Dtype::kFloat64 && dtype != Dtype::kFloat64) {
    fail_type(who, "expected float64 like " + param.bare() + got);
  }
  if (compute == Dtype::kFloat32 && dtype == Dtype::kFloat64) {
    fail_type(who, "expected float32, bfloat16 or float16 like " + param.bare() + got);
  }
  if (list_dtype != nullptr && dtype != *list_dtype) {
    fail_type(who, std::string("expected ") + dtype_name(*list_dtype) + " like " +
                       NamedArg{who.arg, who.is_list, 0, who.label}.bare() + got);
  }
}

index_t element_count(const ArrayInfo& a) {
  index_t n = 1;
  for (int d = 0; d < a.ndim; ++d) n *= a.shape[d];
  return n;
}

// The blocks' absmax of an 8-bit state: one float32 per block of the param, in one dimension.
void check_absmax_shape(const ArrayInfo& a, const ArrayInfo& param, const NamedArg& who,
                        const NamedArg& param_who) {
  const index_t blocks = (element_count(param) + quant8::kBlock - 1) / quant8::kBlock;
  if (a.ndim != 1 || a.shape[0] != blocks) {
    fail_value(who, "shape " + shape_str(a) + ": expected (" + std::to_string(blocks) +
                        ",), one absmax per block of " + std::to_string(quant8::kBlock) +
                        " elements of " + param_who.bare());
  }
}

bool same_shape(const ArrayInfo& a, const ArrayInfo& b) {
  return a.ndim == b.ndim && std::equal(a.shape, a.shape + a.ndim, b.shape);
}

// The memory layout of the last call that passed the overlap check. Optimizers pass the same
// arrays every step; comparing against it is O(n) and allocates nothing, the check itself
// O(n log n). Read and written only while holding the GIL.
struct CheckedLayout {
  std::uintptr_t begin, end;
  bool written;
};
std::vector<CheckedLayout> g_last_checked_layout;

bool same_as_last_checked(const std::vector<const TensorBatch*>& batches) {
  std::size_t i = 0;
  for (const TensorBatch* b : batches) {
    for (const Extent& e : b->extents()) {
      if (i == g_last_checked_layout.size()) return false;
      const CheckedLayout& c = g_last_checked_layout[i++];
      if (c.begin != e.begin || c.end != e.end || c.written != e.written) return false;
    }
  }
  return i == g_last_checked_layout.size();
}

// Two arrays may share memory only if neither is written: one sweep over the extents sorted
// by start, tracking the furthest end seen (over all, and over written arrays). Sorts compact
// (start, index) keys rather than the extents: thousands of arrays per call are common.
void check_no_overlap(const std::vector<const Extent*>& extents) {
  std::vector<std::pair<std::uintptr_t, std::uint32_t>> order(extents.size());
  for (std::size_t i = 0; i < extents.size(); ++i) {
    order[i] = {extents[i]->begin, static_cast<std::uint32_t>(i)};
  }
  std::sort(order.begin(), order.end());
  const Extent* furthest = nullptr;
  const Extent* furthest_written = nullptr;
  for (const auto& key : order) {
    const Extent& e = *extents[key.second];
    const Extent* clash = nullptr;
    if (furthest_written != nullptr && e.begin < furthest_written->end) clash = furthest_written;
    if (clash == nullptr && e.written && furthest != nullptr && e.begin < furthest->end) {
      clash = furthest;
    }
    if (clash != nullptr) {
      const bool one_batch = clash->label == e.label;  // then its prefix once
      throw py::value_error(
          (one_batch ? clash->label->prefix + clash->bare() + " and " + e.bare()
                     : clash->who() + " and " + e.who()) +
          " share memory; each array must be distinct (an in-place update would read what it "
          "has already written)");
    }
    if (furthest == nullptr || e.end > furthest->end) furthest = &e;
    if (e.written && (furthest_written == nullptr || e.end > furthest_written->end)) {
      furthest_written = &e;
    }
  }
}

}  // namespace

TensorBatch::TensorBatch(std::vector<TensorArg> args, py::handle stream, BatchLabel label)
    : args_(std::move(args)), label_(std::move(label)) {
  try {
    gather(stream);
  } catch (...) {
    release();  // a throwing constructor runs no destructor: release DLPack tensors now
    throw;
  }
}

TensorBatch::~TensorBatch() { release(); }

void TensorBatch::release() {
  for (const ConsumedDlpack& c : consumed_) {
    if (c.versioned) {
      auto* mt = static_cast<dlpack::ManagedTensorVersioned*>(c.managed);
      if (mt->deleter != nullptr) mt->deleter(mt);
    } else {
      auto* mt = static_cast<dlpack::ManagedTensor*>(c.managed);
      if (mt->deleter != nullptr) mt->deleter(mt);
    }
  }
  consumed_.clear();
}

void TensorBatch::gather(py::handle stream) {
  const auto& api = npy_api::get();
  const std::vector<TensorArg>& args = args_;
  bool has_master = false;
  num_arrays_ = 0;  // (the extra arguments, master copy and absmax, come last)
  for (const TensorArg& arg : args) {
    has_master = has_master || arg.master;
    num_arrays_ += arg.extra() ? 0 : 1;
  }
  const TensorArg& first = args.front();
  const bool is_list = PyList_Check(first.value.ptr()) || PyTuple_Check(first.value.ptr());

  // A list of things that are not arrays as param is the caller's mistake, not grad's.
  if (is_list && PySequence_Fast_GET_SIZE(first.value.ptr()) > 0) {
    PyObject* item = PySequence_Fast_GET_ITEM(first.value.ptr(), 0);
    if (!api.PyArray_Check_(item) && !py::hasattr(item, "__dlpack__") &&
        as_torch_view(item) == nullptr) {
      fail_type(NamedArg{&first, true, 0, &label_},
                std::string("expected a numpy.ndarray or a DLPack tensor, got ") +
                    Py_TYPE(item)->tp_name);
    }
  }

  // Per argument: the sequence of its arrays (a one-element tuple for a single array), kept
  // for the whole call (see keep_alive_).
  std::vector<py::object>& sequences = keep_alive_;
  sequences.reserve(args.size());
  for (const TensorArg& arg : args) {
    const bool sequence = PyList_Check(arg.value.ptr()) || PyTuple_Check(arg.value.ptr());
    if (is_list && !sequence) {
      throw py::type_error(label_.prefix + arg.name + ": expected a list or tuple of arrays (as " +
                           first.name + " is), got " + Py_TYPE(arg.value.ptr())->tp_name);
    }
    // A tuple snapshot: code run below (__dlpack__) cannot resize what is being read.
    sequences.push_back(is_list
                            ? py::reinterpret_steal<py::object>(PySequence_Tuple(arg.value.ptr()))
                            : py::object(py::make_tuple(arg.value)));
    if (!sequences.back()) throw py::error_already_set();
  }
  num_tensors_ = static_cast<index_t>(PySequence_Fast_GET_SIZE(sequences[0].ptr()));
  for (std::size_t k = 1; k < sequences.size(); ++k) {
    const auto n = static_cast<index_t>(PySequence_Fast_GET_SIZE(sequences[k].ptr()));
    if (n != num_tensors_) {
      throw py::value_error(label_.prefix + args[k].name + ": has " + std::to_string(n) +
                            " entries but " + first.name + " has " + std::to_string(num_tensors_));
    }
  }

  arrays_.resize(static_cast<std::size_t>(num_tensors_ * num_arrays_));
  if (has_master) masters_.resize(static_cast<std::size_t>(num_tensors_));
  if (any_quantized()) absmax_.assign(arrays_.size(), nullptr);
  std::vector<Dtype> arg_dtypes(args.size());
  offsets_.assign(static_cast<std::size_t>(num_tensors_ + 1), 0);
  extents_.reserve(arrays_.size());
  ArrayInfo first_array;
  const NamedArg first_who{&first, is_list, 0, &label_};
  // torch tensors skip DLPack's export; on CUDA only where `stream` is torch's (the export
  // would only order torch's current stream before the kernel's, which it is).
  PyObject* const first_item =
      num_tensors_ > 0 ? PySequence_Fast_GET_ITEM(sequences[0].ptr(), 0) : nullptr;
  const bool torch_stream = first_item != nullptr && (is_plain_torch_tensor(first_item) ||
                                                      as_torch_view(first_item) != nullptr);
  for (index_t t = 0; t < num_tensors_; ++t) {
    ArrayInfo param;
    for (int k = 0; k < static_cast<int>(args.size()); ++k) {
      const TensorArg& arg = args[static_cast<std::size_t>(k)];
      const NamedArg who{&arg, is_list, t, &label_};
      PyObject* obj = PySequence_Fast_GET_ITEM(sequences[static_cast<std::size_t>(k)].ptr(), t);
      ArrayInfo a;
      if (api.PyArray_Check_(obj)) {
        a = from_numpy(obj);
      } else if (const TorchView* view = as_torch_view(obj)) {
        a = from_torch(view->info);
      } else if (read_torch(obj, arg.written, torch_stream, torch_tensors_.emplace_back(),
                            on_cuda_)) {
        a = from_torch(torch_tensors_.back());
      } else {
        a = from_dlpack(obj, who, arg.written, stream, consumed_);
      }
      const bool is_first = t == 0 && k == 0;
      check_device(a, who, is_first ? nullptr : &first_array, first_who);
      if (!a.dtype_ok) {
        fail_type(who, std::string(arg.quantized != kNotQuantized
                                       ? "expected uint8 (the codes of an 8-bit state)"
                                       : "expected float32, float64, bfloat16 or float16 (native "
                                         "byte order)") +
                           ", got " + dtype_text(a));
      }
      if (is_first) {
        first_array = a;
        on_cuda_ = !is_host(a.device_type);
        device_id_ = a.device_id;
        dtype_ = a.dtype == Dtype::kFloat64 ? Dtype::kFloat64 : Dtype::kFloat32;
      }
      check_dtype(a.dtype, dtype_, arg, who,
                  t == 0 ? nullptr : &arg_dtypes[static_cast<std::size_t>(k)], first_who);
      arg_dtypes[static_cast<std::size_t>(k)] = a.dtype;
      if (k == 0) {
        param = a;
      } else if (arg.absmax_of >= 0) {
        check_absmax_shape(a, param, who, NamedArg{&first, is_list, t, &label_});
      } else if (!same_shape(a, param)) {
        fail_value(who, "shape " + shape_str(a) + " does not match " +
                            NamedArg{&first, is_list, t, &label_}.bare() + " shape " +
                            shape_str(param));
      }
      if (!a.contiguous) {
        fail_value(who,
                   "must be C-contiguous (make a contiguous copy, e.g. with "
                   "numpy.ascontiguousarray, and keep that copy as the optimizer's array)");
      }
      if (!a.aligned) {
        fail_value(who,
                   "must be aligned to its element size (make an aligned copy, e.g. "
                   "numpy.require(a, requirements='CA'), and keep that copy)");
      }
      if (arg.written && !a.writeable) {
        fail_value(who, "is read-only, but it is updated in place");
      }
      index_t size = 1;
      for (int d = 0; d < a.ndim; ++d) {
        // A lying producer's shape must not wrap the byte count (2**60 elements of 8 bytes).
        if (a.shape[d] != 0 && size > (index_t{1} << 60) / a.shape[d]) {
          fail_value(who, "shape " + shape_str(a) + " has more elements than any array can");
        }
        size *= a.shape[d];
      }
      if (arg.master) {
        masters_[static_cast<std::size_t>(t)] = a.data;
      } else if (arg.absmax_of >= 0) {
        absmax_[static_cast<std::size_t>(t * num_arrays_ + arg.absmax_of)] =
            reinterpret_cast<float*>(a.data);
      } else {
        arrays_[static_cast<std::size_t>(t * num_arrays_ + k)] = a.data;
      }
      if (size > 0) {
        const auto begin = reinterpret_cast<std::uintptr_t>(a.data);
        const auto bytes =
            static_cast<std::uintptr_t>(size) * static_cast<std::uintptr_t>(dtype_size(a.dtype));
        extents_.push_back({begin, begin + bytes, arg.written, &arg, is_list, t, &label_});
      }
      if (k == 0) {
        offsets_[static_cast<std::size_t>(t + 1)] = offsets_[static_cast<std::size_t>(t)] + size;
      }
    }
  }
  if (num_tensors_ > 0) describe_storage(arg_dtypes, has_master, is_list);
}

void TensorBatch::describe_storage(const std::vector<Dtype>& arg_dtypes, bool has_master,
                                   bool is_list) {
  bool narrow = false;
  for (int k = 0; k < num_arrays_; ++k) narrow = narrow || is_narrow(arg_dtypes[k]);
  if (has_master && !is_narrow(arg_dtypes[0])) {
    const auto master =
        std::find_if(args_.begin(), args_.end(), [](const TensorArg& arg) { return arg.master; });
    fail_value(NamedArg{&*master, is_list, 0, &label_},
               std::string("a master copy is for a bfloat16 or float16 param; param is ") +
                   dtype_name(arg_dtypes[0]));
  }
  stored_ = narrow || has_master || any_quantized();
  if (!stored_) return;
  if (num_arrays_ > Storage::kMaxArrays) {
    throw py::value_error(label_.prefix + "too many arrays per tensor for narrow storage");
  }
  for (int k = 0; k < num_arrays_; ++k) storage_.slot[k] = arg_dtypes[static_cast<std::size_t>(k)];
  storage_.masters = has_master ? masters_.data() : nullptr;
  for (std::size_t k = 0; k < args_.size(); ++k) {
    const TensorArg& arg = args_[k];
    if (arg.quantized == kNotQuantized) continue;
    storage_.quantized[k] = arg.quantized;
    storage_.any_quantized = true;
  }
  if (storage_.any_quantized) storage_.absmax = absmax_.data();
}

bool TensorBatch::any_quantized() const {
  return std::any_of(args_.begin(), args_.end(),
                     [](const TensorArg& arg) { return arg.quantized != kNotQuantized; });
}

void check_disjoint(const std::vector<const TensorBatch*>& batches) {
  if (same_as_last_checked(batches)) return;
  std::vector<const Extent*> extents;
  for (const TensorBatch* b : batches) {
    for (const Extent& e : b->extents()) extents.push_back(&e);
  }
  if (extents.size() < 2) return;  // (and keeps the cached layout of the real batches)
  check_no_overlap(extents);
  g_last_checked_layout.clear();
  for (const Extent* e : extents) g_last_checked_layout.push_back({e->begin, e->end, e->written});
}

std::string Extent::who() const { return NamedArg{arg, is_list, index, label}.str(); }
std::string Extent::bare() const { return NamedArg{arg, is_list, index, label}.bare(); }

std::string BatchLabel::name(const char* arg, bool is_list, index_t index) const {
  if (!is_list) return arg;
  index_t shown = index;
  if (indices && PyTuple_Check(indices.ptr()) && index < PyTuple_GET_SIZE(indices.ptr())) {
    const long long mapped = PyLong_AsLongLong(PyTuple_GET_ITEM(indices.ptr(), index));
    if (mapped == -1 && PyErr_Occurred()) {
      PyErr_Clear();  // not an int: the batch's own index
    } else {
      shown = static_cast<index_t>(mapped);
    }
  }
  return std::string(arg) + "[" + std::to_string(shown) + "]";
}

}  // namespace gdfast::bindings
