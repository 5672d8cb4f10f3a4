"""The step inside backward (``gdfast.torch.step_in_backward``): each parameter is stepped as
soon as its gradient has been accumulated (torch's post-accumulate-grad hook), and its gradient
is freed at once, so a full set of gradients never exists at the same time.

What needs every gradient first cannot be done this way, and is refused: clipping by the global
norm (``max_grad_norm``) and GradScaler's inf check. The optimizer-wide counts a step advances
(a schedule's ``lr_step``, stochastic rounding's ``rounding_step``) advance once per backward
pass, when autograd's engine finishes it; so are the monitored norms (``last_norms``) kept, over
every param the pass stepped.
"""

from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Optional

import numpy as np
import torch

from ._monitor import norms
from ._stepping import Members, StepPath


class StepInBackward:
    """The hooks of one optimizer's params; ``remove()`` takes them off."""

    def __init__(self, optimizer: Any):
        if not isinstance(optimizer, StepPath) or not isinstance(optimizer, torch.optim.Optimizer):
            raise TypeError(f"optimizer: expected a gdfast.torch optimizer, got "
                            f"{type(optimizer).__name__}")
        if getattr(optimizer, "_dtensors", False):
            raise ValueError("optimizer: its params are DTensors (FSDP2), whose sharded grads "
                             "FSDP2 writes after its reduce-scatter, not by accumulation: "
                             "step after backward")
        for i, group in enumerate(optimizer.param_groups):
            if group.get("max_grad_norm") is not None:
                raise ValueError(f"param_groups[{i}]: max_grad_norm: clipping by the global "
                                 "norm needs every gradient before any step, which "
                                 "step_in_backward never holds; clip per parameter inside the "
                                 "loss, or step after backward")
        self._optimizer = optimizer
        self._accumulating = False
        self._in_pass = False  # a backward pass has stepped a param and not finished
        self._rounding: Optional[int] = None
        self._handles: List[Any] = []
        for group in optimizer.param_groups:
            for p in group["params"]:
                if p.requires_grad:
                    self._handles.append(p.register_post_accumulate_grad_hook(self._hook))

    @contextlib.contextmanager
    def accumulate(self) -> Iterator[None]:
        """Backward passes inside keep their gradients (micro-batches of one step); the first
        backward outside steps each param with its accumulated gradient."""
        previous, self._accumulating = self._accumulating, True
        try:
            yield
        finally:
            self._accumulating = previous

    def remove(self) -> None:
        """Takes the hooks off: backward leaves the gradients to an ``optimizer.step()``."""
        for handle in self._handles:
            handle.remove()
        self._handles = []

    def _hook(self, param: torch.Tensor) -> None:
        if self._accumulating or param.grad is None:
            return
        optimizer = self._optimizer
        if not self._in_pass:
            self._in_pass = True
            self._rounding = None
            optimizer._pass_sums = np.zeros(3)  # (each part's monitoring sums add up here)
            torch.autograd.Variable._execution_engine.queue_callback(self._finish_pass)
        for gi, group in enumerate(optimizer.param_groups):
            for j, p in enumerate(group["params"]):
                if p is param:
                    def this_param(i: int, _: Any, index: int = gi, at: int = j) -> Members:
                        return [(param, param, param.grad, at)] if i == index else []

                    rounding = optimizer._step_all(this_param, {"grad_scale": 1.0},
                                                   advance=False)
                    if rounding is not None:
                        self._rounding = rounding
                    param.grad = None
                    return

    def _finish_pass(self) -> None:
        self._in_pass = False
        optimizer = self._optimizer
        sums, optimizer._pass_sums = optimizer._pass_sums, None
        monitored = any(g.get("monitor", False) for g in optimizer.param_groups)
        optimizer.last_norms = norms(sums, 1.0) if monitored and sums is not None else None
        optimizer._advance_counts(self._rounding)
        # What torch's LR schedulers look for to know the optimizer has stepped (they wrap
        # optimizer.step to set it, and warn when a scheduler steps first).
        setattr(self._optimizer, "_opt_called", True)
