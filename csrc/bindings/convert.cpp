#include "bindings/convert.h"

#include <pybind11/numpy.h>

#include <algorithm>
#include <string>

namespace gdfast::bindings {
namespace {

using py::detail::npy_api;

struct NamedArg {
  const TensorArg* arg;
  bool is_list;
  index_t index;
  std::string str() const {
    return is_list ? std::string(arg->name) + "[" + std::to_string(index) + "]" : arg->name;
  }
};

[[noreturn]] void fail_type(const NamedArg& who, const std::string& what) {
  throw py::type_error(who.str() + ": " + what);
}
[[noreturn]] void fail_value(const NamedArg& who, const std::string& what) {
  throw py::value_error(who.str() + ": " + what);
}

std::string shape_str(const py::detail::PyArray_Proxy* a) {
  std::string s = "(";
  for (int d = 0; d < a->nd; ++d) s += (d > 0 ? ", " : "") + std::to_string(a->dimensions[d]);
  return s + (a->nd == 1 ? ",)" : ")");
}

bool same_shape(const py::detail::PyArray_Proxy* a, const py::detail::PyArray_Proxy* b) {
  return a->nd == b->nd && std::equal(a->dimensions, a->dimensions + a->nd, b->dimensions);
}

bool dtype_of(const py::detail::PyArray_Proxy* a, Dtype* out) {
  const auto* descr = py::detail::array_descriptor_proxy(a->descr);
  const bool native = descr->byteorder != '>';  // gdfast builds only for little-endian hosts
  if (native && descr->type_num == npy_api::NPY_FLOAT_) {
    *out = Dtype::kFloat32;
    return true;
  }
  if (native && descr->type_num == npy_api::NPY_DOUBLE_) {
    *out = Dtype::kFloat64;
    return true;
  }
  return false;
}

std::string describe_dtype(py::handle array) {
  return py::str(array.attr("dtype")).cast<std::string>();
}

struct Extent {
  std::uintptr_t begin, end;
  NamedArg who;
  bool written;
};

// Two arrays may share memory only if neither is written: one sweep over the extents sorted
// by start, tracking the furthest end seen (over all, and over written arrays).
void check_no_overlap(std::vector<Extent>& extents) {
  std::sort(extents.begin(), extents.end(),
            [](const Extent& a, const Extent& b) { return a.begin < b.begin; });
  const Extent* furthest = nullptr;
  const Extent* furthest_written = nullptr;
  for (const Extent& e : extents) {
    const Extent* clash = nullptr;
    if (furthest_written != nullptr && e.begin < furthest_written->end) clash = furthest_written;
    if (clash == nullptr && e.written && furthest != nullptr && e.begin < furthest->end) {
      clash = furthest;
    }
    if (clash != nullptr) {
      throw py::value_error(clash->who.str() + " and " + e.who.str() +
                            " share memory; each array must be distinct (an in-place update "
                            "would read what it has already written)");
    }
    if (furthest == nullptr || e.end > furthest->end) furthest = &e;
    if (e.written && (furthest_written == nullptr || e.end > furthest_written->end)) {
      furthest_written = &e;
    }
  }
}

}  // namespace

void require(py::handle value, const char* name, const char* why) {
  if (value.is_none()) throw py::value_error(std::string(name) + ": required when " + why);
}

TensorBatch::TensorBatch(std::initializer_list<TensorArg> args) {
  const auto& api = npy_api::get();
  num_arrays_ = static_cast<int>(args.size());
  const TensorArg& first = *args.begin();
  const bool is_list = !api.PyArray_Check_(first.value.ptr());

  // Per argument: the sequence of its arrays (a one-element view for a single array).
  std::vector<py::object> sequences;
  sequences.reserve(args.size());
  for (const TensorArg& arg : args) {
    if (is_list) {
      if (!PyList_Check(arg.value.ptr()) && !PyTuple_Check(arg.value.ptr())) {
        throw py::type_error(std::string(arg.name) + ": expected a list or tuple of arrays (as " +
                             first.name + " is), got " +
                             py::str(py::type::handle_of(arg.value).attr("__name__"))
                                 .cast<std::string>());
      }
      sequences.push_back(py::reinterpret_borrow<py::object>(arg.value));
    } else {
      sequences.push_back(py::make_tuple(arg.value));
    }
  }
  num_tensors_ = static_cast<index_t>(PySequence_Fast_GET_SIZE(sequences[0].ptr()));
  for (std::size_t k = 1; k < sequences.size(); ++k) {
    const auto n = static_cast<index_t>(PySequence_Fast_GET_SIZE(sequences[k].ptr()));
    if (n != num_tensors_) {
      throw py::value_error(std::string((args.begin() + k)->name) + ": has " + std::to_string(n) +
                            " entries but " + first.name + " has " + std::to_string(num_tensors_));
    }
  }

  arrays_.resize(static_cast<std::size_t>(num_tensors_ * num_arrays_));
  offsets_.resize(static_cast<std::size_t>(num_tensors_ + 1));
  offsets_[0] = 0;
  std::vector<Extent> extents;
  extents.reserve(arrays_.size());
  for (index_t t = 0; t < num_tensors_; ++t) {
    const py::detail::PyArray_Proxy* param = nullptr;
    for (int k = 0; k < num_arrays_; ++k) {
      const TensorArg& arg = *(args.begin() + k);
      const NamedArg who{&arg, is_list, t};
      PyObject* obj = PySequence_Fast_GET_ITEM(sequences[static_cast<std::size_t>(k)].ptr(), t);
      if (!api.PyArray_Check_(obj)) {
        fail_type(who, std::string("expected a numpy.ndarray, got ") + Py_TYPE(obj)->tp_name);
      }
      const auto* a = py::detail::array_proxy(obj);
      Dtype dtype;
      if (!dtype_of(a, &dtype)) {
        fail_type(who, "expected float32 or float64 (native byte order), got " +
                           describe_dtype(obj));
      }
      if (t == 0 && k == 0) dtype_ = dtype;
      if (dtype != dtype_) {
        fail_type(who, std::string("expected ") + dtype_name(dtype_) + " like " +
                           NamedArg{&first, is_list, 0}.str() + ", got " + dtype_name(dtype));
      }
      if (k == 0) {
        param = a;
      } else if (!same_shape(a, param)) {
        fail_value(who, "shape " + shape_str(a) + " does not match " +
                            NamedArg{&first, is_list, t}.str() + " shape " + shape_str(param));
      }
      if ((a->flags & npy_api::NPY_ARRAY_C_CONTIGUOUS_) == 0) {
        fail_value(who, "must be C-contiguous (use numpy.ascontiguousarray on a copy that "
                        "you then keep as the optimizer's array)");
      }
      if ((a->flags & npy_api::NPY_ARRAY_ALIGNED_) == 0) {
        fail_value(who, "must be aligned to its element size");
      }
      if (arg.written && (a->flags & npy_api::NPY_ARRAY_WRITEABLE_) == 0) {
        fail_value(who, "is read-only, but it is updated in place");
      }
      index_t size = 1;
      for (int d = 0; d < a->nd; ++d) size *= a->dimensions[d];
      arrays_[static_cast<std::size_t>(t * num_arrays_ + k)] = a->data;
      if (size > 0) {
        const auto begin = reinterpret_cast<std::uintptr_t>(a->data);
        const auto bytes = static_cast<std::uintptr_t>(size) * (dtype == Dtype::kFloat32 ? 4 : 8);
        extents.push_back({begin, begin + bytes, who, arg.written});
      }
      if (k == 0) offsets_[static_cast<std::size_t>(t + 1)] = offsets_[static_cast<std::size_t>(t)] + size;
    }
  }
  check_no_overlap(extents);
}

}  // namespace gdfast::bindings
