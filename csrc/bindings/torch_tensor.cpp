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
// (vectorcall: no bound method is made, a third of a method call's cost)
py::object call(PyObject* obj, PyObject* name) {
  PyObject* args[] = {obj};
  return checked(
      PyObject_VectorcallMethod(name, args, 1 | PY_VECTORCALL_ARGUMENTS_OFFSET, nullptr));
}
bool truth(const py::object& value) {
  const int result = PyObject_IsTrue(value.ptr());
  if (result < 0) throw py::error_already_set();
  return result == 1;
}
long long integer(const py::object& value) {
  const long long x = PyLong_AsLongLong(value.ptr());
  if (x == -1 && PyErr_Occurred()) throw py::error_already_set();
  return x;
}

// The index of `dtype` in kDtypes, or 5.
int dtype_index(const Torch& torch, PyObject* dtype) {
  int which = 0;
  while (which < 5 && dtype != torch.dtypes[which]) ++which;
  return which;
}

bool read_plain(PyObject* obj, bool written, bool cuda, TorchTensor& out, bool likely_cuda) {
  const Torch& torch = *torch_types();
  // (neither: meta, XPU, MPS, ... tensors, which DLPack refuses or names). Each read costs
  // about 0.05 us, a tenth of reading a tensor: the likelier device is asked first.
  const auto on_cuda = [&] { return cuda && truth(get(obj, torch.is_cuda)); };
  if (likely_cuda && on_cuda()) {
    out.device = static_cast<int>(integer(call(obj, torch.get_device)));
  } else if (truth(get(obj, torch.is_cpu))) {
    out.device = -1;
  } else if (!likely_cuda && on_cuda()) {
    out.device = static_cast<int>(integer(call(obj, torch.get_device)));
  } else {
    return false;
  }
  if (truth(get(obj, torch.requires_grad))) return false;
  const int which = dtype_index(torch, get(obj, torch.dtype).ptr());
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
        integer(py::reinterpret_borrow<py::object>(PyTuple_GET_ITEM(shape.ptr(), d)));
  }
  const py::object address = call(obj, torch.data_ptr);
  out.data = PyLong_AsVoidPtr(address.ptr());
  if (out.data == nullptr && PyErr_Occurred()) throw py::error_already_set();
  out.dtype = kDtypes[which];
  return true;
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
  try {
    return read_plain(obj, written, cuda, out, likely_cuda);
  } catch (const py::error_already_set&) {
    // a layout with no strides or storage (sparse CSR, MKL-DNN) raises on some read: DLPack's
    // path names what is wrong with it
    PyErr_Clear();
    return false;
  }
}

namespace {

constexpr const char* kTorchViewName = "gdfast.TorchView";

// A capsule owning `view`.
py::object capsule_of(std::unique_ptr<TorchView> view) {
  PyObject* capsule = PyCapsule_New(view.get(), kTorchViewName, [](PyObject* self) {
    delete static_cast<TorchView*>(PyCapsule_GetPointer(self, kTorchViewName));
  });
  if (capsule == nullptr) throw py::error_already_set();
  view.release();  // (the capsule's destructor deletes it)
  return py::reinterpret_steal<py::object>(capsule);
}

// The views of `grads` (a list), as a list, each a plain CPU or CUDA tensor of `dtype` (a
// torch.dtype) that read_torch takes, or None if any is not (the caller's slower path then copies,
// detaches or names it). One pass over the list in C++, where a Python loop checking each
// grad's dtype, layout, requires_grad and contiguity took about 0.3 us a grad besides the
// kernel call's own read of it.
py::object torch_grads(py::handle grads, py::handle dtype) {
  const Torch* torch = torch_types();
  if (torch == nullptr || !PyList_Check(grads.ptr())) return py::none();
  const int which = dtype_index(*torch, dtype.ptr());
  if (which == 5) return py::none();
  // A snapshot: the attribute reads below run Python code, which could change the list.
  PyObject* snapshot = PySequence_Tuple(grads.ptr());
  if (snapshot == nullptr) throw py::error_already_set();
  const auto items = py::reinterpret_steal<py::tuple>(snapshot);
  const Py_ssize_t n = PyTuple_GET_SIZE(items.ptr());
  const py::list views(n);
  bool likely_cuda = false;
  for (Py_ssize_t k = 0; k < n; ++k) {
    PyObject* grad = PyTuple_GET_ITEM(items.ptr(), k);
    auto view = std::make_unique<TorchView>();
    if (!read_torch(grad, false, true, view->info, likely_cuda) ||
        view->info.dtype != kDtypes[which]) {
      return py::none();
    }
    likely_cuda = view->info.device >= 0;
    view->tensor = py::reinterpret_borrow<py::object>(grad);
    PyList_SET_ITEM(views.ptr(), k, capsule_of(std::move(view)).release().ptr());
  }
  return views;
}

// Per tensor of `tensors` (a list), its (data_ptr(), shape): what gdfast.torch's batches
// compare every step to catch a param whose .data was replaced or reshaped. About 0.1 us a
// tensor, a third of the same list made in Python.
py::object torch_identities(py::handle tensors) {
  const Torch* torch = torch_types();
  if (torch == nullptr || !PyList_Check(tensors.ptr())) {
    throw py::type_error("tensors: expected a list of torch tensors");
  }
  const Py_ssize_t n = PyList_GET_SIZE(tensors.ptr());
  const py::tuple out(n);
  for (Py_ssize_t k = 0; k < n; ++k) {
    PyObject* tensor = PyList_GET_ITEM(tensors.ptr(), k);
    PyObject* pair =
        PyTuple_Pack(2, call(tensor, torch->data_ptr).ptr(), get(tensor, torch->shape).ptr());
    PyTuple_SET_ITEM(out.ptr(), k, checked(pair).release().ptr());
  }
  return out;
}

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
        return capsule_of(std::move(view));
      },
      py::arg("tensor"));
  m.def("torch_grads", &torch_grads, py::arg("grads"), py::arg("dtype"));
  m.def("torch_identities", &torch_identities, py::arg("tensors"));
}

}  // namespace gdfast::bindings
