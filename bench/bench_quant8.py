"""8-bit blockwise states (issue 12), AdamW at 1e8 elements and on GPT-2 small's tensor list:
gdfast's AdamW with float32 states, AdamW8bit's step with float32 params and grads and with
bfloat16 ones (``gdfast.ops.adam_`` with ``absmax=``, one call per step, a list in one call),
torch.optim.AdamW(fused=True) in float32 (what users would otherwise run), and the stream
bound of each byte pattern (gdfast's in-place stream moving the same bytes per element:
two 8-bit states read and written are 4 bytes, as one bfloat16 state is; the absmax, 8 bytes
per 256 elements, is left out of it). State memory per parameter is measured from the arrays.

    python bench/bench_quant8.py [--workload 1e8|gpt2-small] [--threads N] [--rounds K]
    pytest bench/bench_quant8.py --benchmark-only      # one benchmark per (workload, impl)

The script interleaves the implementations round by round (quote its ratios); pytest-benchmark
times one after the other. Each 8-bit result is checked once before timing, against gdfast's
step with float32 states (check()). Memory: about 5 GB at 1e8 (torch's copy included), 6 GB
for GPT-2 small.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pytest

import gdfast
from gdfast.bench.workloads import Workload, gpt2_small, single

WORKLOADS: Dict[str, Callable[[], Workload]] = {"1e8": lambda: single(10**8),
                                                "gpt2-small": gpt2_small}
HYPER = {"lr": 1e-3, "weight_decay": 1e-2, "decoupled_weight_decay": True}
BLOCK = 256


def _bfloat16() -> Any:
    import ml_dtypes

    return ml_dtypes.bfloat16


class Impl:
    """One implementation on one workload: ``step(k)`` takes step k; ``state_bytes`` the
    optimizer memory it keeps; ``elem_bytes`` the bytes one step moves per element."""

    name = ""
    elem_bytes = 0.0
    bound_of: Optional[str] = None  # the bound row this one is a percentage of

    def step(self, k: int) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def state_bytes(self) -> int:
        return 0

    def params(self) -> List[np.ndarray]:
        return []


class GdfastAdamW(Impl):
    def __init__(self, shapes: Sequence[Tuple[int, ...]], rng: np.random.Generator,
                 param_dtype: Any = np.float32, bits8: bool = False):
        self.p = [rng.standard_normal(s, dtype=np.float32).astype(param_dtype) for s in shapes]
        self.g = [(rng.standard_normal(s, dtype=np.float32) * 1e-2).astype(param_dtype)
                  for s in shapes]
        state_dtype = np.uint8 if bits8 else np.float32
        self.m = [np.zeros(s, state_dtype) for s in shapes]
        self.v = [np.zeros(s, state_dtype) for s in shapes]
        self.absmax: Optional[Dict[str, List[np.ndarray]]] = None
        if bits8:
            blocks = [-(-int(np.prod(s)) // BLOCK) for s in shapes]
            self.absmax = {"exp_avg": [np.zeros(b, np.float32) for b in blocks],
                           "exp_avg_sq": [np.zeros(b, np.float32) for b in blocks]}
        wide = np.dtype(param_dtype).itemsize
        self.elem_bytes = 3 * wide + (4 if bits8 else 16) + (16 / BLOCK if bits8 else 0)
        kind = "bf16" if wide == 2 else "fp32"
        self.name = f"gdfast {kind}{' AdamW8bit' if bits8 else ' AdamW'}"
        self.bound_of = f"bound {kind}{' 8bit' if bits8 else ''}"

    def step(self, k: int) -> None:
        extra = {} if self.absmax is None else {"absmax": self.absmax}
        gdfast.ops.adam_(self.p, self.g, self.m, self.v, step=k, **HYPER, **extra)

    def state_bytes(self) -> int:
        arrays = self.m + self.v + ([] if self.absmax is None
                                    else [a for v in self.absmax.values() for a in v])
        return sum(a.nbytes for a in arrays)

    def params(self) -> List[np.ndarray]:
        return self.p


class Stream(Impl):
    """The in-place stream moving an 8-bit or float32-state step's bytes."""

    def __init__(self, shapes: Sequence[Tuple[int, ...]], param_dtype: Any, bits8: bool):
        self.p = [np.zeros(s, param_dtype) for s in shapes]
        self.g = [np.zeros(s, param_dtype) for s in shapes]
        state = _bfloat16() if bits8 else np.float32
        count = 1 if bits8 else 2  # (two uint8 states move what one bfloat16 state moves)
        self.states = tuple([np.zeros(s, state) for s in shapes] for _ in range(count))
        wide = np.dtype(param_dtype).itemsize
        self.elem_bytes = 3 * wide + (4 if bits8 else 16)
        self.name = f"bound {'bf16' if wide == 2 else 'fp32'}{' 8bit' if bits8 else ''}"

    def step(self, k: int) -> None:
        gdfast._core.stream(self.p, self.g, self.states, 1.0)


class TorchFused(Impl):
    name = "torch fused fp32 AdamW"
    elem_bytes = 28.0

    def __init__(self, shapes: Sequence[Tuple[int, ...]], rng: np.random.Generator):
        import torch

        self.torch = torch
        self.p = [torch.nn.Parameter(torch.from_numpy(rng.standard_normal(s, dtype=np.float32)))
                  for s in shapes]
        for p in self.p:
            p.grad = torch.randn_like(p) * 1e-2
        self.opt = torch.optim.AdamW(self.p, lr=HYPER["lr"], weight_decay=HYPER["weight_decay"],
                                     fused=True)

    def step(self, k: int) -> None:
        self.opt.step()

    def state_bytes(self) -> int:
        return sum(t.numel() * t.element_size() for s in self.opt.state.values()
                   for t in s.values() if t.dim() > 0)


def build(workload: Workload, with_torch: bool = True) -> List[Impl]:
    rng = np.random.default_rng(0)
    shapes = list(workload.shapes)
    bf16 = _bfloat16()
    impls: List[Impl] = [GdfastAdamW(shapes, rng), GdfastAdamW(shapes, rng, bits8=True),
                         GdfastAdamW(shapes, rng, bf16, bits8=True),
                         Stream(shapes, np.float32, False), Stream(shapes, np.float32, True),
                         Stream(shapes, bf16, True)]
    if with_torch:
        try:
            impls.append(TorchFused(shapes, rng))
        except ImportError:
            pass
    return impls


def check(impls: Sequence[Impl], steps: int = 3) -> None:
    """Each 8-bit step against gdfast's step with float32 states from the same params (in
    their type) and grads: the mean distance after ``steps`` steps within a tenth of lr per
    step (an update gone wrong, a lost bias correction, moves every param by about lr per
    step; quantizing the states moves a few by up to that, most by far less)."""
    for impl in impls:
        if not (isinstance(impl, GdfastAdamW) and impl.absmax is not None):
            continue
        reference = [p.copy() for p in impl.p]
        m = [np.zeros(p.shape, np.float32) for p in impl.p]
        v = [np.zeros(p.shape, np.float32) for p in impl.p]
        for k in range(1, steps + 1):
            impl.step(k)
            gdfast.ops.adam_(reference, impl.g, m, v, step=k, **HYPER)
        total = sum(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).sum())
                    for a, b in zip(impl.p, reference))
        mean = total / sum(p.size for p in impl.p)
        if not mean <= 0.1 * HYPER["lr"] * steps:
            raise AssertionError(f"{impl.name}: params {mean:.3g} from the float32-state step's "
                                 f"on average after {steps} steps")


def run(workload: Workload, threads: int, rounds: int, steps_per_round: int) -> None:
    gdfast.set_num_threads(threads)
    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        pass
    impls = build(workload)
    check(impls)
    times: Dict[str, List[float]] = {i.name: [] for i in impls}
    for impl in impls:
        impl.step(10)  # (warm: pages touched, threads up)
    for r in range(rounds):
        for impl in impls:
            start = time.perf_counter()
            for k in range(steps_per_round):
                impl.step(11 + r * steps_per_round + k)
            times[impl.name].append((time.perf_counter() - start) / steps_per_round)
    median = {name: statistics.median(t) for name, t in times.items()}
    n = workload.numel
    print(f"AdamW, {workload.name} ({n:,} elements, {workload.tensors} tensors), "
          f"{threads} threads, {rounds} interleaved rounds of {steps_per_round} steps; "
          f"ISA {gdfast.isa_info()['active']}")
    print(f"{'implementation':28s} {'median':>10s} {'min-max':>17s} {'B/elem':>7s} "
          f"{'% bound':>8s} {'vs gdfast fp32':>15s} {'state B/param':>14s}")
    base = median["gdfast fp32 AdamW"]
    for impl in impls:
        t = median[impl.name]
        bound = f"{100 * median[impl.bound_of] / t:7.0f}%" if impl.bound_of else ""
        state = f"{impl.state_bytes() / n:14.3f}" if impl.state_bytes() else ""
        spread = f"{min(times[impl.name]) * 1e3:.1f}-{max(times[impl.name]) * 1e3:.1f} ms"
        print(f"{impl.name:28s} {t * 1e3:8.2f}ms {spread:>17s} {impl.elem_bytes:7.2f} "
              f"{bound:>8s} {base / t:14.2f}x {state}")
    if "torch fused fp32 AdamW" in median:
        torch_t = median["torch fused fp32 AdamW"]
        for name in ("gdfast fp32 AdamW8bit", "gdfast bf16 AdamW8bit"):
            print(f"{name} vs torch fused fp32 AdamW: {torch_t / median[name]:.2f}x")


# -- pytest-benchmark ----------------------------------------------------------------------------
@pytest.mark.parametrize("workload", list(WORKLOADS))
@pytest.mark.parametrize("which", range(7), ids=["fp32", "fp32-8bit", "bf16-8bit", "bound-fp32",
                                                 "bound-fp32-8bit", "bound-bf16-8bit",
                                                 "torch-fused"])
def test_quant8(benchmark: Any, workload: str, which: int) -> None:
    pytest.importorskip("ml_dtypes")
    impls = build(WORKLOADS[workload](), with_torch=which == 6)
    if which >= len(impls):
        pytest.skip("torch is not installed")
    if which in (1, 2):
        check(impls)
    impl = impls[which]
    benchmark.group = f"adamw-8bit-{workload}"
    benchmark.extra_info.update(elem_bytes=impl.elem_bytes,
                                state_bytes_per_param=impl.state_bytes() / impl_numel(impls))
    count = iter(range(100, 10**9))
    benchmark(lambda: impl.step(next(count)))


def impl_numel(impls: Sequence[Impl]) -> int:
    first = impls[0]
    assert isinstance(first, GdfastAdamW)
    return sum(p.size for p in first.p)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=list(WORKLOADS), default="1e8")
    parser.add_argument("--threads", type=int, default=gdfast.get_num_threads())
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=3, help="steps per round")
    args = parser.parse_args()
    run(WORKLOADS[args.workload](), args.threads, args.rounds, args.steps)


if __name__ == "__main__":
    main()
