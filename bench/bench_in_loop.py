"""optimizer.step() timed inside a training loop, right after backward (caches cold, torch's
OpenMP threads still spinning), for gdfast.torch.AdamW and torch.optim.AdamW(fused=True) on
bench_in_backward.py's GPT-2-small-shaped model (148 tensors, 124.4M params).

    python bench/bench_in_loop.py [--steps 20] [--tokens 64]

Two copies of the model start from the same weights and see the same batches of random
tokens. Each iteration runs forward and backward for both, then both steps, alternating which
steps first, so that the machine's drift hits both alike; medians after 3 warm-up steps. The
two copies' params are compared after the first step, from the same grads (the same AdamW in
float32: within rounding); later their grads differ in the last bits, which Adam's
normalisation of near-zero gradients amplifies, as between any two float32 runs.
"""

from __future__ import annotations

import argparse
import statistics
import time

import pytest

torch = pytest.importorskip("torch")  # (pytest collects bench_*.py: skipped without torch)
from bench_in_backward import TOKENS, VOCAB, GPT2Small, _loss  # noqa: E402

import gdfast  # noqa: E402
import gdfast.torch  # noqa: E402

WARMUP = 3  # the first steps allocate the states


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--tokens", type=int, default=TOKENS, help="tokens a step (one sequence)")
    args = parser.parse_args()

    names = ["gdfast.torch.AdamW", "torch.optim.AdamW(fused=True)"]
    models = {}
    for name in names:
        torch.manual_seed(0)
        models[name] = GPT2Small()
    hyper = dict(lr=1e-4, weight_decay=0.1)
    opts = {names[0]: gdfast.torch.AdamW(models[names[0]].parameters(), **hyper),
            names[1]: torch.optim.AdamW(models[names[1]].parameters(), fused=True, **hyper)}
    params = list(models[names[0]].parameters())
    print(f"GPT-2-small-shaped: {len(params)} tensors, {sum(p.numel() for p in params):,} "
          f"params; torch threads {torch.get_num_threads()}, gdfast threads "
          f"{gdfast.get_num_threads()}; {args.tokens} tokens a step")

    step_ns: dict[str, list[int]] = {name: [] for name in names}
    tokens = torch.Generator().manual_seed(1)
    for step in range(args.steps + WARMUP):
        batch = torch.randint(VOCAB, (1, args.tokens + 1), generator=tokens)
        for name in names:
            opts[name].zero_grad()
            _loss(models[name], batch).backward()
        for name in (names if step % 2 == 0 else names[::-1]):
            start = time.perf_counter_ns()
            opts[name].step()
            step_ns[name].append(time.perf_counter_ns() - start)
        if step == 0:
            first = max((a - b).abs().max().item() for a, b in
                        zip(models[names[0]].parameters(), models[names[1]].parameters()))

    for name in names:
        warm = step_ns[name][WARMUP:]
        print(f"{name:>30}: optimizer.step() median {statistics.median(warm) / 1e6:.1f} ms "
              f"(min {min(warm) / 1e6:.1f}, max {max(warm) / 1e6:.1f}, {len(warm)} steps)")
    ratio = statistics.median(step_ns[names[1]][WARMUP:]) / statistics.median(
        step_ns[names[0]][WARMUP:])
    print(f"torch fused / gdfast step time: {ratio:.2f}x "
          f"({'gdfast faster' if ratio > 1 else 'torch fused faster'})")
    print(f"max |param difference| between the two after the first step: {first:.2e}")


if __name__ == "__main__":
    main()
