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

namespace gdfast::bindings {

// Conversions naming the argument in their TypeError/ValueError (rule_binding.cpp).
double to_real(py::handle value, const char* name);
bool to_flag(py::handle value, const char* name);
index_t to_step(py::handle value);
py::tuple as_tuple(py::handle value, std::size_t size, const std::string& what);

template <class Rule>
inline constexpr std::size_t kNumFields = std::tuple_size_v<decltype(Rule::kFields)>;
template <class Rule>
inline constexpr int kNumStates = static_cast<int>(std::extent_v<decltype(Rule::kStates)>);
template <class Rule>
inline constexpr int kNumInputs = static_cast<int>(std::extent_v<decltype(Rule::kInputs)>);

// Optional members of a rule: invalid(h) (a cross-field check), advance(h) (scalar states).
template <class Rule, class = void>
struct HasInvalid : std::false_type {};
template <class Rule>
struct HasInvalid<Rule, std::void_t<decltype(Rule::invalid(
                            std::declval<const typename Rule::Hyper&>()))>> : std::true_type {};
template <class Rule, class = void>
struct HasAdvance : std::false_type {};
template <class Rule>
struct HasAdvance<Rule,
                  std::void_t<decltype(Rule::advance(std::declval<typename Rule::Hyper&>()))>>
    : std::true_type {};

template <class Rule>
bool uses_state(int k, unsigned flags) {
  return (Rule::kStates[k].needs & flags) == Rule::kStates[k].needs;
}

template <class Rule>
typename Rule::Hyper to_hyper(py::handle values) {
  const py::tuple items = as_tuple(values, kNumFields<Rule> + 2, "hyper");
  typename Rule::Hyper h{};
  std::size_t i = 0;
  std::apply(
      [&](const auto&... field) {
        ((h.*(field.member) = [&] {
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
  cuda::DeviceScalars values;

 private:
  std::vector<std::unique_ptr<TensorBatch>> owners_;
};

// A call's batches, each converted and checked, then checked together for shared memory.
// A batch is (param, inputs, states, hyper, label, device_scalars): `label` prefixes its
// messages; `device_scalars` is None or (grad_scale, found_inf, lr, step), each None or a
// 1-element tensor on the batch's CUDA device.
template <class Rule>
class CheckedCall {
 public:
  CheckedCall(py::handle batch_list, py::handle stream) : stream_(stream) {
    const auto list = py::reinterpret_steal<py::tuple>(PySequence_Tuple(batch_list.ptr()));
    if (!list) throw py::error_already_set();
    std::vector<const TensorBatch*> views;
    for (const py::handle item : list) {
      const py::tuple batch = as_tuple(item, 6, "batch");
      std::string label = py::str(batch[4]);
      hypers_.push_back(to_hyper<Rule>(batch[3]));
      const unsigned flags = Rule::flags(hypers_.back());
      std::vector<TensorArg> args{{"param", batch[0], true}};
      const py::tuple inputs = as_tuple(batch[1], kNumInputs<Rule>, "inputs");
      for (int i = 0; i < kNumInputs<Rule>; ++i) {
        args.push_back({Rule::kInputs[i], inputs[i], false});
      }
      const py::tuple states = as_tuple(batch[2], kNumStates<Rule>, "states");
      for (int k = 0; k < kNumStates<Rule>; ++k) {
        if (!uses_state<Rule>(k, flags)) continue;
        const optim::StateSpec& spec = Rule::kStates[k];
        if (states[k].is_none() && *spec.when != '\0') {
          throw py::value_error(label + spec.name + ": required when " + spec.when);
        }
        args.push_back({spec.name, states[k], true});
      }
      batches_.push_back(std::make_unique<TensorBatch>(std::move(args), stream, std::move(label)));
      scalars_.push_back(std::make_unique<DeviceScalarArgs>(batch[5], *batches_.back(), stream));
      views.push_back(batches_.back().get());
    }
    check_disjoint(views);
  }

  // Runs every batch (the GIL released); returns None, or for rules with scalar states a list
  // of each batch's scalar states after the step.
  py::object run(index_t repeats = 1) {
    const auto stream_handle =
        stream_.is_none() ? std::uintptr_t{1} : stream_.cast<std::uintptr_t>();
    {
      py::gil_scoped_release release;
      for (std::size_t b = 0; b < batches_.size(); ++b) {
        const TensorBatch& batch = *batches_[b];
        if (batch.on_cuda()) {
#if defined(GDFAST_HAVE_CUDA)
          cuda::run_step<Rule>(hypers_[b], batch.dtype(), batch.step_args(), scalars_[b]->values,
                               batch.device_id(), stream_handle);
#endif
        } else {
          cpu::run_step<Rule>(hypers_[b], batch.dtype(), batch.step_args(), repeats);
        }
      }
    }
    (void)stream_handle;
    if constexpr (!HasAdvance<Rule>::value) {
      return py::none();
    } else {
      py::list out;
      for (auto h : hypers_) {
        Rule::advance(h);
        out.append(scalar_states<Rule>(h));
      }
      return std::move(out);
    }
  }

 private:
  py::handle stream_;
  std::vector<typename Rule::Hyper> hypers_;
  std::vector<std::unique_ptr<TensorBatch>> batches_;
  std::vector<std::unique_ptr<DeviceScalarArgs>> scalars_;
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
                           py::arg("fill_from") = str_or_none(s.fill_from)));
  }
  std::apply(
      [&](const auto&... f) {
        (fields.append(py::dict(
             py::arg("name") = f.name, py::arg("kind") = kKindNames[static_cast<int>(f.kind)],
             py::arg("default") = f.initial,
             py::arg("range") = py::make_tuple(f.range.lo, f.range.hi, f.range.lo_open,
                                               f.range.hi_open),
             py::arg("start_from") = str_or_none(f.start_from))),
         ...);
      },
      Rule::kFields);
  return py::dict(py::arg("id") = id, py::arg("name") = Rule::kName,
                  py::arg("summary") = Rule::kSummary, py::arg("inputs") = py::tuple(inputs),
                  py::arg("states") = py::tuple(states), py::arg("fields") = py::tuple(fields),
                  py::arg("step") = kStepNames[static_cast<int>(Rule::kStepCount)]);
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
