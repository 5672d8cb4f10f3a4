"""What the Sophia classes add to a front end's step: the second input of the rule, the
estimate of the Hessian's diagonal, and when the step refreshes its moving average with it.

Both front ends take an estimate given to ``step(..., hessian=[...])`` (one array per param
with a gradient, in group order, as pytorch_optimizer's ``set_hessian``): that step refreshes
the average. Without one, ``gdfast.torch.SophiaH`` computes Hutchinson's estimate every
``update_period`` steps (steps 1, 1 + update_period, ...), as pytorch_optimizer.SophiaH does:
``num_samples`` probes z per param with a gradient (``torch.randn_like``, or Rademacher), in
group order, diag(H) ~ mean(z * Hz) with Hz from one more backward pass through the graph of
the gradients (``loss.backward(create_graph=True)``); ``update_period=None`` makes none (the
paper's SophiaG: the caller gives every estimate). The NumPy front end has no autograd: its
steps without an estimate leave the average as it is. The steps are counted per group in
``group["step"]``, as pytorch_optimizer counts them.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

# The class's own arguments that are not the rule's (when and how the estimate is made).
FRONT_OPTIONS = ("update_period", "num_samples", "hessian_distribution")
DISTRIBUTIONS = ("gaussian", "rademacher")


def check_options(update_period: Any, num_samples: Any, hessian_distribution: Any) -> None:
    """pytorch_optimizer's checks, with messages naming the argument."""
    for name, value in (("update_period", update_period), ("num_samples", num_samples)):
        if name == "update_period" and value is None:
            continue  # (no estimate of its own: SophiaG's use, the caller gives every one)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name}: expected an int >= 1"
                             f"{' or None' if name == 'update_period' else ''}, got {value!r}")
    if hessian_distribution not in DISTRIBUTIONS:
        raise ValueError(f"hessian_distribution: expected one of {DISTRIBUTIONS}, got "
                         f"{hessian_distribution!r}")


def estimate_list(hessian: Any, count: int, noun: str) -> List[Any]:
    """``step(hessian=...)`` as a list of ``count`` entries (one per param with a gradient)."""
    try:
        estimates = list(hessian)
    except TypeError:
        raise TypeError(f"hessian: expected a list of {noun}s (one per param with a gradient), "
                        f"got {type(hessian).__name__}") from None
    if len(estimates) != count:
        raise ValueError(f"hessian: expected {count} {noun}s (one per param with a gradient), "
                         f"got {len(estimates)}")
    return estimates


class SophiaSteps:
    """Mixed into a front end's Optimizer, which provides ``_closure_first(args, kwargs)``
    (runs a closure before the estimate, returns its loss and the step's arguments without
    it), ``_hessian_members(args)`` ((key, param) of the params with a gradient, in group
    order), ``_checked_hessian(hessian, members)``, ``_estimate(members)`` (Hutchinson's
    estimate, or None where the front end makes none) and ``_keep_estimates(estimates)``."""

    param_groups: Any
    _hessians: Optional[Dict[Any, Any]] = None  # this step's estimates, by member key
    front_options = FRONT_OPTIONS

    def step(self, *args: Any, hessian: Optional[List[Any]] = None, **kwargs: Any) -> Any:
        """The front end's step; ``hessian``: estimates of the Hessian's diagonal for this
        step (one per param with a gradient, in group order), which then refresh the average
        whatever the step count."""
        loss, args, kwargs = self._closure_first(args, kwargs)  # type: ignore[attr-defined]
        members = self._hessian_members(args)  # type: ignore[attr-defined]
        if hessian is not None:
            hessian = self._checked_hessian(hessian, members)  # type: ignore[attr-defined]
        estimated = self._begin_step(hessian, members)
        try:
            result = super().step(*args, **kwargs)  # type: ignore[misc]
        except BaseException:
            self._undo_count()
            raise
        finally:
            estimates, self._hessians = self._hessians, None
        if estimated and estimates:
            self._keep_estimates(estimates)  # type: ignore[attr-defined]
        return loss if loss is not None else result

    def _begin_step(self, hessian: Optional[List[Any]], members: List[Tuple[Any, Any]]) -> bool:
        """Counts the step in every group and fixes this step's estimates: ``members`` lists
        (key, param) of the params with a gradient, in group order; ``hessian`` the given
        estimates for them (checked by the caller), else None. True if it estimated."""
        step = int(self.param_groups[0].get("step", 0)) + 1
        period = self.param_groups[0]["update_period"]
        estimated = False
        if hessian is None and period is not None and (step - 1) % period == 0:
            hessian = self._estimate(members)  # type: ignore[attr-defined]
            estimated = hessian is not None
        for group in self.param_groups:
            group["step"] = int(group.get("step", 0)) + 1
        self._hessians = None if hessian is None else {
            key: h for (key, _), h in zip(members, hessian)}
        return estimated

    def _undo_count(self) -> None:
        for group in self.param_groups:
            group["step"] = int(group["step"]) - 1

    def _batch_hyper(self, batch: Any, values: Any, step: Any, grad_scale: Any) -> Any:
        # The same dict while the group's values and the flag stay the same: the batch's
        # cached hyper tuple is then reused (a new dict each step rebuilt it).
        update = self._hessians is not None
        merged = getattr(self, "_merged_values", None)
        if merged is None or merged[0] is not values or merged[1] is not update:
            merged = self._merged_values = (values, update, {**values, "update_hessian": update})
        return super()._batch_hyper(batch, merged[2], step, grad_scale)  # type: ignore[misc]

    def _more_inputs(self, batch: Any, grads: List[Any]) -> Tuple[Any, ...]:
        """The hessian input: the estimates, or (not read) the gradients themselves."""
        if self._hessians is None:
            return (grads,)
        estimates = [self._hessians[m.key] for m in batch.members]
        return (self._grad_arrays(batch, estimates),)  # type: ignore[attr-defined]
