"""Where the time of a CUDA norm and of a clipped step goes: the GPU time of what a call ran
(kernels and copies, from torch.profiler) against the host's wall time per call, for
gdfast.global_norm and torch.linalg.vector_norm(x).item() on 1e8 float32, and for gdfast's
AdamW step with and without max_grad_norm and LAMB on the GPT-2-small list. Run by
tools/gpu_check.sh; needs a GPU."""

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


def wall_us(call: Callable[[], object], calls: int = 50) -> float:
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


def main() -> None:
    torch.manual_seed(0)
    x = torch.randn(int(1e8), device="cuda")
    print("1e8 float32:", flush=True)
    report("gdfast.global_norm", lambda: gdfast.global_norm(x))
    report("torch.linalg.vector_norm(x).item()", lambda: torch.linalg.vector_norm(x).item())
    print("GPT-2-small list, a step (synchronised):", flush=True)
    for name, opt in [("AdamW", gt.AdamW(params(GPT2_SHAPES, torch.float32), lr=1e-4)),
                      ("AdamW, max_grad_norm=1", gt.AdamW(params(GPT2_SHAPES, torch.float32),
                                                          lr=1e-4, max_grad_norm=1.0)),
                      ("Lamb", gt.Lamb(params(GPT2_SHAPES, torch.float32), lr=1e-4))]:
        report(name, lambda: (opt.step(), torch.cuda.synchronize()))


if __name__ == "__main__":
    main()
