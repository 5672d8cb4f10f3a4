#include "bindings/rule_binding.h"

#include <string>

namespace gdfast::bindings {

double to_real(py::handle value, const char* name) {
  const double x = PyFloat_AsDouble(value.ptr());
  if (x == -1.0 && PyErr_Occurred()) {
    const bool overflow = PyErr_ExceptionMatches(PyExc_OverflowError);
    PyErr_Clear();
    if (overflow) throw py::value_error(std::string(name) + ": too large for a double");
    throw py::type_error(std::string(name) + ": expected a real number, got " +
                         Py_TYPE(value.ptr())->tp_name);
  }
  return x;
}

bool to_flag(py::handle value, const char* name) {
  const int truth = PyObject_IsTrue(value.ptr());
  if (truth < 0) {
    PyErr_Clear();
    throw py::type_error(std::string(name) + ": expected a bool, got " +
                         Py_TYPE(value.ptr())->tp_name);
  }
  return truth != 0;
}

index_t to_step(py::handle value) {
  int overflow = 0;
  const long long step = PyLong_AsLongLongAndOverflow(value.ptr(), &overflow);
  if (step == -1 && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::type_error(std::string("step: expected an int, got ") +
                         Py_TYPE(value.ptr())->tp_name);
  }
  if (overflow != 0) throw py::value_error("step: too large for a 64-bit integer");
  return static_cast<index_t>(step);
}

BatchLabel to_label(py::handle value) {
  BatchLabel label;
  if (!value || value.is_none()) return label;
  if (PyUnicode_Check(value.ptr())) {
    label.prefix = py::str(value);
    return label;
  }
  PyObject* const* parts = tuple_items(value, 2, "label");
  label.prefix = py::str(parts[0]);
  label.indices = py::reinterpret_borrow<py::object>(parts[1]);
  return label;
}

PyObject* const* tuple_items(py::handle value, std::size_t size, const char* what) {
  if (!PyTuple_Check(value.ptr())) {
    throw py::type_error(std::string(what) + ": expected a tuple, got " +
                         Py_TYPE(value.ptr())->tp_name);
  }
  const auto n = static_cast<std::size_t>(PyTuple_GET_SIZE(value.ptr()));
  if (n != size) {
    throw py::value_error(std::string(what) + ": expected " + std::to_string(size) +
                          " entries, got " + std::to_string(n));
  }
  return &PyTuple_GET_ITEM(value.ptr(), 0);
}

DeviceScalarArgs::DeviceScalarArgs(py::handle scalars, const TensorBatch& batch,
                                   py::handle stream) {
  if (scalars.is_none()) return;
  if (!batch.on_cuda()) {
    throw py::value_error(
        "device scalars (tensor-valued grad_scale, found_inf, lr, step) are for CUDA tensors; "
        "pass numbers for CPU ones");
  }
  PyObject* const* items = tuple_items(scalars, 4, "device_scalars");
  const char* names[] = {"grad_scale", "found_inf", "lr", "step"};
  const float** slots[] = {&values.grad_scale, &values.found_inf, &values.lr, &values.step};
  for (std::size_t i = 0; i < 4; ++i) {
    if (items[i] == Py_None) continue;
    owners_.push_back(std::make_unique<TensorBatch>(
        std::vector<TensorArg>{{names[i], py::handle(items[i]), false}}, stream));
    const TensorBatch& one = *owners_.back();
    const StepArgs a = one.step_args();
    if (one.dtype() != Dtype::kFloat32 || a.offsets[1] != 1 || !one.on_cuda() ||
        one.device_id() != batch.device_id()) {
      throw py::value_error(std::string(names[i]) +
                            ": expected a 1-element float32 tensor on the device of the params");
    }
    *slots[i] = static_cast<const float*>(a.arrays[0]);
  }
}

}  // namespace gdfast::bindings
