// The optimizers of optimizers.def, each bound through the same templates (rule_binding.h):
//   registry()                          the declarations of every rule, for gdfast/_spec.py
//   plan(rule, hyper)                   the states a step with these hyperparameters uses
//   step(rule, batches, stream)         one step of every batch, all checked before any runs
//   step_one(rule, param, inputs, states, hyper, device_scalars, stream, precision=None)
//                                       the same for one batch (gdfast.ops)
//   check(rule, batches, stream), check_one(...)
//                                       step's and step_one's checks only (a step found_inf
//                                       skips accepts only what a taken one would)
// Keyword parsing and range checks are left to the Python side (gdfast/ops.py, _spec.py).
#include "bindings/register.h"
#include "bindings/rule_binding.h"

namespace gdfast::bindings {
namespace {

struct RuleEntry {
  py::dict (*describe)(int id);
  py::tuple (*plan)(py::handle hyper);
  py::object (*step)(py::handle batches, py::handle stream);
  py::object (*step_one)(py::handle param, py::handle inputs, py::handle states, py::handle hyper,
                         py::handle device_scalars, py::handle stream, py::handle precision);
  void (*check)(py::handle batches, py::handle stream);
  void (*check_one)(py::handle param, py::handle inputs, py::handle states, py::handle hyper,
                    py::handle device_scalars, py::handle stream, py::handle precision);
};

template <class Rule>
py::object step(py::handle batches, py::handle stream) {
  return CheckedCall<Rule>(batches, stream).run();
}

template <class Rule>
py::object step_one(py::handle param, py::handle inputs, py::handle states, py::handle hyper,
                    py::handle device_scalars, py::handle stream, py::handle precision) {
  return CheckedCall<Rule>(param, inputs, states, hyper, device_scalars, stream, precision).run();
}

template <class Rule>
void check(py::handle batches, py::handle stream) {
  CheckedCall<Rule>(batches, stream);
}

template <class Rule>
void check_one(py::handle param, py::handle inputs, py::handle states, py::handle hyper,
               py::handle device_scalars, py::handle stream, py::handle precision) {
  CheckedCall<Rule>(param, inputs, states, hyper, device_scalars, stream, precision);
}

constexpr RuleEntry kRules[] = {
#define GDFAST_OPTIMIZER(Rule, header)                              \
  {&describe<optim::Rule>, &plan<optim::Rule>,  &step<optim::Rule>, \
   &step_one<optim::Rule>, &check<optim::Rule>, &check_one<optim::Rule>},
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER
};
constexpr int kNumRules = static_cast<int>(sizeof(kRules) / sizeof(kRules[0]));

const RuleEntry& rule_entry(int rule) {
  if (rule < 0 || rule >= kNumRules) {
    throw py::value_error("rule: expected an id in [0, " + std::to_string(kNumRules) + "), got " +
                          std::to_string(rule));
  }
  return kRules[rule];
}

}  // namespace

void register_optim(py::module_& m) {
  m.def("cuda_available", [] {
#if defined(GDFAST_HAVE_CUDA)
    return cuda::is_available();
#else
    return false;
#endif
  });
  m.def("cuda_device_count", [] {
#if defined(GDFAST_HAVE_CUDA)
    return cuda::device_count();
#else
    return 0;
#endif
  });
  m.attr("cuda_compiled") = py::bool_(
#if defined(GDFAST_HAVE_CUDA)
      true
#else
      false
#endif
  );
  m.def("registry", [] {
    py::list out;
    for (int id = 0; id < kNumRules; ++id) out.append(kRules[id].describe(id));
    return py::tuple(out);
  });
  m.def(
      "plan", [](int rule, py::handle hyper) { return rule_entry(rule).plan(hyper); },
      py::arg("rule"), py::arg("hyper"));
  m.def(
      "step",
      [](int rule, py::handle batches, py::handle stream) {
        return rule_entry(rule).step(batches, stream);
      },
      py::arg("rule"), py::arg("batches"), py::arg("stream"));
  m.def(
      "step_one",
      [](int rule, py::handle param, py::handle inputs, py::handle states, py::handle hyper,
         py::handle device_scalars, py::handle stream, py::handle precision) {
        return rule_entry(rule).step_one(param, inputs, states, hyper, device_scalars, stream,
                                         precision);
      },
      py::arg("rule"), py::arg("param"), py::arg("inputs"), py::arg("states"), py::arg("hyper"),
      py::arg("device_scalars"), py::arg("stream"), py::arg("precision") = py::none());
  m.def(
      "check",
      [](int rule, py::handle batches, py::handle stream) {
        rule_entry(rule).check(batches, stream);
      },
      py::arg("rule"), py::arg("batches"), py::arg("stream"));
  m.def(
      "check_one",
      [](int rule, py::handle param, py::handle inputs, py::handle states, py::handle hyper,
         py::handle device_scalars, py::handle stream, py::handle precision) {
        rule_entry(rule).check_one(param, inputs, states, hyper, device_scalars, stream, precision);
      },
      py::arg("rule"), py::arg("param"), py::arg("inputs"), py::arg("states"), py::arg("hyper"),
      py::arg("device_scalars"), py::arg("stream"), py::arg("precision") = py::none());
}

}  // namespace gdfast::bindings
