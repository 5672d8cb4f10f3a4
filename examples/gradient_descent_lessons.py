"""The basic lessons of gradient descent, on a real dataset, as one picture.

    python examples/gradient_descent_lessons.py [--out lessons.png] [--epochs 30]

A linear model fit by least squares to the one-hot labels of scikit-learn's 8x8 digits (1797
images, 64 pixels valued 0 to 16, left unscaled: that makes the problem ill-conditioned, as
real ones are), trained with gdfast's optimizers on NumPy arrays. Six panels, each the training
loss per epoch (one pass over the data):
  1. batch vs mini-batch vs stochastic gradient descent (the same learning rate);
  2. the learning rate: too small, about right, too large (it diverges);
  3. momentum, at the same learning rate;
  4. SGD vs Adam vs RMSprop vs Lion vs Sophia (second order: the Hessian's diagonal);
  5. exploding gradients: a rate that diverges, with and without clipping by the gradient norm;
  6. a schedule: a constant rate vs a cosine with warmup (gdfast.schedules).
Needs scikit-learn and matplotlib.
"""

from __future__ import annotations

import argparse
import math
from typing import Callable, Dict, List, Optional

import numpy as np

import gdfast
from gdfast.schedules import Cosine

Curves = Dict[str, List[float]]


def digits() -> tuple:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32), y


def loss_and_grads(params: List[np.ndarray], x: np.ndarray, y: np.ndarray) -> tuple:
    """Least squares on one-hot targets: the mean over samples of |x @ w + b - onehot(y)|^2 / 2,
    and its gradients (float32). Its curvature is fixed (x's covariance), so a rate above
    2 / (its largest eigenvalue) makes every step overshoot further: divergence."""
    w, b = params
    with np.errstate(over="ignore", invalid="ignore"):
        residual = x @ w + b
        residual[np.arange(len(y)), y] -= 1.0
        loss = float(0.5 * np.square(residual, dtype=np.float64).sum() / len(y))
        residual /= len(y)
        return loss, [(x.T @ residual).astype(np.float32), residual.sum(axis=0).astype(np.float32)]


def hessian_diagonal(x: np.ndarray, outputs: int = 10) -> List[np.ndarray]:
    """The least-squares loss's Hessian diagonal on a batch, exactly: mean(x_j^2) for every
    weight of input j, 1 for the biases (what Sophia estimates on a real network)."""
    h_w = np.square(x, dtype=np.float64).mean(axis=0)
    return [np.repeat(h_w[:, None], outputs, axis=1).astype(np.float32),
            np.ones(outputs, np.float32)]


def train(make_optimizer: Callable[[List[np.ndarray]], object], x: np.ndarray, y: np.ndarray,
          epochs: int, batch: Optional[int] = 64, seed: int = 0,
          hessian_every: int = 0) -> List[float]:
    """The full-data loss before training and after each epoch (inf once it diverged).
    hessian_every > 0: the step gets the batch's Hessian diagonal every that many steps
    (Sophia's refresh)."""
    rng = np.random.default_rng(seed)
    params = [np.zeros((x.shape[1], 10), np.float32), np.zeros(10, np.float32)]
    optimizer = make_optimizer(params)
    size = len(y) if batch is None else batch
    curve = [loss_and_grads(params, x, y)[0]]
    steps = 0
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), size):
            rows = order[start:start + size]
            _, grads = loss_and_grads(params, x[rows], y[rows])
            if hessian_every and steps % hessian_every == 0:
                optimizer.step(grads, hessian=hessian_diagonal(x[rows]))  # type: ignore
            else:
                optimizer.step(grads)  # type: ignore[attr-defined]
            steps += 1
        loss = loss_and_grads(params, x, y)[0]
        curve.append(loss if math.isfinite(loss) and loss < 1e6 else math.inf)
    return curve


def lessons(epochs: int = 30) -> Dict[str, Curves]:
    """Every panel's curves: {panel title: {label: losses}}."""
    x, y = digits()
    sgd = gdfast.SGD
    steps_per_epoch = math.ceil(len(y) / 64)
    return {
        "batch vs mini-batch vs stochastic (SGD, lr 3e-5)": {
            "batch (all 1797)": train(lambda p: sgd(p, lr=3e-5), x, y, epochs, batch=None),
            "mini-batch (64)": train(lambda p: sgd(p, lr=3e-5), x, y, epochs, batch=64),
            "stochastic (1)": train(lambda p: sgd(p, lr=3e-5), x, y, epochs, batch=1),
        },
        "the learning rate (SGD)": {
            "too small (1e-6)": train(lambda p: sgd(p, lr=1e-6), x, y, epochs),
            "about right (1e-4)": train(lambda p: sgd(p, lr=1e-4), x, y, epochs),
            "too large (1e-3)": train(lambda p: sgd(p, lr=1e-3), x, y, epochs),
        },
        "momentum (SGD, lr 1e-5)": {
            "none": train(lambda p: sgd(p, lr=1e-5), x, y, epochs),
            "0.9": train(lambda p: sgd(p, lr=1e-5, momentum=0.9), x, y, epochs),
        },
        "optimizers": {
            "SGD (lr 1e-4)": train(lambda p: sgd(p, lr=1e-4), x, y, epochs),
            "Adam (lr 1e-3)": train(lambda p: gdfast.Adam(p, lr=1e-3), x, y, epochs),
            "RMSprop (lr 1e-4)": train(lambda p: gdfast.RMSprop(p, lr=1e-4), x, y, epochs),
            "Lion (lr 1e-4)": train(lambda p: gdfast.Lion(p, lr=1e-4), x, y, epochs),
            "Sophia (lr 2e-2, diag(H) every 10)": train(
                lambda p: gdfast.SophiaH(p, lr=2e-2, p=0.05), x, y, epochs, hessian_every=10),
        },
        "exploding gradients (SGD, lr 1e-3)": {
            "not clipped": train(lambda p: sgd(p, lr=1e-3), x, y, epochs),
            "max_grad_norm=1": train(lambda p: sgd(p, lr=1e-3, max_grad_norm=1.0), x, y, epochs),
        },
        "a schedule (Adam)": {
            "constant 1e-2": train(lambda p: gdfast.Adam(p, lr=1e-2), x, y, epochs),
            "cosine from 1e-2, warmup": train(lambda p: gdfast.Adam(p, lr=Cosine(
                1e-2, total_steps=epochs * steps_per_epoch, warmup_steps=steps_per_epoch)),
                x, y, epochs),
        },
    }


def plot(panels: Dict[str, Curves], out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, (title, curves) in zip(axes.flat, panels.items()):
        for label, curve in curves.items():
            shown = [v if math.isfinite(v) else np.nan for v in curve]
            line, = ax.plot(range(len(curve)), shown, label=label)
            if not math.isfinite(curve[-1]):  # diverged: mark where it left the chart
                last = max(i for i, v in enumerate(curve) if math.isfinite(v))
                ax.plot(last, curve[last], "x", color=line.get_color(), markersize=10)
                line.set_label(f"{label}: diverged")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.set_yscale("log")
        ax.legend(fontsize=8)
    fig.suptitle("Gradient descent on scikit-learn's digits (a linear model, least squares), "
                 "stepped by gdfast")
    fig.tight_layout()
    fig.savefig(out, dpi=80)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="lessons.png")
    parser.add_argument("--epochs", type=int, default=30)
    args = parser.parse_args()
    panels = lessons(args.epochs)
    plot(panels, args.out)
    for title, curves in panels.items():
        print(title)
        for label, curve in curves.items():
            print(f"  {label:24s} final loss {curve[-1]:.4g}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
