// How any rule of optimizers.def is called from Python, generated from its declarations
// (optim/describe.h): hyperparameters from a tuple in field order (then step, grad_scale), the
// arrays of each batch from (param, inputs, states, hyper, label), and a description for the
// Python registry. Every batch of a call is checked before any kernel runs.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <memory>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "bindings/convert.h"
#include "cpu/dispatch.h"
#include "cuda/api.h"
#include "optim/registry.h"
#include "optim/rule_traits.h"

namespace gdfast::bindings {

// Conversions naming the argument in their TypeError/ValueError (rule_binding.cpp).
double to_real(py::handle value, const char* name);
bool to_flag(py::handle value, const char* name);
index_t to_step(py::handle value);
// A batch's label: None, a prefix (str), or (prefix, each entry's index in the caller's list).
BatchLabel to_label(py::handle value);
// The items of `value`, which must be a tuple of `size` (borrowed: valid while it lives).
PyObject* const* tuple_items(py::handle value, std::size_t size, const char* what);

// A call's precision options: the params' float32 master copies, and how narrowed stores
// round, and which states are 8-bit. From None, or (master, seed, keys[, count[, absmax]])
// (see rule_binding.cpp).
struct Precision {
  py::handle master;  // None: no master copies
  bool stochastic = false;
  std::uint64_t seed = 0;
  py::handle keys;  // None: each tensor's position in its list
  bool has_count = false;
  std::uint64_t count = 0;  // keys the rounding streams (else the hyperparameters' step)
  // None, or per state of the rule: None, or the blocks' absmax of that state, given as
  // uint8 codes (8-bit blockwise states, core/quant8.h).
  py::handle absmax;
};
Precision to_precision(py::handle value, const std::string& prefix);
// Completes a narrow batch's storage description: each written array's rounding role (0 the
// param, 1 + k state k), and stochastic rounding's seed, count and per-tensor keys.
void set_rounding(TensorBatch& batch, const Precision& precision, const unsigned char* roles,
                  index_t step, const std::string& prefix);
// The call's bound of clipping by value (StepArgs::grad_bound): the hyper tuple's optional entry
// after step and grad_scale (max_grad_value; +inf when absent), rounded to the gradients'
// storage type as torch.clamp rounds it, times grad_scale (it bounds the gradients as stored).
double to_grad_bound(py::handle hyper, std::size_t num_fields, double grad_scale,
                     const TensorBatch& batch, const std::string& prefix);
// Monitoring (StepArgs::monitor): the hyper tuple's optional entry after max_grad_value, a
// writeable float64 NumPy array of 3 that the step adds its sums of squares to; null when absent.
// On CUDA, narrow arrays and master copies are monitored by the two-pass loops only.
double* to_monitor(py::handle hyper, std::size_t num_fields, const TensorBatch& batch,
                   const std::string& prefix, bool two_pass);

// "<state>_absmax": how messages name the blocks' absmax of each state of a rule.
template <class Rule>
const std::string* absmax_names() {
  static const auto names = [] {
    std::vector<std::string> out;
    for (const optim::StateSpec& spec : Rule::kStates)
      out.push_back(std::string(spec.name) + "_absmax");
    return out;
  }();
  return names.data();
}

using optim::HasAdvance;
using optim::HasInvalid;
using optim::kNumFields;
using optim::kNumInputs;
using optim::kNumStates;
using optim::uses_state;

template <class Rule>
typename Rule::Hyper to_hyper(py::handle values) {
  // (field values, step, grad_scale[, max_grad_value[, monitor]]: to_grad_bound and to_monitor
  // read the last two)
  const Py_ssize_t size = PyTuple_Check(values.ptr()) ? PyTuple_GET_SIZE(values.ptr()) : 0;
  const std::size_t extra =
      size == kNumFields<Rule> + 4 ? 4 : (size == kNumFields<Rule> + 3 ? 3 : 2);
  PyObject* const* items = tuple_items(values, kNumFields<Rule> + extra, "hyper");
  typename Rule::Hyper h{};
  std::size_t i = 0;
  std::apply(
      [&](const auto&... field) {
        ((h.*(field.member) =
              [&] {
                using M = std::remove_reference_t<decltype(h.*(field.member))>;
                if constexpr (std::is_same_v<M, bool>) {
                  return to_flag(items[i++], field.name);
                } else {
                  return to_real(items[i++], field.name);
                }
              }()),
         ...);
      },
      Rule::kFields);
  h.step = to_step(items[i++]);
  h.grad_scale = to_real(items[i], "grad_scale");
  if constexpr (HasInvalid<Rule>::value) {
    if (const char* problem = Rule::invalid(h)) throw py::value_error(problem);
  }
  return h;
}

// The scalar states after a step, in field order (empty for most rules).
template <class Rule>
py::tuple scalar_states(const typename Rule::Hyper& h) {
  py::list values;
  std::apply(
      [&](const auto&... field) {
        ((field.kind == optim::FieldKind::kScalarState ? values.append(h.*(field.member)) : void()),
         ...);
      },
      Rule::kFields);
  return py::tuple(values);
}

// Per-call scalars in CUDA memory (1-element float32 tensors on the tensors' device), for
// steps without host synchronisation: (grad_scale, found_inf, lr, step), each None or a tensor.
class DeviceScalarArgs {
 public:
  DeviceScalarArgs(py::handle scalars, const TensorBatch& batch, py::handle stream);
  DeviceScalarArgs(DeviceScalarArgs&&) = default;
  bool any() const { return !owners_.empty(); }
  cuda::DeviceScalars values;

 private:
  std::vector<std::unique_ptr<TensorBatch>> owners_;
};

// A call's batches, each converted and checked, then checked together for shared memory.
// A batch is (param, inputs, states, hyper, label, device_scalars): `label` names its arrays
// in messages (see to_label); `device_scalars` is None or (grad_scale, found_inf, lr, step),
// each None or a 1-element tensor on the batch's CUDA device.
template <class Rule>
class CheckedCall {
 public:
  CheckedCall(py::handle batch_list, py::handle stream) : stream_(stream) {
    const auto list = py::reinterpret_steal<py::tuple>(PySequence_Tuple(batch_list.ptr()));
    if (!list) throw py::error_already_set();
    entries_.reserve(list.size());
    for (const py::handle item : list) {
      // (param, inputs, states, hyper, label, device_scalars[, precision])
      const bool with_precision = PyTuple_Check(item.ptr()) && PyTuple_GET_SIZE(item.ptr()) == 7;
      PyObject* const* b = tuple_items(item, with_precision ? 7 : 6, "batch");
      add(b[0], b[1], b[2], b[3], b[4], b[5], with_precision ? b[6] : Py_None);
    }
    check();
  }
  // One batch, from separate arguments (the ops' path: no batch tuples to build).
  CheckedCall(py::handle param, py::handle inputs, py::handle states, py::handle hyper,
              py::handle device_scalars, py::handle stream, py::handle precision)
      : stream_(stream) {
    entries_.reserve(1);
    add(param, inputs, states, hyper, py::handle(), device_scalars, precision);
    check();
  }

  // Runs every batch (the GIL released); returns None, or for rules with scalar states a list
  // of each batch's scalar states after the step.
  py::object run(index_t repeats = 1) {
    const auto stream_handle =
        stream_.is_none() ? std::uintptr_t{1} : stream_.cast<std::uintptr_t>();
    {
      py::gil_scoped_release release;
      for (const Entry& e : entries_) {
        StepArgs args = e.batch->step_args();
        args.monitor = e.monitor;
        args.grad_bound = e.grad_bound;
        if (e.batch->on_cuda()) {
#if defined(GDFAST_HAVE_CUDA)
          cuda::run_step<Rule>(e.hyper, e.batch->dtype(), args, e.scalars.values,
                               e.batch->device_id(), stream_handle);
#endif
        } else {
          cpu::run_step<Rule>(e.hyper, e.batch->dtype(), args, repeats);
        }
      }
    }
    (void)stream_handle;
    if constexpr (!HasAdvance<Rule>::value) {
      return py::none();
    } else {
      py::list out;
      for (const Entry& e : entries_) {
        auto h = e.hyper;
        Rule::advance(h);
        out.append(scalar_states<Rule>(h));
      }
      return std::move(out);
    }
  }

 private:
  struct Entry {
    typename Rule::Hyper hyper;
    std::unique_ptr<TensorBatch> batch;  // not movable: its messages point into it
    DeviceScalarArgs scalars;
    double grad_bound;
    double* monitor;
  };

  void add(py::handle param, py::handle input_tuple, py::handle state_tuple, py::handle hyper,
           py::handle label_obj, py::handle device_scalars, py::handle precision_obj) {
    BatchLabel label = to_label(label_obj);
    const typename Rule::Hyper h = to_hyper<Rule>(hyper);
    const Precision precision = to_precision(precision_obj, label.prefix);
    const unsigned flags = Rule::flags(h);
    std::vector<TensorArg> args;
    args.reserve(1 + kNumInputs<Rule> + kNumStates<Rule>);
    args.push_back({"param", param, true});
    PyObject* const* inputs = tuple_items(input_tuple, kNumInputs<Rule>, "inputs");
    for (int i = 0; i < kNumInputs<Rule>; ++i) args.push_back({Rule::kInputs[i], inputs[i], false});
    PyObject* const* states = tuple_items(state_tuple, kNumStates<Rule>, "states");
    PyObject* const* absmax =
        precision.absmax.is_none()
            ? nullptr
            : tuple_items(precision.absmax, kNumStates<Rule>, (label.prefix + "absmax").c_str());
    std::vector<TensorArg> absmax_args;
    for (int k = 0; k < kNumStates<Rule>; ++k) {
      if (!uses_state<Rule>(k, flags)) continue;
      const optim::StateSpec& spec = Rule::kStates[k];
      const py::handle state = states[k];
      if (state.is_none() && *spec.when != '\0') {
        throw py::value_error(label.prefix + spec.name + ": required when " + spec.when);
      }
      args.push_back({spec.name, state, true});
      if (absmax != nullptr && absmax[k] != Py_None) {
        args.back().quantized = spec.nonnegative ? kUnsignedMap : kSignedMap;
        absmax_args.push_back({absmax_names<Rule>()[k].c_str(), absmax[k], true, false,
                               kNotQuantized, static_cast<int>(args.size()) - 1});
      }
    }
    if (!precision.master.is_none()) args.push_back({"master_param", precision.master, true, true});
    args.insert(args.end(), absmax_args.begin(), absmax_args.end());
    unsigned char roles[Storage::kMaxArrays] = {};  // 0 for the param and the inputs
    for (int k = 0, slot = 1 + kNumInputs<Rule>; k < kNumStates<Rule>; ++k) {
      if (uses_state<Rule>(k, flags) && slot < Storage::kMaxArrays) {
        roles[slot++] = static_cast<unsigned char>(1 + k);
      }
    }
    const std::string prefix = label.prefix;
    auto batch = std::make_unique<TensorBatch>(std::move(args), stream_, std::move(label));
    set_rounding(*batch, precision, roles, h.step, prefix);
    DeviceScalarArgs scalars(device_scalars, *batch, stream_);
    const double bound = to_grad_bound(hyper, kNumFields<Rule>, h.grad_scale, *batch, prefix);
    double* monitor = to_monitor(hyper, kNumFields<Rule>, *batch, prefix, optim::kTwoPass<Rule>);
    if constexpr (optim::kTwoPass<Rule>) {
      const std::string name = prefix + Rule::kName;
      if (batch->on_cuda() && scalars.any()) {  // (its factors are made on the host)
        throw py::value_error(name +
                              ": on CUDA, grad_scale, found_inf, lr and step must be "
                              "numbers, not device tensors");
      }
    }
    entries_.push_back({h, std::move(batch), std::move(scalars), bound, monitor});
  }

  void check() const {
    std::vector<const TensorBatch*> views;
    views.reserve(entries_.size());
    for (const Entry& e : entries_) views.push_back(e.batch.get());
    check_disjoint(views);
  }

  py::handle stream_;
  std::vector<Entry> entries_;
};

inline py::object str_or_none(const char* text) {
  return text != nullptr ? py::object(py::str(text)) : py::object(py::none());
}

// The description the Python registry is built from (gdfast/_spec.py).
template <class Rule>
py::dict describe(int id) {
  static const char* const kStepNames[] = {"none", "counted", "first_call"};
  static const char* const kInitNames[] = {"zeros", "unset", "fill"};
  static const char* const kKindNames[] = {"real", "flag", "scalar_state"};
  py::list inputs, states, fields;
  for (const char* name : Rule::kInputs) inputs.append(name);
  for (const optim::StateSpec& s : Rule::kStates) {
    states.append(py::dict(py::arg("name") = s.name, py::arg("when") = s.when,
                           py::arg("init") = kInitNames[static_cast<int>(s.init)],
                           py::arg("fill_from") = str_or_none(s.fill_from),
                           py::arg("nonnegative") = s.nonnegative, py::arg("iterate") = s.iterate));
  }
  std::apply(
      [&](const auto&... f) {
        (fields.append(py::dict(
             py::arg("name") = f.name, py::arg("kind") = kKindNames[static_cast<int>(f.kind)],
             py::arg("default") = f.initial,
             py::arg("range") =
                 py::make_tuple(f.range.lo, f.range.hi, f.range.lo_open, f.range.hi_open),
             py::arg("start_from") = str_or_none(f.start_from))),
         ...);
      },
      Rule::kFields);
  return py::dict(py::arg("id") = id, py::arg("name") = Rule::kName,
                  py::arg("summary") = Rule::kSummary, py::arg("inputs") = py::tuple(inputs),
                  py::arg("states") = py::tuple(states), py::arg("fields") = py::tuple(fields),
                  py::arg("step") = kStepNames[static_cast<int>(Rule::kStepCount)],
                  py::arg("tensor_sums") = optim::TensorSums<Rule>::value,
                  py::arg("partial") = optim::IsPartial<Rule>::value);
}

// The states a step with these hyperparameters reads and writes (after the cross-field checks).
template <class Rule>
py::tuple plan(py::handle hyper) {
  const unsigned flags = Rule::flags(to_hyper<Rule>(hyper));
  py::list names;
  for (int k = 0; k < kNumStates<Rule>; ++k) {
    if (uses_state<Rule>(k, flags)) names.append(Rule::kStates[k].name);
  }
  return py::tuple(names);
}

}  // namespace gdfast::bindings
