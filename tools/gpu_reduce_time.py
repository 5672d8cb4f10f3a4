"""What the reductions cost on CUDA (clipping by norm, monitoring, LAMB's per-tensor sums): the
GPU time of what a call ran (kernels and copies, from torch.profiler) beside the host's wall
time per call (each call synchronises), for gdfast.global_norm and
torch.linalg.vector_norm(x).item() on 1e8 float32; gdfast.ops.adam_ and lamb_ on 1e8 float32,
plain and with monitor=True; and gdfast.torch's AdamW (plain, with max_grad_norm, with
monitor) and Lamb steps on the GPT-2-small list. Run by tools/gpu_check.sh; needs a GPU."""

from __future__ import annotations

import sys
import time
from typing import Callable

import torch

import gdfast
import gdfast.torch as gt

sys.path.insert(0, "bench")
sys.path.insert(0, "tools")
from bench_cuda import GPT2_SHAPES  # noqa: E402
from gpu_kernel_time import gpu_us, params  # noqa: E402

N = int(1e8)


def wall_us(call: Callable[[], object], calls: int = 30) -> float:
    for _ in range(3):
        call()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    torch.cuda.synchronize()
    return (time.perf_counter() - start) / calls * 1e6


def report(name: str, call: Callable[[], object]) -> None:
    print(f"  {name:40s} GPU {gpu_us(call):8.1f} us   wall {wall_us(call):8.1f} us", flush=True)


def on_1e8_elements() -> None:
    x = torch.randn(N, device="cuda")
    print("1e8 float32:", flush=True)
    report("gdfast.global_norm", lambda: gdfast.global_norm(x))
    report("torch.linalg.vector_norm(x).item()", lambda: torch.linalg.vector_norm(x).item())
    g, m, v = torch.randn_like(x), torch.zeros_like(x), torch.zeros_like(x)
    for rule in ("adam", "lamb"):
        op = getattr(gdfast.ops, rule + "_")
        for monitor in (False, True):
            report(f"ops.{rule}_" + (", monitor=True" if monitor else ""),
                   lambda: op(x, g, m, v, step=1, lr=1e-6, monitor=monitor))


def main() -> None:
    torch.manual_seed(0)
    on_1e8_elements()
    print("GPT-2-small list, gdfast.torch (a step and a synchronisation):", flush=True)
    for name, cls, options in [("AdamW", gt.AdamW, {}),
                               ("AdamW, max_grad_norm=1", gt.AdamW, {"max_grad_norm": 1.0}),
                               ("AdamW, monitor=True", gt.AdamW, {"monitor": True}),
                               ("Lamb", gt.Lamb, {}),
                               ("Lamb, monitor=True", gt.Lamb, {"monitor": True})]:
        opt = cls(params(GPT2_SHAPES, torch.float32), lr=1e-4, **options)
        report(name, lambda: (opt.step(), torch.cuda.synchronize()))


if __name__ == "__main__":
    main()
