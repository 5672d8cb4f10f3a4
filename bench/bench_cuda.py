"""CUDA throughput (needs gdfast's CUDA kernels, torch with CUDA and a GPU; skipped otherwise):
`pytest bench/bench_cuda.py --benchmark-only`.

- fp32 Adam on 1e8 elements against the device-to-device copy bandwidth measured in the same
  run (Adam moves 28 B per element in place; a copy 8 B): target >= 90% of that bandwidth.
- AdamW step on the GPT-2-small-shaped list against torch.optim.AdamW(fused=True): target
  >= 1.2x.
Each result is checked once against torch before it is timed.
"""

from __future__ import annotations

import pytest

import gdfast

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.skipif(
    not (gdfast.cuda.is_available() and torch.cuda.is_available()),
    reason="needs gdfast's CUDA kernels, torch with CUDA and a GPU")

GPT2_SHAPES = ([(50257, 768), (1024, 768)] + 12 * [
    (768,), (768,), (768, 2304), (2304,), (768, 768), (768,), (768,), (768,),
    (768, 3072), (3072,), (3072, 768), (768,)] + [(768,), (768,)])


def _timed(benchmark, fn):
    def run():
        fn()
        torch.cuda.synchronize()
    benchmark.pedantic(run, rounds=20, iterations=5, warmup_rounds=3)


@pytest.mark.benchmark(group="cuda-adam-1e8")
def test_copy_bandwidth(benchmark):
    src = torch.empty(int(1e8), device="cuda")
    dst = torch.empty_like(src)
    _timed(benchmark, lambda: dst.copy_(src))
    benchmark.extra_info["bytes_per_call"] = 8e8


@pytest.mark.benchmark(group="cuda-adam-1e8")
def test_gdfast_adam_1e8(benchmark):
    n = int(1e8)
    p, g = torch.randn(n, device="cuda"), torch.randn(n, device="cuda")
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    reference = p.clone()
    gdfast.ops.adam_(p, g, m, v, step=1, lr=1e-3)
    torch.cuda.synchronize()
    # Step 1 of Adam moves every element by lr*sign(g) (up to eps).
    torch.testing.assert_close(p, reference - 1e-3 * torch.sign(g), rtol=0, atol=1e-6)
    step = [1]

    def one():
        step[0] += 1
        gdfast.ops.adam_(p, g, m, v, step=step[0], lr=1e-3)
    _timed(benchmark, one)
    benchmark.extra_info["bytes_per_call"] = 28 * n


def _gpt2(fused: bool):
    torch.manual_seed(0)
    params = [torch.randn(s, device="cuda", requires_grad=True) for s in GPT2_SHAPES]
    for p in params:
        p.grad = torch.randn_like(p)
    if fused:
        return params, torch.optim.AdamW(params, lr=1e-4, fused=True)
    import gdfast.torch as gt

    return params, gt.AdamW(params, lr=1e-4)


@pytest.mark.benchmark(group="cuda-gpt2-adamw")
@pytest.mark.parametrize("impl", ["gdfast", "torch-fused"])
def test_gpt2_adamw(benchmark, impl):
    params, opt = _gpt2(impl == "torch-fused")
    twin_params, twin = _gpt2(True)
    opt.step()
    twin.step()
    for a, b in zip(params, twin_params):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    _timed(benchmark, opt.step)
