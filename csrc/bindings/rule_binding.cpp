#include "bindings/rule_binding.h"

#include <pybind11/numpy.h>

#include <limits>
#include <string>

#include "core/rounding.h"

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

namespace {

std::uint64_t to_uint64(py::handle value, const std::string& name) {
  if (PyBool_Check(value.ptr()) || !PyLong_Check(value.ptr())) {
    throw py::type_error(name + ": expected an int, got " + Py_TYPE(value.ptr())->tp_name);
  }
  const unsigned long long x = PyLong_AsUnsignedLongLong(value.ptr());
  if (x == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
    PyErr_Clear();
    throw py::value_error(name + ": expected an int in [0, 2**64), got " +
                          py::repr(value).cast<std::string>());
  }
  return x;
}

}  // namespace

Precision to_precision(py::handle value, const std::string& prefix) {
  Precision p;
  p.master = py::none();
  p.keys = py::none();
  p.absmax = py::none();
  if (!value || value.is_none()) return p;
  const Py_ssize_t size = PyTuple_Check(value.ptr()) ? PyTuple_GET_SIZE(value.ptr()) : 0;
  const bool with_count = size == 4 || size == 5;
  PyObject* const* items = tuple_items(value,
                                       size == 5    ? 5
                                       : with_count ? 4
                                                    : 3,
                                       (prefix + "precision").c_str());
  if (size == 5) p.absmax = items[4];
  p.master = items[0];
  if (items[1] != Py_None) {
    p.stochastic = true;
    p.seed = to_uint64(items[1], prefix + "seed");
  }
  p.keys = items[2];
  if (with_count && items[3] != Py_None) {
    p.has_count = true;
    p.count = to_uint64(items[3], prefix + "rounding count");
  }
  if (p.stochastic && !p.master.is_none()) {
    throw py::value_error(prefix +
                          "stochastic_rounding: not with master_param (the param is its master "
                          "copy rounded to nearest)");
  }
  return p;
}

void set_rounding(TensorBatch& batch, const Precision& precision, const unsigned char* roles,
                  index_t step, const std::string& prefix) {
  const index_t n = batch.step_args().num_tensors;
  std::vector<std::uint64_t>& keys = batch.rounding_keys();
  keys.resize(static_cast<std::size_t>(n));
  if (precision.keys.is_none()) {
    for (index_t t = 0; t < n; ++t)
      keys[static_cast<std::size_t>(t)] = static_cast<std::uint64_t>(t);
  } else {
    const bool sequence = PyList_Check(precision.keys.ptr()) || PyTuple_Check(precision.keys.ptr());
    const auto given = py::reinterpret_steal<py::object>(
        sequence ? PySequence_Tuple(precision.keys.ptr()) : PyTuple_Pack(1, precision.keys.ptr()));
    if (!given) throw py::error_already_set();
    if (PyTuple_GET_SIZE(given.ptr()) != n) {
      throw py::value_error(prefix + "param_index: expected " + std::to_string(n) +
                            " entries (one per tensor), got " +
                            std::to_string(PyTuple_GET_SIZE(given.ptr())));
    }
    for (index_t t = 0; t < n; ++t) {
      keys[static_cast<std::size_t>(t)] =
          to_uint64(PyTuple_GET_ITEM(given.ptr(), t),
                    prefix + (sequence ? "param_index[" + std::to_string(t) + "]" : "param_index"));
    }
  }
  Storage* storage = batch.storage();
  if (storage == nullptr || !precision.stochastic) return;  // nothing to round stochastically
  for (int k = 0; k < Storage::kMaxArrays; ++k) storage->role[k] = roles[k];
  storage->stochastic = true;
  storage->seed = precision.seed;
  storage->step = precision.has_count ? precision.count : static_cast<std::uint64_t>(step);
  storage->keys = keys.data();
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
    // (a.storage: stored narrower than the float32 it computes in)
    if (one.dtype() != Dtype::kFloat32 || a.storage != nullptr || a.offsets[1] != 1 ||
        !one.on_cuda() || one.device_id() != batch.device_id()) {
      throw py::value_error(std::string(names[i]) +
                            ": expected a 1-element float32 tensor on the device of the params");
    }
    *slots[i] = static_cast<const float*>(a.arrays[0]);
  }
}

double* to_monitor(py::handle hyper, std::size_t num_fields, const TensorBatch& batch,
                   const std::string& prefix, bool two_pass) {
  if (static_cast<std::size_t>(PyTuple_GET_SIZE(hyper.ptr())) != num_fields + 4) return nullptr;
  const py::handle given = PyTuple_GET_ITEM(hyper.ptr(), num_fields + 3);
  if (given.is_none()) return nullptr;
  if (batch.on_cuda() && batch.storage() != nullptr && !two_pass) {
    throw py::value_error(prefix +
                          "monitor: on CUDA, float32 or float64 arrays only (not narrow "
                          "params, grads or states, a master copy or 8-bit states)");
  }
  if (!py::isinstance<py::array_t<double>>(given)) {
    throw py::type_error("monitor: expected a float64 NumPy array of 3 sums");
  }
  auto sums = py::reinterpret_borrow<py::array_t<double>>(given);
  if (sums.size() != kMonitorSums || !sums.writeable() ||
      (sums.flags() & py::array::c_style) == 0) {
    throw py::value_error("monitor: expected a writeable contiguous array of 3 sums");
  }
  return sums.mutable_data();
}

double to_grad_bound(py::handle hyper, std::size_t num_fields, double grad_scale,
                     const TensorBatch& batch, const std::string& prefix) {
  if (static_cast<std::size_t>(PyTuple_GET_SIZE(hyper.ptr())) < num_fields + 3) {
    return std::numeric_limits<double>::infinity();
  }
  const py::handle given = PyTuple_GET_ITEM(hyper.ptr(), num_fields + 2);
  const double value = to_real(given, (prefix + "max_grad_value").c_str());
  if (!(value >= 0.0)) {
    throw py::value_error(prefix + "max_grad_value: expected a number >= 0, got " +
                          py::repr(given).cast<std::string>());
  }
  if (value == std::numeric_limits<double>::infinity()) return value;
  if (batch.dtype() == Dtype::kFloat64) return value * grad_scale;
  // float32 as a cast rounds it, with no undefined cast beyond float's range (from FLT_MAX plus
  // half its ulp on, a cast rounds to +inf).
  const auto to_float = [](double x) {
    return x >= 0x1.ffffffp127 ? std::numeric_limits<float>::infinity() : static_cast<float>(x);
  };
  const Storage* storage = batch.storage();
  const Dtype type = storage != nullptr ? storage->slot[1] : Dtype::kFloat32;
  float bound = to_float(value);
  if (type == Dtype::kBfloat16) {
    bound = rounding::widen_bf16(rounding::bf16_nearest(bound));
  } else if (type == Dtype::kFloat16) {
    bound = rounding::widen_f16(rounding::narrow_f16<false>(bound, 0));
  }
  return to_float(static_cast<double>(bound) * grad_scale);
}

}  // namespace gdfast::bindings
