"""What the Schedule-Free classes add to a front end's optimizer: ``train()`` and ``eval()``.

Schedule-Free training (Defazio et al. 2024) steps the param as the training iterate y, keeps
the base iterate z as a state, and evaluates their average x; x and y are interpolations of
each other with z: x = y + (1 - 1/beta1)(z - y) and y = x + (1 - beta1)(z - x). ``eval()``
turns the params into x, ``train()`` back into y, as pytorch_optimizer's and the schedulefree
package's classes do; each group keeps its mode as ``train_mode``. A step in eval mode raises
(as the schedulefree package does): it would step x as if it were y.
"""

from __future__ import annotations

from typing import Any, Optional


class ScheduleFree:
    """Mixed into a front end's Optimizer, which provides ``_state_items(group)`` (each param
    of the group with its state dict) and ``_lerp_(param, end, weight)`` (param += weight *
    (end - param), in place)."""

    param_groups: Any
    # lr_max and weight_sum: a sum over the run of weights ~lr^2 would lose its increments in
    # float32 within 1e6 steps (pytorch_optimizer keeps Python floats); the torch front end's
    # scalar states are otherwise in torch's default dtype, as torch.optim's
    _double_scalars = ("lr_max", "weight_sum")

    def train(self) -> None:
        """The params as the training iterate y (the step's point), before training."""
        self._swap(to_train=True)

    def eval(self) -> None:
        """The params as the average x (the point to evaluate), before evaluating."""
        self._swap(to_train=False)

    def _swap(self, to_train: bool) -> None:
        for group in self.param_groups:
            if bool(group.get("train_mode", True)) == to_train:
                continue
            beta1 = float(group["betas"][0])
            weight = 1.0 - beta1 if to_train else 1.0 - 1.0 / beta1
            for param, state in self._state_items(group):  # type: ignore[attr-defined]
                if "z" in state:
                    self._lerp_(param, state["z"], weight)  # type: ignore[attr-defined]
            group["train_mode"] = to_train

    def _step_all(self, *args: Any, **kwargs: Any) -> Optional[int]:
        for i, group in enumerate(self.param_groups):
            if not group.get("train_mode", True):
                raise RuntimeError(f"param_groups[{i}]: stepped in eval mode; call train() "
                                   "before training steps and eval() before evaluating")
        return super()._step_all(*args, **kwargs)  # type: ignore[misc,no-any-return]
