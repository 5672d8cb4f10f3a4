// One entry point per optimizer: positional arguments only (keyword parsing is left to the
// thin Python wrappers in gdfast/ops.py, which also check hyperparameter ranges).
#include <memory>
#include <vector>

#include "bindings/convert.h"
#include "bindings/register.h"
#include "cpu/dispatch.h"
#include "cuda/api.h"
#include "optim/registry.h"

namespace gdfast::bindings {
namespace {

// Per-call scalars in CUDA memory (1-element float32 tensors on the tensors' device), for
// steps without host synchronisation: (grad_scale, found_inf, lr, step), each None or a tensor.
class DeviceScalarArgs {
 public:
  DeviceScalarArgs(py::handle scalars, const TensorBatch& batch, py::handle stream) {
    if (scalars.is_none()) return;
    if (!batch.on_cuda()) {
      throw py::value_error(
          "device scalars (tensor-valued grad_scale, found_inf, lr, step) "
          "are for CUDA tensors; pass numbers for CPU ones");
    }
    if (!PyTuple_Check(scalars.ptr())) throw py::type_error("device_scalars: expected a tuple");
    const auto items = py::reinterpret_borrow<py::tuple>(scalars);
    const char* names[] = {"grad_scale", "found_inf", "lr", "step"};
    const float** slots[] = {&values.grad_scale, &values.found_inf, &values.lr, &values.step};
    for (std::size_t i = 0; i < 4 && i < items.size(); ++i) {
      if (items[i].is_none()) continue;
      owners_.push_back(std::make_unique<TensorBatch>(
          std::initializer_list<TensorArg>{{names[i], items[i], false}}, stream));
      const TensorBatch& one = *owners_.back();
      const StepArgs a = one.step_args();
      if (one.dtype() != Dtype::kFloat32 || a.offsets[1] != 1 || !one.on_cuda() ||
          one.device_id() != batch.device_id()) {
        throw py::value_error(std::string(names[i]) +
                              ": expected a 1-element float32 tensor "
                              "on the device of the params");
      }
      *slots[i] = static_cast<const float*>(a.arrays[0]);
    }
  }
  cuda::DeviceScalars values;

 private:
  std::vector<std::unique_ptr<TensorBatch>> owners_;
};

template <class Rule>
void run(const TensorBatch& batch, const typename Rule::Hyper& hyper, py::handle stream,
         py::handle device_scalars) {
  const DeviceScalarArgs scalars(device_scalars, batch, stream);
  if (batch.on_cuda()) {
#if defined(GDFAST_HAVE_CUDA)
    const auto stream_handle = stream.is_none() ? std::uintptr_t{1} : stream.cast<std::uintptr_t>();
    py::gil_scoped_release release;
    cuda::run_step<Rule>(hyper, batch.dtype(), batch.step_args(), scalars.values, batch.device_id(),
                         stream_handle);
#endif
    return;
  }
  py::gil_scoped_release release;
  cpu::run_step<Rule>(hyper, batch.dtype(), batch.step_args());
}

void sgd(py::handle param, py::handle grad, py::handle momentum_buffer, index_t step, double lr,
         double momentum, double dampening, bool nesterov, double weight_decay, bool maximize,
         double grad_scale, py::handle stream, py::handle device_scalars) {
  const optim::Sgd::Hyper hyper{lr,       momentum, dampening, weight_decay,
                                nesterov, maximize, step,      grad_scale};
  if (momentum == 0.0) {
    run<optim::Sgd>(TensorBatch({{"param", param, true}, {"grad", grad, false}}, stream), hyper,
                    stream, device_scalars);
    return;
  }
  require(momentum_buffer, "momentum_buffer", "momentum != 0");
  run<optim::Sgd>(TensorBatch({{"param", param, true},
                               {"grad", grad, false},
                               {"momentum_buffer", momentum_buffer, true}},
                              stream),
                  hyper, stream, device_scalars);
}

void adam(py::handle param, py::handle grad, py::handle exp_avg, py::handle exp_avg_sq,
          py::handle max_exp_avg_sq, index_t step, double lr, double beta1, double beta2,
          double eps, double weight_decay, bool decoupled_weight_decay, bool amsgrad, bool maximize,
          double grad_scale, py::handle stream, py::handle device_scalars) {
  const optim::Adam::Hyper hyper{
      lr,      beta1,    beta2, eps,       weight_decay, decoupled_weight_decay,
      amsgrad, maximize, step,  grad_scale};
  if (!amsgrad) {
    run<optim::Adam>(TensorBatch({{"param", param, true},
                                  {"grad", grad, false},
                                  {"exp_avg", exp_avg, true},
                                  {"exp_avg_sq", exp_avg_sq, true}},
                                 stream),
                     hyper, stream, device_scalars);
    return;
  }
  require(max_exp_avg_sq, "max_exp_avg_sq", "amsgrad=True");
  run<optim::Adam>(TensorBatch({{"param", param, true},
                                {"grad", grad, false},
                                {"exp_avg", exp_avg, true},
                                {"exp_avg_sq", exp_avg_sq, true},
                                {"max_exp_avg_sq", max_exp_avg_sq, true}},
                               stream),
                   hyper, stream, device_scalars);
}

void lion(py::handle param, py::handle grad, py::handle exp_avg, double lr, double beta1,
          double beta2, double weight_decay, bool maximize, double grad_scale, py::handle stream,
          py::handle device_scalars) {
  const optim::Lion::Hyper hyper{lr, beta1, beta2, weight_decay, maximize, grad_scale};
  run<optim::Lion>(
      TensorBatch({{"param", param, true}, {"grad", grad, false}, {"exp_avg", exp_avg, true}},
                  stream),
      hyper, stream, device_scalars);
}

// The access pattern of an optimizer with `states` state arrays (see optim/stream.h).
void stream(py::handle param, py::handle grad, py::tuple states, double scale) {
  const optim::Stream::Hyper hyper{scale, static_cast<int>(states.size())};
  const TensorArg p{"param", param, true}, g{"grad", grad, false};
  const auto s = [&](int k) { return TensorArg{"state", states[k], true}; };
  const py::handle none = py::none();
  switch (states.size()) {
    case 0:
      return run<optim::Stream>(TensorBatch({p, g}), hyper, none, none);
    case 1:
      return run<optim::Stream>(TensorBatch({p, g, s(0)}), hyper, none, none);
    case 2:
      return run<optim::Stream>(TensorBatch({p, g, s(0), s(1)}), hyper, none, none);
    case 3:
      return run<optim::Stream>(TensorBatch({p, g, s(0), s(1), s(2)}), hyper, none, none);
    default:
      throw py::value_error("states: expected 0 to 3 arrays, got " + std::to_string(states.size()));
  }
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
  m.def("sgd", &sgd);
  m.def("adam", &adam);
  m.def("lion", &lion);
  m.def("stream", &stream);
}

}  // namespace gdfast::bindings
