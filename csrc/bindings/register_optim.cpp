// One entry point per optimizer: positional arguments only (keyword parsing is left to the
// thin Python wrappers in gdfast/ops.py, which also check hyperparameter ranges).
#include "bindings/convert.h"
#include "bindings/register.h"
#include "cpu/dispatch.h"
#include "optim/registry.h"

namespace gdfast::bindings {
namespace {

template <class Rule>
void run(const TensorBatch& batch, const typename Rule::Hyper& hyper) {
  py::gil_scoped_release release;
  cpu::run_step<Rule>(hyper, batch.dtype(), batch.step_args());
}

void sgd(py::handle param, py::handle grad, py::handle momentum_buffer, index_t step, double lr,
         double momentum, double dampening, bool nesterov, double weight_decay, bool maximize,
         double grad_scale) {
  const optim::Sgd::Hyper hyper{lr,       momentum, dampening, weight_decay,
                                nesterov, maximize, step,      grad_scale};
  if (momentum == 0.0) {
    run<optim::Sgd>(TensorBatch({{"param", param, true}, {"grad", grad, false}}), hyper);
    return;
  }
  require(momentum_buffer, "momentum_buffer", "momentum != 0");
  run<optim::Sgd>(TensorBatch({{"param", param, true},
                               {"grad", grad, false},
                               {"momentum_buffer", momentum_buffer, true}}),
                  hyper);
}

void adam(py::handle param, py::handle grad, py::handle exp_avg, py::handle exp_avg_sq,
          py::handle max_exp_avg_sq, index_t step, double lr, double beta1, double beta2,
          double eps, double weight_decay, bool decoupled_weight_decay, bool amsgrad,
          bool maximize, double grad_scale) {
  const optim::Adam::Hyper hyper{lr,      beta1,    beta2, eps,       weight_decay,
                                 decoupled_weight_decay, amsgrad, maximize, step, grad_scale};
  if (!amsgrad) {
    run<optim::Adam>(TensorBatch({{"param", param, true},
                                  {"grad", grad, false},
                                  {"exp_avg", exp_avg, true},
                                  {"exp_avg_sq", exp_avg_sq, true}}),
                     hyper);
    return;
  }
  require(max_exp_avg_sq, "max_exp_avg_sq", "amsgrad=True");
  run<optim::Adam>(TensorBatch({{"param", param, true},
                                {"grad", grad, false},
                                {"exp_avg", exp_avg, true},
                                {"exp_avg_sq", exp_avg_sq, true},
                                {"max_exp_avg_sq", max_exp_avg_sq, true}}),
                   hyper);
}

void lion(py::handle param, py::handle grad, py::handle exp_avg, double lr, double beta1,
          double beta2, double weight_decay, bool maximize, double grad_scale) {
  const optim::Lion::Hyper hyper{lr, beta1, beta2, weight_decay, maximize, grad_scale};
  run<optim::Lion>(TensorBatch({{"param", param, true},
                                {"grad", grad, false},
                                {"exp_avg", exp_avg, true}}),
                   hyper);
}

// The access pattern of an optimizer with `states` state arrays (see optim/stream.h).
void stream(py::handle param, py::handle grad, py::tuple states, double scale) {
  const optim::Stream::Hyper hyper{scale, static_cast<int>(states.size())};
  const TensorArg p{"param", param, true}, g{"grad", grad, false};
  const auto s = [&](int k) { return TensorArg{"state", states[k], true}; };
  switch (states.size()) {
    case 0:
      return run<optim::Stream>(TensorBatch({p, g}), hyper);
    case 1:
      return run<optim::Stream>(TensorBatch({p, g, s(0)}), hyper);
    case 2:
      return run<optim::Stream>(TensorBatch({p, g, s(0), s(1)}), hyper);
    case 3:
      return run<optim::Stream>(TensorBatch({p, g, s(0), s(1), s(2)}), hyper);
    default:
      throw py::value_error("states: expected 0 to 3 arrays, got " +
                            std::to_string(states.size()));
  }
}

}  // namespace

void register_optim(py::module_& m) {
  m.def("sgd", &sgd);
  m.def("adam", &adam);
  m.def("lion", &lion);
  m.def("stream", &stream);
}

}  // namespace gdfast::bindings
