"""The torch-signature constructor of every optimizer class, one each: the arguments after
``params``, with torch 2.13's names, order and defaults, and the rule it steps. Both front ends
are built from these: ``gdfast.<Name>`` (NumPy arrays) and ``gdfast.torch.<Name>`` (torch
tensors). A param group stores every argument under its own name, as torch.optim's do.

Only the signature matters; the bodies are empty. ``foreach``, ``fused``, ``capturable`` and
``differentiable`` keep torch's meaning: the first two only pick torch's implementation
(gdfast's is always fused) and are accepted; see the front ends for the other two.
"""

# ruff: noqa: N802 (the functions are named as the classes they describe)
from __future__ import annotations

from typing import Optional, Tuple

from ._stepping import constructor


@constructor("sgd")
def SGD(lr: float = 1e-3, momentum: float = 0.0, dampening: float = 0.0,
        weight_decay: float = 0.0, nesterov: bool = False, *, maximize: bool = False,
        foreach: Optional[bool] = None, differentiable: bool = False,
        fused: Optional[bool] = None) -> None:
    """torch.optim.SGD: momentum buffers appear on a param's first step with momentum != 0."""


@constructor("adam")
def Adam(lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
         weight_decay: float = 0.0, amsgrad: bool = False, *, foreach: Optional[bool] = None,
         maximize: bool = False, capturable: bool = False, differentiable: bool = False,
         fused: Optional[bool] = None, decoupled_weight_decay: bool = False) -> None:
    """torch.optim.Adam (L2 weight decay; ``decoupled_weight_decay=True`` makes it AdamW)."""


@constructor("adam", decoupled_weight_decay=True)
def AdamW(lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
          foreach: Optional[bool] = None, capturable: bool = False,
          differentiable: bool = False, fused: Optional[bool] = None) -> None:
    """torch.optim.AdamW: Adam with decoupled weight decay, default weight_decay=1e-2."""


@constructor("lion")
def Lion(lr: float = 1e-4, betas: Tuple[float, float] = (0.9, 0.99), weight_decay: float = 0.0,
         *, maximize: bool = False) -> None:
    """Lion (Chen et al. 2023) with lion-pytorch's arguments and state (``exp_avg``)."""


@constructor("rmsprop")
def RMSprop(lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8, weight_decay: float = 0.0,
            momentum: float = 0.0, centered: bool = False, capturable: bool = False,
            foreach: Optional[bool] = None, maximize: bool = False,
            differentiable: bool = False) -> None:
    """torch.optim.RMSprop."""


@constructor("adagrad")
def Adagrad(lr: float = 1e-2, lr_decay: float = 0.0, weight_decay: float = 0.0,
            initial_accumulator_value: float = 0.0, eps: float = 1e-10,
            foreach: Optional[bool] = None, *, maximize: bool = False,
            differentiable: bool = False, fused: Optional[bool] = None) -> None:
    """torch.optim.Adagrad."""


@constructor("adadelta")
def Adadelta(lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6, weight_decay: float = 0.0,
             foreach: Optional[bool] = None, *, capturable: bool = False,
             maximize: bool = False, differentiable: bool = False) -> None:
    """torch.optim.Adadelta."""


@constructor("adamax")
def Adamax(lr: float = 2e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
           weight_decay: float = 0.0, foreach: Optional[bool] = None, *,
           maximize: bool = False, differentiable: bool = False,
           capturable: bool = False) -> None:
    """torch.optim.Adamax."""


@constructor("nadam")
def NAdam(lr: float = 2e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, momentum_decay: float = 4e-3,
          decoupled_weight_decay: bool = False, *, foreach: Optional[bool] = None,
          maximize: bool = False, capturable: bool = False,
          differentiable: bool = False) -> None:
    """torch.optim.NAdam."""


@constructor("radam")
def RAdam(lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 0.0, decoupled_weight_decay: bool = False, *,
          foreach: Optional[bool] = None, maximize: bool = False, capturable: bool = False,
          differentiable: bool = False) -> None:
    """torch.optim.RAdam."""


@constructor("asgd")
def ASGD(lr: float = 1e-2, lambd: float = 1e-4, alpha: float = 0.75, t0: float = 1e6,
         weight_decay: float = 0.0, foreach: Optional[bool] = None, maximize: bool = False,
         differentiable: bool = False, capturable: bool = False) -> None:
    """torch.optim.ASGD."""


@constructor("rprop")
def Rprop(lr: float = 1e-2, etas: Tuple[float, float] = (0.5, 1.2),
          step_sizes: Tuple[float, float] = (1e-6, 50.0), *, capturable: bool = False,
          foreach: Optional[bool] = None, maximize: bool = False,
          differentiable: bool = False) -> None:
    """torch.optim.Rprop."""
