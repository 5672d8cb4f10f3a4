"""Host time of one optimizer step on CUDA params (what the CPU spends before the launches),
for gdfast.torch.AdamW and torch.optim.AdamW(fused=True) on the GPT-2-small-shaped list, and
where gdfast's goes (cProfile). Run by tools/gpu_check.sh; needs a GPU."""

from __future__ import annotations

import cProfile
import pstats
import sys
import time

import torch

import gdfast.torch as gt
from gdfast import _core

sys.path.insert(0, "bench")
from bench_cuda import GPT2_SHAPES  # noqa: E402


def host_time(opt, steps: int = 50) -> float:
    for _ in range(3):
        opt.step()
    torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        opt.step()
    elapsed = time.perf_counter() - start  # (the GPU may still be at work: not waited for)
    torch.cuda.synchronize()
    return elapsed / steps


def core_call(opt, steps: int = 200) -> None:
    """How much of a step is the C++ call (the checks, the launch; the grads arrive read, by
    _core.torch_grads): the step's call replayed, each call timed alone after a
    synchronisation (back to back, a full launch queue would time the GPU instead)."""
    real, calls = _core.step, []

    def recording(*args):
        calls.append(args)
        return real(*args)

    _core.step = recording
    try:
        opt.step()
    finally:
        _core.step = real
    rule, batches, stream = calls[-1]
    elapsed = 0.0
    for _ in range(steps):
        torch.cuda.synchronize()
        start = time.perf_counter()
        real(rule, batches, stream)
        elapsed += time.perf_counter() - start
    torch.cuda.synchronize()
    print(f"host time per step, the C++ call: {1e6 * elapsed / steps:.0f} us")


def main() -> None:
    params = [torch.zeros(s, device="cuda", requires_grad=True) for s in GPT2_SHAPES]
    for p in params:
        p.grad = torch.zeros_like(p)
    ours, theirs = gt.AdamW(params, lr=1e-4), torch.optim.AdamW(params, lr=1e-4, fused=True)
    # As before batches kept views of their tensors: each step read every tensor anew.
    kept, gt._kept = gt._kept, lambda array: array
    rereading = gt.AdamW(params, lr=1e-4)
    rereading.step()  # (makes its batch now)
    gt._kept = kept
    for name, opt in (("gdfast", ours), ("gdfast re-reading tensors", rereading),
                      ("torch-fused", theirs)):
        print(f"host time per step, {name}: {1e6 * host_time(opt):.0f} us")
    # The step as it was before the grads were read in one C++ pass (a Python loop checked
    # each grad, then the kernel call read it).
    one_pass, _core.torch_grads = _core.torch_grads, lambda grads, dtype: None
    try:
        print(f"host time per step, gdfast with grads checked in Python: "
              f"{1e6 * host_time(ours):.0f} us")
    finally:
        _core.torch_grads = one_pass
    core_call(ours)
    profile = cProfile.Profile()
    profile.runcall(host_time, ours, 20)
    pstats.Stats(profile).sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    main()
