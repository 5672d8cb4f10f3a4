"""The torch-signature constructor of every optimizer class, one each: the arguments after
``params``, with torch 2.13's names, order and defaults, and the rule it steps. Both front ends
are built from these: ``gdfast.<Name>`` (NumPy arrays) and ``gdfast.torch.<Name>`` (torch
tensors). A param group stores every argument under its own name, as torch.optim's do.

A body checks what torch's constructor checks beyond the rule's ranges and option combinations
(which come from the rule's header); most have none. ``foreach``, ``fused``, ``capturable`` and
``differentiable`` keep torch's meaning: the first two only pick torch's implementation
(gdfast's is always fused) and are accepted; see the front ends for the other two.
"""

# ruff: noqa: N802 (the functions are named as the classes they describe)
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from ._schedule_free import ScheduleFree
from ._sophia import SophiaSteps, check_options
from ._stepping import constructor
from ._stepping import is_tensor as _is_tensor


def _adam_tensor_rules(lr: Any, betas: Any, foreach: Optional[bool],
                       capturable: bool) -> Optional[Dict[str, Any]]:
    """torch.optim.Adam's rules for tensor lr and betas; betas are stored as a tuple of
    numbers. Unlike torch, ints are numbers too (0 is a beta; True is not, and the range
    check says so, naming betas[i])."""
    if _is_tensor(lr) and foreach and not capturable:
        raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
    if not isinstance(betas, (tuple, list)):
        return None  # (a set, a number ...: the pair check names it)
    try:
        beta1, beta2 = betas
    except (TypeError, ValueError):
        return None
    if _is_tensor(beta1) != _is_tensor(beta2):  # (torch's words: its tests match them)
        raise ValueError("betas must be either both floats or both Tensors, got "
                         f"{type(beta1).__name__} and {type(beta2).__name__}")
    if not _is_tensor(beta1):
        # a tuple, as torch stores them; numbers or not, the group check names a bad one
        return {"betas": (beta1, beta2)}
    for i, beta in enumerate((beta1, beta2)):
        if foreach and not capturable:
            raise ValueError(f"betas[{i}] as a Tensor is not supported for capturable=False "
                             "and foreach=True")
        if beta.numel() != 1:
            raise ValueError(f"betas[{i}]: Tensor betas[{i}] must be 1-element, got shape "
                             f"{tuple(beta.shape)}")
    return {"betas": (beta1.item(), beta2.item())}


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
         fused: Optional[bool] = None,
         decoupled_weight_decay: bool = False) -> Optional[Dict[str, Any]]:
    """torch.optim.Adam (L2 weight decay; ``decoupled_weight_decay=True`` makes it AdamW)."""
    return _adam_tensor_rules(lr, betas, foreach, capturable)


@constructor("adam", decoupled_weight_decay=True)
def AdamW(lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), eps: float = 1e-8,
          weight_decay: float = 1e-2, amsgrad: bool = False, *, maximize: bool = False,
          foreach: Optional[bool] = None, capturable: bool = False,
          differentiable: bool = False,
          fused: Optional[bool] = None) -> Optional[Dict[str, Any]]:
    """torch.optim.AdamW: Adam with decoupled weight decay, default weight_decay=1e-2."""
    return _adam_tensor_rules(lr, betas, foreach, capturable)


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


@constructor("adan")
def Adan(lr: float = 1e-3, betas: Tuple[float, float, float] = (0.98, 0.92, 0.99),
         weight_decay: float = 0.0, weight_decouple: bool = False, max_grad_norm: float = 0.0,
         foreach: Optional[bool] = None, eps: float = 1e-8,
         maximize: bool = False) -> Dict[str, Any]:
    """pytorch_optimizer.Adan (Xie et al. 2022). ``max_grad_norm=0`` is no clipping, as there;
    a positive one clips by the global norm as gdfast's fused clipping does (torch's
    ``max_norm / (norm + 1e-6)``; pytorch_optimizer divides by ``norm + eps``)."""
    return {"max_grad_norm": max_grad_norm or None}


@constructor("ademamix")
def AdEMAMix(lr: float = 1e-3, betas: Tuple[float, float, float] = (0.9, 0.999, 0.9999),
             weight_decay: float = 0.0, weight_decouple: bool = False, fixed_decay: bool = False,
             alpha: float = 5.0, t_alpha_beta3: Optional[float] = None, eps: float = 1e-8,
             maximize: bool = False, foreach: Optional[bool] = None) -> Dict[str, Any]:
    """pytorch_optimizer.AdEMAMix (Pagliardini et al. 2024): ``t_alpha_beta3=None`` (no warmup
    of alpha and beta3) is stored as 0."""
    return {"t_alpha_beta3": 0.0 if t_alpha_beta3 is None else t_alpha_beta3}


@constructor("schedulefree_adamw", mixin=ScheduleFree)
def ScheduleFreeAdamW(lr: float = 2.5e-3, betas: Tuple[float, float] = (0.9, 0.999),
                      weight_decay: float = 0.0, r: float = 0.0, weight_lr_power: float = 2.0,
                      warmup_steps: int = 0, decoupling_c: int = 0, ams_bound: bool = False,
                      eps: float = 1e-8, maximize: bool = False,
                      foreach: Optional[bool] = None) -> Dict[str, Any]:
    """pytorch_optimizer.ScheduleFreeAdamW (Defazio et al. 2024): the params are the training
    iterate; call ``train()`` before training steps and ``eval()`` before evaluating (the
    average). lr_max and weight_sum are scalar states of each param (pytorch_optimizer keeps
    them in the group)."""
    return {"train_mode": True}


@constructor("sophia", mixin=SophiaSteps, update_hessian=False)  # (a step given one: True)
def SophiaH(lr: float = 6e-2, betas: Tuple[float, float] = (0.96, 0.99),
            weight_decay: float = 0.0, weight_decouple: bool = True, fixed_decay: bool = False,
            p: float = 1e-2, update_period: Optional[int] = 10, num_samples: int = 1,
            hessian_distribution: str = "gaussian", eps: float = 1e-12, maximize: bool = False,
            foreach: Optional[bool] = None) -> None:
    """pytorch_optimizer.SophiaH (Liu et al. 2023): Sophia with Hutchinson's estimate of the
    Hessian's diagonal every ``update_period`` steps (torch front end; it needs
    ``loss.backward(create_graph=True)``), or the estimate given to ``step(..., hessian=...)``
    (both front ends: SophiaG's, or any; ``update_period=None``: only those). ``p`` bounds
    each element of the preconditioned update."""
    check_options(update_period, num_samples, hessian_distribution)


@constructor("lamb")
def Lamb(lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999), weight_decay: float = 0.0,
         weight_decouple: bool = True, fixed_decay: bool = False, rectify: bool = False,
         degenerated_to_sgd: bool = False, n_sma_threshold: int = 5, grad_averaging: bool = True,
         max_grad_norm: float = 1.0, adam: bool = False, pre_norm: bool = False,
         eps: float = 1e-6, foreach: Optional[bool] = None,
         maximize: bool = False) -> Dict[str, Any]:
    """pytorch_optimizer.Lamb (You et al. 2020): Adam's update scaled per tensor by the trust
    ratio min(||p||, 10) / (||update|| + eps); ``adam=True`` keeps a ratio of 1. As there,
    ``max_grad_norm`` acts only with ``pre_norm=True``: then it clips by the global norm
    through gdfast's fused clipping (torch's ``max_norm / (norm + 1e-6)``; pytorch_optimizer
    adds ``eps``, 1e-6 by default), and otherwise it is stored as None."""
    return {"max_grad_norm": max_grad_norm if pre_norm and max_grad_norm else None}


@constructor("rprop")
def Rprop(lr: float = 1e-2, etas: Tuple[float, float] = (0.5, 1.2),
          step_sizes: Tuple[float, float] = (1e-6, 50.0), *, capturable: bool = False,
          foreach: Optional[bool] = None, maximize: bool = False,
          differentiable: bool = False) -> None:
    """torch.optim.Rprop."""
