// Benchmark-only entry points, off the optimizers' step path:
//   run_repeated(rule, batches, repeats)  a step applied `repeats` times in place per thread
//                                         range, one wake-up (the arithmetic bound)
//   stream(param, grad, states, scale, input=None)
//                                         an optimizer's in-place access pattern with one
//                                         multiply-add per written array (the memory bound);
//                                         with `input`, one more array only read (0-1 states)
//   set_cuda_chunk_unroll(unroll, stored) the CUDA loops' 16-byte vectors per thread and chunk
//                                         (cuda/api.h), to measure others; returns the old one
//                                         (tools/gpu_kernel_time.py)
#include <string>

#include "bindings/register.h"
#include "bindings/rule_binding.h"
#include "optim/stream.h"

namespace gdfast::bindings {
namespace {

template <class Rule>
void repeated(py::handle batches, index_t repeats) {
  CheckedCall<Rule> call(batches, py::none());
  call.run(repeats);
}

using RepeatedFn = void (*)(py::handle, index_t);
constexpr RepeatedFn kRepeated[] = {
#define GDFAST_OPTIMIZER(Rule, header) &repeated<optim::Rule>,
#include "optim/optimizers.def"
#undef GDFAST_OPTIMIZER
};
constexpr int kNumRules = static_cast<int>(sizeof(kRepeated) / sizeof(kRepeated[0]));

void stream(py::handle param, py::handle grad, const py::tuple& states, double scale,
            py::handle input) {
  const bool has_input = !input.is_none();
  const std::size_t max_states = has_input ? 1 : 4;
  if (states.size() > max_states) {
    throw py::value_error("states: expected 0 to " + std::to_string(max_states) + " arrays" +
                          (has_input ? " with an input" : "") + ", got " +
                          std::to_string(states.size()));
  }
  std::vector<TensorArg> args{{"param", param, true}, {"grad", grad, false}};
  if (has_input) args.push_back({"input", input, false});
  for (const py::handle s : states) args.push_back({"state", s, true});
  const TensorBatch batch(std::move(args), py::none());
  if (batch.on_cuda()) throw py::value_error("param: the stream bound runs on CPU arrays only");
  if (has_input && batch.storage() != nullptr) {
    throw py::value_error(
        "input: the stream with an input takes float32 or float64 arrays only, all of one type");
  }
  check_disjoint({&batch});
  const optim::Stream::Hyper hyper{scale, static_cast<int>(states.size())};
  py::gil_scoped_release release;
  const cpu::KernelTable& kernels = cpu::active_kernels();
  if (has_input) {
    cpu::run_kernels<optim::StreamWithInput>(kernels.stream_with_input, nullptr, hyper,
                                             batch.dtype(), batch.step_args());
  } else {
    cpu::run_kernels<optim::Stream>(kernels.stream, nullptr, hyper, batch.dtype(),
                                    batch.step_args());
  }
}

}  // namespace

void register_bench(py::module_& m) {
  m.def(
      "run_repeated",
      [](int rule, py::handle batches, index_t repeats) {
        if (rule < 0 || rule >= kNumRules) throw py::value_error("rule: unknown id");
        if (repeats < 1) {
          throw py::value_error("repeats: expected an int >= 1, got " + std::to_string(repeats));
        }
        kRepeated[rule](batches, repeats);
      },
      py::arg("rule"), py::arg("batches"), py::arg("repeats"));
  m.def("stream", &stream, py::arg("param"), py::arg("grad"), py::arg("states"), py::arg("scale"),
        py::arg("input") = py::none());
  m.def(
      "set_cuda_chunk_unroll",
      [](int unroll, bool stored) -> int {
#if defined(GDFAST_HAVE_CUDA)
        return cuda::set_chunk_unroll(stored, unroll);
#else
        (void)unroll;
        (void)stored;
        throw py::value_error("unroll: this build of gdfast has no CUDA kernels");
#endif
      },
      py::arg("unroll"), py::arg("stored"));
}

}  // namespace gdfast::bindings
