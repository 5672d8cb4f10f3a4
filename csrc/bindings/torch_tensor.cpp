#include "bindings/torch_tensor.h"

#include <pybind11/pybind11.h>

#include <memory>

namespace gdfast::bindings {
namespace {

namespace py = pybind11;

// torch's types and dtypes, looked up once torch is imported (never imported from here), and
// the interned names of what is read of a tensor. All kept for the process, as torch is.
struct Torch {
  PyObject* tensor = nullptr;
  PyObject* parameter = nullptr;
  PyObject* dtypes[5] = {};  // in the order of kDtypes
  PyObject *is_cpu, *is_cuda, *requires_grad, *dtype, *is_contiguous, *is_neg, *is_inference,
      *shape, *data_ptr, *get_device;
};
constexpr Dtype kDtypes[5] = {Dtype::kFloat32, Dtype::kFloat64, Dtype::kBfloat16, Dtype::kFloat16,
                              Dtype::kUint8};

const Torch* torch_types() {
  static Torch found;
  if (found.tensor != nullptr) return &found;
  PyObject* torch = PyImport_GetModule(py::str("torch").ptr());
  if (torch == nullptr) {
    PyErr_Clear();
    return nullptr;
  }
  const py::module_ m = py::reinterpret_steal<py::module_>(torch);
  const auto keep = [](py::object o) { return o.release().ptr(); };
  Torch t;
  t.parameter = keep(m.attr("nn").attr("Parameter"));
  const char* dtype_names[5] = {"float32", "float64", "bfloat16", "float16", "uint8"};
  for (int i = 0; i < 5; ++i) t.dtypes[i] = keep(m.attr(dtype_names[i]));
  t.is_cpu = PyUnicode_InternFromString("is_cpu");
  t.is_cuda = PyUnicode_InternFromString("is_cuda");
  t.requires_grad = PyUnicode_InternFromString("requires_grad");
  t.dtype = PyUnicode_InternFromString("dtype");
  t.is_contiguous = PyUnicode_InternFromString("is_contiguous");
  t.is_neg = PyUnicode_InternFromString("is_neg");
  t.is_inference = PyUnicode_InternFromString("is_inference");
  t.shape = PyUnicode_InternFromString("shape");
  t.data_ptr = PyUnicode_InternFromString("data_ptr");
  t.get_device = PyUnicode_InternFromString("get_device");
  t.tensor = keep(m.attr("Tensor"));  // last: it marks the lookup done
  found = t;
  return &found;
}

py::object checked(PyObject* result) {
  if (result == nullptr) throw py::error_already_set();
  return py::reinterpret_steal<py::object>(result);
}
py::object get(PyObject* obj, PyObject* name) { return checked(PyObject_GetAttr(obj, name)); }
py::object call(PyObject* obj, PyObject* name) {
  return checked(PyObject_CallMethodObjArgs(obj, name, nullptr));
}
bool truth(const py::object& value) {
  const int result = PyObject_IsTrue(value.ptr());
  if (result < 0) throw py::error_already_set();
  return result == 1;
}

}  // namespace

bool is_plain_torch_tensor(PyObject* obj) {
  const Torch* torch = torch_types();
  if (torch == nullptr) return false;
  const auto* type = reinterpret_cast<PyObject*>(Py_TYPE(obj));
  return type == torch->tensor || type == torch->parameter;
}

bool read_torch(PyObject* obj, bool written, bool cuda, TorchTensor& out, bool likely_cuda) {
  if (!is_plain_torch_tensor(obj)) return false;
  const Torch& torch = *torch_types();
  // (neither: meta, XPU, MPS, ... tensors, which DLPack refuses or names). Each read costs
  // about 0.1 us, a tenth of reading a tensor: the likelier device is asked first.
  const auto on_cuda = [&] { return cuda && truth(get(obj, torch.is_cuda)); };
  if (likely_cuda && on_cuda()) {
    out.device = call(obj, torch.get_device).cast<int>();
  } else if (truth(get(obj, torch.is_cpu))) {
    out.device = -1;
  } else if (!likely_cuda && on_cuda()) {
    out.device = call(obj, torch.get_device).cast<int>();
  } else {
    return false;
  }
  if (truth(get(obj, torch.requires_grad))) return false;
  const py::object dtype = get(obj, torch.dtype);
  int which = 0;
  while (which < 5 && dtype.ptr() != torch.dtypes[which]) ++which;
  if (which == 5 || !truth(call(obj, torch.is_contiguous)) || truth(call(obj, torch.is_neg))) {
    return false;
  }
  if (written && truth(call(obj, torch.is_inference))) return false;
  const py::object shape = get(obj, torch.shape);  // a torch.Size: a tuple of ints
  if (!PyTuple_Check(shape.ptr())) return false;
  const Py_ssize_t ndim = PyTuple_GET_SIZE(shape.ptr());
  out.shape.resize(static_cast<std::size_t>(ndim));
  for (Py_ssize_t d = 0; d < ndim; ++d) {
    out.shape[static_cast<std::size_t>(d)] =
        py::handle(PyTuple_GET_ITEM(shape.ptr(), d)).cast<std::int64_t>();
  }
  out.data = reinterpret_cast<void*>(call(obj, torch.data_ptr).cast<std::uintptr_t>());
  out.dtype = kDtypes[which];
  return true;
}

namespace {
constexpr const char* kTorchViewName = "gdfast.TorchView";
}  // namespace

const TorchView* as_torch_view(PyObject* obj) {
  if (!PyCapsule_CheckExact(obj) || !PyCapsule_IsValid(obj, kTorchViewName)) return nullptr;
  return static_cast<const TorchView*>(PyCapsule_GetPointer(obj, kTorchViewName));
}

void register_torch_view(py::module_& m) {
  m.def(
      "torch_view",
      [](py::handle tensor) -> py::object {
        auto view = std::make_unique<TorchView>();
        if (!read_torch(tensor.ptr(), true, true, view->info, false)) return py::none();
        view->tensor = py::reinterpret_borrow<py::object>(tensor);
        PyObject* capsule = PyCapsule_New(view.get(), kTorchViewName, [](PyObject* self) {
          delete static_cast<TorchView*>(PyCapsule_GetPointer(self, kTorchViewName));
        });
        if (capsule == nullptr) throw py::error_already_set();
        view.release();  // (the capsule's destructor deletes it)
        return py::reinterpret_steal<py::object>(capsule);
      },
      py::arg("tensor"));
}

}  // namespace gdfast::bindings
