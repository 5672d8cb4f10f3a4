"""optimizer.step() of gdfast.torch.AdamW against torch.optim.AdamW's three CPU paths (the
for-loop, foreach=True, fused=True) on three parameter lists:

- gpt2-small: 148 fp32 tensors, 124.4M elements (wte 50257x768, wpe 1024x768, 12 blocks of
  ln_1, attn.c_attn, attn.c_proj, ln_2, mlp.c_fc, mlp.c_proj weights and biases, ln_f):
  memory-bound, every fused step sits near the bandwidth bound;
- many-small: 200 Linear(64, 64) layers, 400 tensors, 832k elements: per-tensor costs;
- mlp: Linear(64, 256), Linear(256, 256), Linear(256, 10), 6 tensors, 85k elements: the
  per-step cost of the Python optimizer object itself.

Gradients are filled once; each implementation's result is checked against
torch.optim.AdamW(foreach=False) after two steps, before it is timed.

    pytest bench/bench_torch.py --benchmark-only          # pytest-benchmark, a group per list
    python bench/bench_torch.py [--model mlp] [--threads N] [--batches K]
                                [--impls gdfast,torch-fused]

The script mode is the one to quote ratios from: it interleaves the implementations batch by
batch (A B C D A B C D ...) so that the machine's drift hits all alike, and prints medians,
min-max, GB/s and each time relative to gdfast from one run. Bytes per step: AdamW fp32 in
place reads p, g, m, v and writes p, m, v back: 28 bytes per element (no write-allocate).
Memory: about 1.5 GB per implementation plus 1.5 GB shared.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from typing import Callable, Dict, List

import pytest

torch = pytest.importorskip("torch")

import gdfast  # noqa: E402
import gdfast.torch  # noqa: E402

D, VOCAB, CTX, LAYERS = 768, 50257, 1024, 12
BYTES_PER_ELEMENT = 28
HYPER = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)


def linear_shapes(*features: int) -> List[tuple]:
    """Weights and biases of Linear(features[0], features[1]), Linear(features[1], ...), ..."""
    shapes: List[tuple] = []
    for fan_in, fan_out in zip(features, features[1:]):
        shapes += [(fan_out, fan_in), (fan_out,)]
    return shapes


def gpt2_small_shapes() -> List[tuple]:
    shapes: List[tuple] = [(VOCAB, D), (CTX, D)]
    for _ in range(LAYERS):
        shapes += [(D,), (D,),                  # ln_1 weight, bias
                   (D, 3 * D), (3 * D,),        # attn.c_attn
                   (D, D), (D,),                # attn.c_proj
                   (D,), (D,),                  # ln_2
                   (D, 4 * D), (4 * D,),        # mlp.c_fc
                   (4 * D, D), (D,)]            # mlp.c_proj
    return shapes + [(D,), (D,)]                # ln_f


MODELS: Dict[str, Callable[[], List[tuple]]] = {
    "gpt2-small": gpt2_small_shapes,
    "many-small": lambda: linear_shapes(*[64] * 201),
    "mlp": lambda: linear_shapes(64, 256, 256, 10),
}

IMPLS: Dict[str, Callable] = {
    "gdfast": lambda ps: gdfast.torch.AdamW(ps, **HYPER),
    "torch-forloop": lambda ps: torch.optim.AdamW(ps, **HYPER, foreach=False),
    "torch-foreach": lambda ps: torch.optim.AdamW(ps, **HYPER, foreach=True),
    "torch-fused": lambda ps: torch.optim.AdamW(ps, **HYPER, fused=True),
}
CHECK_STEPS = 2
# Two steps from the same start: gdfast and torch differ by a few float32 ulps of the update
# (|update| <= ~lr), so this bounds the difference well above rounding and far below any
# formula error (which would be O(lr) = 1e-3).
CHECK_TOL = dict(rtol=1e-5, atol=1e-7)


class Workload:
    """The shared part: initial params, grads (filled once), and the reference result."""

    def __init__(self, model: str = "gpt2-small", seed: int = 0) -> None:
        gen = torch.Generator().manual_seed(seed)
        self.model = model
        self.shapes = MODELS[model]()
        self.numel = sum(torch.Size(s).numel() for s in self.shapes)
        self.init = [torch.randn(s, generator=gen) * 0.02 for s in self.shapes]
        self.grads = [torch.randn(s, generator=gen) * 1e-3 for s in self.shapes]
        params = self.params()
        opt = IMPLS["torch-forloop"](params)
        for _ in range(CHECK_STEPS):
            opt.step()
        self.reference = [p.detach() for p in params]
        del opt

    def params(self) -> List[torch.nn.Parameter]:
        """Fresh params at the initial values, sharing the (read-only) grads."""
        params = [torch.nn.Parameter(t.clone()) for t in self.init]
        for p, g in zip(params, self.grads):
            p.grad = g
        return params

    def checked_optimizer(self, impl: str):
        params = self.params()
        opt = IMPLS[impl](params)
        for _ in range(CHECK_STEPS):
            opt.step()
        for i, (p, ref) in enumerate(zip(params, self.reference)):
            torch.testing.assert_close(p.detach(), ref, **CHECK_TOL,
                                       msg=lambda m: f"{impl} param {i}: {m}")
        return opt


# ---------------------------------------------------------------------------------------------
# pytest-benchmark


@pytest.fixture(scope="module", params=list(MODELS))
def workload(request):
    return Workload(request.param)


@pytest.mark.parametrize("impl", list(IMPLS))
def test_adamw_step(benchmark, workload, impl):
    opt = workload.checked_optimizer(impl)
    benchmark.group = (f"AdamW step, {workload.model} ({workload.numel / 1e6:.3g}M fp32, "
                       f"{len(workload.shapes)} tensors)")
    benchmark.extra_info.update(elements=workload.numel, tensors=len(workload.shapes),
                                bytes_per_step=BYTES_PER_ELEMENT * workload.numel,
                                torch_threads=torch.get_num_threads(),
                                gdfast_threads=gdfast.get_num_threads())
    rounds = 3 if impl == "torch-forloop" else 15
    benchmark.pedantic(opt.step, rounds=rounds, iterations=1, warmup_rounds=1)
    median = benchmark.stats.stats.median
    benchmark.extra_info["GB/s"] = BYTES_PER_ELEMENT * workload.numel / median / 1e9
    del opt
    gc.collect()


# ---------------------------------------------------------------------------------------------
# Script mode: interleaved batches, medians, ratios from one run


def _batch_seconds(opt, k: int) -> float:
    t0 = time.perf_counter()
    for _ in range(k):
        opt.step()
    return (time.perf_counter() - t0) / k


def run(model: str, impls: List[str], batches: int,
        min_batch_s: float = 0.05) -> Dict[str, List[float]]:
    print(f"building {model} ...", flush=True)
    work = Workload(model)
    opts = {}
    for impl in impls:
        opts[impl] = work.checked_optimizer(impl)
        print(f"  {impl}: result checked against torch.optim.AdamW(foreach=False)", flush=True)
    # Calibrate: k steps per batch so a batch lasts >= min_batch_s.
    ks = {}
    for impl, opt in opts.items():
        one = _batch_seconds(opt, 1)
        ks[impl] = max(1, int(min_batch_s / one + 0.999))
    times: Dict[str, List[float]] = {impl: [] for impl in impls}
    for b in range(batches):
        order = impls if b % 2 == 0 else impls[::-1]
        for impl in order:
            times[impl].append(_batch_seconds(opts[impl], ks[impl]))
    print(f"\n{work.numel / 1e6:.1f}M fp32 elements in {len(work.shapes)} tensors; "
          f"torch threads {torch.get_num_threads()}, gdfast threads {gdfast.get_num_threads()}; "
          f"{batches} interleaved batches\n")
    base = statistics.median(times[impls[0]])
    print(f"{'implementation':>15} {'median ms':>10} {'min-max ms':>17} {'GB/s':>7} "
          f"{'time / ' + impls[0]:>16}")
    for impl in impls:
        med = statistics.median(times[impl])
        gbs = BYTES_PER_ELEMENT * work.numel / med / 1e9
        print(f"{impl:>15} {med * 1e3:10.3f} {min(times[impl]) * 1e3:8.3f}-"
              f"{max(times[impl]) * 1e3:<8.3f} {gbs:7.1f} {med / base:16.2f}")
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description="AdamW optimizer.step() on a parameter list")
    parser.add_argument("--model", choices=list(MODELS), default="gpt2-small")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch and gdfast threads (default: leave both as they are)")
    parser.add_argument("--batches", type=int, default=7)
    parser.add_argument("--impls", default=",".join(IMPLS),
                        help="comma-separated, first is the baseline of the ratios")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        gdfast.set_num_threads(args.threads)
    run(args.model, args.impls.split(","), args.batches)


if __name__ == "__main__":
    main()
