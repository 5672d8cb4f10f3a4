"""gdfast.torch.AdamW as DeepSpeed's optimizer under ZeRO (stages 0 to 3, optimizer offload to
the CPU), next to torch.optim.AdamW under the same config: one process, on the CPU.

    python examples/deepspeed_zero.py [--stage 3] [--offload] [--steps 5]

DeepSpeed takes a client optimizer it does not know only with
``"zero_allow_untested_optimizer": true``, and with ZeRO-Offload also
``"zero_force_ds_cpu_optimizer": false`` (it would otherwise insist on its own CPUAdam).
Prints the largest difference between the two runs' params. Needs DeepSpeed
(``pip install --no-build-isolation deepspeed``).
"""

from __future__ import annotations

import argparse
import os
from typing import Any, Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F


def ds_config(stage: int, offload: bool) -> Dict[str, Any]:
    config: Dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 8,
        "zero_allow_untested_optimizer": True,  # gdfast's optimizer is not one DeepSpeed knows
        "zero_optimization": {"stage": stage},
    }
    if offload:
        config["zero_optimization"]["offload_optimizer"] = {"device": "cpu"}
        config["zero_force_ds_cpu_optimizer"] = False
    return config


def train(make_optimizer: Any, stage: int, offload: bool, steps: int) -> List[torch.Tensor]:
    import deepspeed

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.Tanh(), nn.Linear(32, 4))
    engine, _, _, _ = deepspeed.initialize(model=model, optimizer=make_optimizer(model),
                                           config=ds_config(stage, offload))
    data = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(8, 16, generator=data), torch.randn(8, 4, generator=data)
        engine.backward(F.mse_loss(engine(x), y))
        engine.step()
    params = list(model.parameters())
    if stage == 3:  # (each param is a shard until gathered)
        with deepspeed.zero.GatheredParameters(params):
            return [p.detach().clone() for p in params]
    return [p.detach().clone() for p in params]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stage", type=int, default=3, choices=[0, 1, 2, 3])
    parser.add_argument("--offload", action="store_true")
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    # One process, as a launcher would set it up.
    for key, value in (("MASTER_ADDR", "127.0.0.1"), ("MASTER_PORT", "29561"), ("RANK", "0"),
                       ("LOCAL_RANK", "0"), ("WORLD_SIZE", "1")):
        os.environ.setdefault(key, value)
    import gdfast.torch

    ours = train(lambda m: gdfast.torch.AdamW(m.parameters(), lr=1e-2), args.stage,
                 args.offload, args.steps)
    theirs = train(lambda m: torch.optim.AdamW(m.parameters(), lr=1e-2, foreach=False),
                   args.stage, args.offload, args.steps)
    difference = max(float((a - b).abs().max()) for a, b in zip(ours, theirs))
    scale = max(float(b.abs().max()) for b in theirs)
    print(f"ZeRO stage {args.stage}{' with optimizer offload' if args.offload else ''}, "
          f"{args.steps} steps: gdfast vs torch.optim AdamW, largest param difference "
          f"{difference:.3g} (largest param {scale:.3g})")


if __name__ == "__main__":
    main()
