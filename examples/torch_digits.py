"""Train an MLP on scikit-learn's 8x8 digits with gdfast.torch.AdamW, next to
torch.optim.AdamW(fused=True), and compare the time of optimizer.step().

    python examples/torch_digits.py [--epochs 8] [--hidden 256] [--batch 64]

Both optimizers start from the same weights and see the same minibatches; gdfast.torch.AdamW
is a drop-in replacement (same arguments, state_dict, schedulers, GradScaler). Each step is
timed for both optimizers, alternating which goes first, and the medians are reported.
Needs torch and scikit-learn.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from sklearn.datasets import load_digits

import gdfast
import gdfast.torch


def make_model(hidden: int) -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, hidden), nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                         nn.Linear(hidden, 10))


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=2e-3)
    args = parser.parse_args()

    x, y = load_digits(return_X_y=True)
    x = torch.tensor(x / 16.0, dtype=torch.float32)
    y = torch.tensor(y)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    x, y = x[perm], y[perm]
    x_train, y_train, x_test, y_test = x[:1500], y[:1500], x[1500:], y[1500:]

    models = {"gdfast.torch.AdamW": make_model(args.hidden),
              "torch.optim.AdamW(fused=True)": make_model(args.hidden)}
    opts = {"gdfast.torch.AdamW": gdfast.torch.AdamW(
                models["gdfast.torch.AdamW"].parameters(), lr=args.lr, weight_decay=1e-2),
            "torch.optim.AdamW(fused=True)": torch.optim.AdamW(
                models["torch.optim.AdamW(fused=True)"].parameters(), lr=args.lr,
                weight_decay=1e-2, fused=True)}
    names = list(models)
    step_ns: dict[str, list[int]] = {name: [] for name in names}
    params = sum(p.numel() for p in models[names[0]].parameters())
    print(f"MLP 64-{args.hidden}-{args.hidden}-10: {params:,} params; "
          f"torch threads {torch.get_num_threads()}, gdfast threads {gdfast.get_num_threads()}")
    print(f"{'epoch':>5}  " + "  ".join(f"{name:>30}" for name in names) + "   (mean train loss)")

    step = 0
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(len(x_train), generator=torch.Generator().manual_seed(epoch))
        totals = dict.fromkeys(names, 0.0)
        batches = 0
        for start in range(0, len(order) - args.batch + 1, args.batch):
            idx = order[start:start + args.batch]
            for name in names:
                opts[name].zero_grad()
                loss = F.cross_entropy(models[name](x_train[idx]), y_train[idx])
                loss.backward()
                totals[name] += float(loss.detach())
            # Interleave: alternate which optimizer steps first, so drift in the machine's
            # speed (other load, frequency) hits both alike.
            for name in (names if step % 2 == 0 else names[::-1]):
                t0 = time.perf_counter_ns()
                opts[name].step()
                step_ns[name].append(time.perf_counter_ns() - t0)
            step += 1
            batches += 1
        print(f"{epoch:>5}  " + "  ".join(f"{totals[n] / batches:>30.4f}" for n in names))

    print()
    for name in names:
        warm = step_ns[name][5:]  # the first steps allocate the state
        med = statistics.median(warm) / 1e3
        print(f"{name:>30}: test accuracy {accuracy(models[name], x_test, y_test):.3f}; "
              f"optimizer.step() median {med:.1f} us (min {min(warm) / 1e3:.1f}, "
              f"max {max(warm) / 1e3:.1f}, {len(warm)} steps)")
    ratio = statistics.median(step_ns[names[1]][5:]) / statistics.median(step_ns[names[0]][5:])
    print(f"torch fused / gdfast step time: {ratio:.2f}x "
          f"({'gdfast faster' if ratio > 1 else 'torch fused faster'})")
    drift = max((a - b).abs().max().item() for a, b in
                zip(models[names[0]].parameters(), models[names[1]].parameters()))
    print(f"max |param difference| between the two after {step} steps: {drift:.2e}")


if __name__ == "__main__":
    main()
