"""The step inside backward (issue 14): peak memory and time of a training step of a
GPT-2-small-shaped model on the CPU (12 pre-norm blocks of width 768, 50257-token tied
embedding: 124M params; batch 1, 64 tokens) with gdfast.torch.AdamW, stepped after backward
(params + grads + states held at once) and inside it (gdfast.torch.step_in_backward: each grad
freed as its param is stepped).

    python bench/bench_in_backward.py [--rounds K] [--threads N]
    pytest bench/bench_in_backward.py --benchmark-only

Peak memory is each mode's peak resident set in a process of its own (ru_maxrss, after three
steps: the states exist from the first); time is forward + backward (+ step) per training
step, the two modes interleaved step by step in one process, median of the rounds.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional

import pytest

torch = pytest.importorskip("torch")
import gdfast  # noqa: E402
import gdfast.torch as gt  # noqa: E402

VOCAB, WIDTH, LAYERS, CONTEXT, TOKENS = 50257, 768, 12, 1024, 64


class GPT2Small(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.tokens = torch.nn.Embedding(VOCAB, WIDTH)
        self.positions = torch.nn.Embedding(CONTEXT, WIDTH)
        layer = torch.nn.TransformerEncoderLayer(WIDTH, 12, 4 * WIDTH, dropout=0.0,
                                                 activation="gelu", batch_first=True,
                                                 norm_first=True)
        self.blocks = torch.nn.TransformerEncoder(layer, LAYERS, enable_nested_tensor=False)
        self.norm = torch.nn.LayerNorm(WIDTH)

    def forward(self, idx: Any) -> Any:
        n = idx.shape[1]
        h = self.tokens(idx) + self.positions(torch.arange(n))
        mask = torch.nn.Transformer.generate_square_subsequent_mask(n)
        return self.norm(self.blocks(h, mask=mask, is_causal=True)) @ self.tokens.weight.T


def _batch(seed: int) -> Any:
    return torch.randint(0, VOCAB, (1, TOKENS + 1), generator=torch.Generator().manual_seed(seed))


def _loss(model: Any, data: Any) -> Any:
    out = model(data[:, :-1])
    return torch.nn.functional.cross_entropy(out.reshape(-1, VOCAB), data[:, 1:].reshape(-1))


def train_step(model: Any, opt: Any, in_backward: bool, seed: int) -> None:
    if in_backward:
        _loss(model, _batch(seed)).backward()
        return
    opt.zero_grad(set_to_none=True)
    _loss(model, _batch(seed)).backward()
    opt.step()


def peak_memory(in_backward: bool, steps: int = 3) -> Dict[str, float]:
    """In this process: the peak resident set after ``steps`` training steps."""
    torch.manual_seed(0)
    model = GPT2Small()
    opt = gt.AdamW(model.parameters(), lr=1e-4)
    if in_backward:
        gt.step_in_backward(opt)
    for k in range(steps):
        train_step(model, opt, in_backward, k)
    params = sum(p.numel() for p in model.parameters())
    return {"peak_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "params": params}


def measure_memory() -> Dict[str, Dict[str, float]]:
    out = {}
    for mode in ("after", "inside"):
        code = (f"import json, sys; sys.path.insert(0, {str(__file__.rsplit('/', 1)[0])!r}); "
                f"import bench_in_backward as b; "
                f"print(json.dumps(b.peak_memory({mode == 'inside'})))")
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                check=True)
        out[mode] = json.loads(result.stdout.strip().splitlines()[-1])
    return out


def measure_time(rounds: int) -> Dict[str, List[float]]:
    torch.manual_seed(0)
    models = {mode: GPT2Small() for mode in ("after", "inside")}
    opts = {mode: gt.AdamW(m.parameters(), lr=1e-4) for mode, m in models.items()}
    gt.step_in_backward(opts["inside"])
    times: Dict[str, List[float]] = {"after": [], "inside": []}
    for k in range(rounds + 1):
        for mode in ("after", "inside"):
            start = time.perf_counter()
            train_step(models[mode], opts[mode], mode == "inside", k)
            if k > 0:  # (the first makes the states)
                times[mode].append(time.perf_counter() - start)
    return times


def main(argv: Optional[List[str]] = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--threads", type=int, default=gdfast.get_num_threads())
    args = parser.parse_args(argv)
    gdfast.set_num_threads(args.threads)
    torch.set_num_threads(args.threads)
    memory = measure_memory()
    after, inside = memory["after"]["peak_gib"], memory["inside"]["peak_gib"]
    params = int(memory["after"]["params"])
    print(f"GPT-2-small-shaped model ({params:,} params), AdamW, batch 1 x {TOKENS} tokens, "
          f"{args.threads} threads")
    print(f"peak memory: step after backward {after:.2f} GiB, inside backward {inside:.2f} GiB "
          f"({100 * (inside - after) / after:+.1f}%; grads are {params * 4 / 2**30:.2f} GiB)")
    times = measure_time(args.rounds)
    med = {mode: statistics.median(t) for mode, t in times.items()}
    print(f"forward + backward + step, median of {args.rounds} interleaved: after "
          f"{med['after'] * 1e3:.0f} ms (min {min(times['after']) * 1e3:.0f}), inside "
          f"{med['inside'] * 1e3:.0f} ms (min {min(times['inside']) * 1e3:.0f}); "
          f"inside/after {med['inside'] / med['after']:.3f}")


@pytest.mark.parametrize("in_backward", [False, True], ids=["after", "inside"])
def test_in_backward(benchmark: Any, in_backward: bool) -> None:
    torch.manual_seed(0)
    model = GPT2Small()
    opt = gt.AdamW(model.parameters(), lr=1e-4)
    if in_backward:
        gt.step_in_backward(opt)
    train_step(model, opt, in_backward, 0)
    seeds = iter(range(1, 10**9))
    benchmark.group = "gpt2-small-train-step"
    benchmark(lambda: train_step(model, opt, in_backward, next(seeds)))


if __name__ == "__main__":
    main()
