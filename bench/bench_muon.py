"""Muon on fp32 torch params: ``gdfast.torch.Muon`` against ``torch.optim.Muon`` and
``pytorch_optimizer.Muon``, and ``gdfast.Muon`` (NumPy, float32 iteration), on the 2-D
matrices of GPT-2-small blocks (attention qkv and projection, MLP in and out: 7.1e6 elements a
block). Also: the iteration's matrix products against torch's own bfloat16 GEMM rate (a square
2048^3 product), and the two fused elementwise phases' share of the step.

    pytest bench/bench_muon.py --benchmark-only
    python bench/bench_muon.py [--blocks 1]   # interleaved: median of 9 steps each
    python bench/bench_muon.py --precision    # gdfast.torch.Muon's precision options

Each torch implementation's first step is checked against torch.optim.Muon's before it is
timed (the bound of tests/test_muon.py); pytorch_optimizer's Muon has other defaults and is
timed only.
"""

from __future__ import annotations

import argparse
from typing import Any, Callable, Dict, Sequence, Tuple

import numpy as np
import pytest
from interleaved import interleaved_medians, print_medians, torch_params

import gdfast

BLOCK = [(2304, 768), (768, 768), (3072, 768), (768, 3072)]
LR = 0.02


def make_step(impl: str, shapes: Sequence[Tuple[int, int]]) -> Callable[[], None]:
    if impl == "gdfast-numpy":
        rng = np.random.default_rng(0)
        arrays = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
        grads = [rng.standard_normal(s, dtype=np.float32) for s in shapes]
        numpy_opt = gdfast.Muon(arrays, lr=LR)
        return lambda: numpy_opt.step(grads)
    torch = pytest.importorskip("torch")
    params = torch_params(shapes)
    if impl == "pytorch_optimizer":
        pytorch_optimizer = pytest.importorskip("pytorch_optimizer")
        group = dict(params=params, use_muon=True)  # (its groups say which params are Muon's)
        return pytorch_optimizer.Muon([group], lr=LR).step  # type: ignore[no-any-return]
    if impl == "torch":
        return torch.optim.Muon(params, lr=LR).step  # type: ignore[no-any-return]
    from gdfast.torch import Muon

    opt = Muon(params, lr=LR)
    reference = [p.detach().clone().requires_grad_() for p in params]
    for r, p in zip(reference, params):
        r.grad = p.grad.clone()
    before = [p.detach().clone() for p in params]
    torch.optim.Muon(reference, lr=LR).step()
    opt.step()
    for p, r, p0 in zip(params, reference, before):
        step = (r.detach() - p0).abs().max().item()
        assert (p - r).abs().max().item() <= 2.0**-4 * step  # (tests/test_muon.py's bound)
    return opt.step  # type: ignore[no-any-return]


IMPLS = ("gdfast", "torch", "pytorch_optimizer", "gdfast-numpy")
# (NumPy's OpenBLAS threads spin for a while after each product and slow whatever runs next:
# the NumPy class is timed in a round of its own)
TORCH_IMPLS = IMPLS[:3]


def _iteration_flops(shapes: Sequence[Tuple[int, int]], steps: int = 5) -> float:
    total = 0.0
    for rows, cols in shapes:
        m, n = min(rows, cols), max(rows, cols)
        total += steps * (4.0 * m * m * n + 2.0 * m**3)  # X X^T, A A, B X
    return total


def matmul_rates(shapes: Sequence[Tuple[int, int]]) -> Dict[str, float]:
    """GFLOP/s, interleaved: of gdfast.torch's iteration alone (on bfloat16 inputs), of torch's
    plain bfloat16 products of the same shapes (the BLAS's own rate for them), and of one
    square 2048^3 bfloat16 product."""
    import torch

    from gdfast import _muon
    from gdfast._muon_torch import newton_schulz_bfloat16

    inputs = [torch.randn(s).bfloat16() for s in shapes]
    square = torch.randn(2048, 2048).bfloat16()

    def iteration() -> None:
        for x in inputs:
            newton_schulz_bfloat16(x.clone(), _muon.DEFAULTS)

    def products() -> None:
        for x in inputs:
            wide = x.T if x.size(0) > x.size(1) else x
            for _ in range(5):
                gram = wide @ wide.T
                gram @ gram
                gram @ wide

    median = interleaved_medians({"iteration": iteration, "products": products,
                                  "square": lambda: square @ square})
    flops = _iteration_flops(shapes)
    return {"iteration": flops / median["iteration"] / 1e9,
            "products": flops / median["products"] / 1e9,
            "square": 2.0 * 2048**3 / median["square"] / 1e9}


def phases_time(shapes: Sequence[Tuple[int, int]]) -> Dict[str, float]:
    """Seconds of the two fused phases alone over the matrices, and of their bound: gdfast's
    in-place stream over the same arrays, types and slots (phase 1 reads the gradient and the
    buffer and writes the buffer and the bfloat16 input; phase 2 reads the bfloat16 output and
    writes the param); interleaved, median of 9."""
    import torch

    from gdfast import _core, _muon
    from gdfast._muon_torch import new_input

    params = torch_params(shapes)
    buffers = [torch.zeros_like(p) for p in params]
    outputs = [torch.randn(s).bfloat16() for s in shapes]
    arrays = [(p.detach(), p.grad) for p in params]
    inputs = [new_input(p) for p, _ in arrays]

    def phases() -> None:
        for (p, g), b, o in zip(arrays, buffers, outputs):
            _muon.momentum_phase(new_input(p), g, b, _muon.DEFAULTS)
            _muon.apply_phase(p, o, _muon.DEFAULTS)

    def bound() -> None:
        for (p, g), b, o, x in zip(arrays, buffers, outputs, inputs):
            _core.stream(x, g, (b,), 1e-9)
            _core.stream(p, o, (), 1e-9)

    return interleaved_medians({"phases": phases, "bound": bound})


# gdfast.torch.Muon's precision modes: (param dtype, options).
PRECISION_MODES = {
    "fp32": ("float32", {}),
    "bf16": ("bfloat16", {}),
    "bf16, fp32 master": ("bfloat16", {"master_weights": True}),
    "bf16, stochastic": ("bfloat16", {"stochastic_rounding": True, "seed": 1}),
    "fp32, 8-bit buffers": ("float32", {"optim_bits": 8}),
}


def precision_steps(shapes: Sequence[Tuple[int, int]]) -> Dict[str, Callable[[], None]]:
    """gdfast.torch.Muon's step in each precision mode, on the same values."""
    torch = pytest.importorskip("torch")
    from gdfast.torch import Muon

    steps = {}
    for name, (dtype, options) in PRECISION_MODES.items():
        params = torch_params(shapes)
        for p in params:
            p.data, p.grad = p.data.to(getattr(torch, dtype)), p.grad.to(getattr(torch, dtype))
        steps[name] = Muon(params, lr=LR, **options).step
    return steps


@pytest.mark.benchmark(group="muon-gpt2-block")
@pytest.mark.parametrize("impl", IMPLS)
def test_muon(benchmark: Any, impl: str) -> None:
    benchmark.pedantic(make_step(impl, BLOCK), rounds=3, iterations=1, warmup_rounds=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--blocks", type=int, default=1, help="GPT-2-small blocks (7.1e6 each)")
    parser.add_argument("--precision", action="store_true",
                        help="gdfast.torch.Muon in each precision mode instead")
    args = parser.parse_args()
    shapes = BLOCK * args.blocks
    elements = sum(r * c for r, c in shapes)
    if args.precision:
        median = interleaved_medians(precision_steps(shapes))
        print_medians(f"gdfast.torch.Muon, {elements:.2e} elements, "
                      f"{gdfast.get_num_threads()} threads", median)
        for name, t in median.items():
            print(f"  {name:<22}{t / median['fp32']:6.2f}x fp32's time")
        return
    steps = {}
    for name in IMPLS:
        try:
            steps[name] = make_step(name, shapes)
        except pytest.skip.Exception:
            print(f"  ({name}: not installed)")
    median = interleaved_medians({k: v for k, v in steps.items() if k in TORCH_IMPLS})
    median.update(interleaved_medians({"gdfast-numpy": steps["gdfast-numpy"]}))
    print_medians(f"Muon, {elements:.2e} elements in {len(shapes)} matrices, "
                  f"{gdfast.get_num_threads()} threads (gdfast-numpy: timed alone)", median)
    for name, t in median.items():
        print(f"  {name:<18}{t / median['gdfast']:6.2f}x gdfast's time")
    rates = matmul_rates(shapes)
    phases = phases_time(shapes)
    print(f"bfloat16 GFLOP/s: the iteration {rates['iteration']:.0f}, torch's plain products of "
          f"the same shapes {rates['products']:.0f} ({rates['iteration'] / rates['products']:.0%}"
          f"), a 2048^3 product {rates['square']:.0f} ({rates['iteration'] / rates['square']:.0%})")
    print(f"the two fused phases: {phases['phases'] * 1e3:.1f} ms, "
          f"{phases['phases'] / median['gdfast']:.1%} of gdfast's step; their stream bound "
          f"{phases['bound'] * 1e3:.1f} ms ({phases['bound'] / phases['phases']:.0%} of bound)")


if __name__ == "__main__":
    main()
