// Benchmark-only entry points, off the optimizers' step path:
//   run_repeated(rule, batches, repeats)  a step applied `repeats` times in place per thread
//                                         range, one wake-up (the arithmetic bound)
//   stream(param, grad, states, scale)    an optimizer's in-place access pattern with one
//                                         multiply-add per written array (the memory bound)
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

void stream(py::handle param, py::handle grad, const py::tuple& states, double scale) {
  if (states.size() > 4) {
    throw py::value_error("states: expected 0 to 4 arrays, got " + std::to_string(states.size()));
  }
  std::vector<TensorArg> args{{"param", param, true}, {"grad", grad, false}};
  for (const py::handle s : states) args.push_back({"state", s, true});
  const TensorBatch batch(std::move(args), py::none());
  if (batch.on_cuda()) throw py::value_error("param: the stream bound runs on CPU arrays only");
  check_disjoint({&batch});
  const optim::Stream::Hyper hyper{scale, static_cast<int>(states.size())};
  py::gil_scoped_release release;
  cpu::run_kernels<optim::Stream>(cpu::active_kernels().stream, nullptr, hyper, batch.dtype(),
                                  batch.step_args());
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
  m.def("stream", &stream, py::arg("param"), py::arg("grad"), py::arg("states"), py::arg("scale"));
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
