"""GPU time of the optimizer kernels alone, per step (torch.profiler's CUDA activity, so no
host time or gap between launches counts): gdfast's and torch fused's AdamW on the
GPT-2-small-shaped list and on 1e8 float32 and 1e8 bfloat16 elements, beside a
copy of as many bytes (the bound); then gdfast's at other chunk sizes (16-byte vectors per
thread per block, set_cuda_chunk_unroll). Run by tools/gpu_check.sh; needs a GPU."""

from __future__ import annotations

import math
import sys
from typing import Any, Callable, List

import torch
from torch.autograd import DeviceType
from torch.profiler import ProfilerActivity, profile

import gdfast.torch as gt
from gdfast import _core

sys.path.insert(0, "bench")
from bench_cuda import GPT2_SHAPES  # noqa: E402

N = int(1e8)


def gpu_us(step: Callable[[], object], steps: int = 20) -> float:
    """The GPU time of what one call ran (its kernels and copies, summed), averaged."""
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            step()
        torch.cuda.synchronize()
    busy = sum(e.time_range.elapsed_us() for e in prof.events()
               if e.device_type == DeviceType.CUDA)
    return busy / steps if busy else math.nan


def params(shapes: List[Any], dtype: torch.dtype) -> List[torch.Tensor]:
    out = [torch.randn(s, device="cuda", dtype=dtype, requires_grad=True) for s in shapes]
    for p in out:
        p.grad = torch.randn_like(p)
    return out


def copy_of(numel: int, bytes_per_elem: int) -> Callable[[], object]:
    src = torch.empty(numel * bytes_per_elem // 8, device="cuda")
    dst = torch.empty_like(src)
    return lambda: dst.copy_(src)


def row(name: str, us: float, bound: float) -> None:
    print(f"  {name:32s} {us:9.1f} us   {100 * bound / us:5.1f}% of bound", flush=True)


def main() -> None:
    torch.manual_seed(0)
    gpt2_numel = sum(math.prod(s) for s in GPT2_SHAPES)
    workloads = {
        "gpt2-list fp32 AdamW": (GPT2_SHAPES, torch.float32, gpt2_numel, 28),
        "1e8 fp32 AdamW": ([(N,)], torch.float32, N, 28),
        "1e8 bf16 AdamW": ([(N,)], torch.bfloat16, N, 14),
    }
    optimizers = {}
    for name, (shapes, dtype, numel, width) in workloads.items():
        bound = gpu_us(copy_of(numel, width))
        print(f"{name}: bound (copy of {width} B/element) {bound:.1f} us", flush=True)
        ours = gt.AdamW(params(shapes, dtype), lr=1e-4)
        theirs = torch.optim.AdamW(params(shapes, dtype), lr=1e-4, fused=True)
        row("torch fused", gpu_us(theirs.step), bound)
        row("gdfast", gpu_us(ours.step), bound)
        optimizers[name] = (ours, bound)
        del theirs
    defaults = {stored: _core.set_cuda_chunk_unroll(1, stored) for stored in (False, True)}
    for unroll in (1, 2, 4, 8, 16, 32):
        for stored in (False, True):
            _core.set_cuda_chunk_unroll(unroll, stored)
        for name, (ours, bound) in optimizers.items():
            row(f"gdfast unroll {unroll:2d}, {name}", gpu_us(ours.step), bound)
    for stored, unroll in defaults.items():
        _core.set_cuda_chunk_unroll(unroll, stored)


if __name__ == "__main__":
    main()
