"""The optimizer configurations the benchmark steps, one row each: the name ``--optimizers``
takes, the constructor (``gdfast.<Name>`` and ``torch.optim.<Name>`` share it), its keyword
arguments as torch spells them, and who else runs it.

Everything else comes from gdfast's registry: the rule, its hyperparameters as the kernel and
the reference take them, the states a step uses (``Rule.plan``) and so the bytes one in-place
step must move: param, grad and every state read, param and states written back,
``(3 + 2 * states) * itemsize`` per element (fp32: SGD 12, momentum, Lion, RMSprop, Adagrad and
ASGD 20, Adam, AdamW and the other two-state rules 28, AdEMAMix 36,
Adan 44). There are no formulas here: the
correctness gate and the NumPy competitor run gdfast/bench/reference.py.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from gdfast._spec import Rule
from gdfast._stepping import CONSTRUCTORS, Constructor

# torch.optim's CPU code paths (torch 2.13): a Python loop over tensors (foreach=False),
# torch._foreach_* ops over the list (foreach=True), one fused kernel per tensor (fused=True,
# which only SGD, Adam, AdamW and Adagrad accept on CPU).
LOOP, FOREACH, FUSED = "loop", "foreach", "fused"
TORCH_PATHS = (LOOP, FOREACH, FUSED)
UNFUSED = (LOOP, FOREACH)


@dataclass(frozen=True, eq=False)
class Package:
    """A torch-style optimizer class of another package, run as the implementation ``impl``:
    ``<module>.<cls>(params, **case kwargs, **extra)``."""

    impl: str  # what --impls names: "lion-pytorch", "deepspeed"
    module: str
    cls: str
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> str:
        return f"{self.module}.{self.cls}"


def _lion_pytorch() -> Package:
    return Package("lion-pytorch", "lion_pytorch", "Lion", {"use_triton": False})


def _pytorch_optimizer(cls: str) -> Package:
    return Package("pytorch_optimizer", "pytorch_optimizer", cls, {"foreach": True})


def _deepspeed(module: str, cls: str, **extra: Any) -> Package:
    return Package("deepspeed", f"deepspeed.ops.{module}", cls, extra)


@dataclass(frozen=True, eq=False)
class Case:
    name: str  # what --optimizers names
    ctor: str  # the constructor: gdfast._stepping.CONSTRUCTORS key, torch.optim class name
    kwargs: Mapping[str, Any]  # its keyword arguments after params (torch's names)
    torch: Tuple[str, ...] = ()  # torch.optim.<ctor>'s code paths, from TORCH_PATHS
    packages: Tuple[Package, ...] = ()  # other packages' optimizers running the same step
    note: str = ""  # what the title should say besides the arguments

    @functools.cached_property
    def constructor(self) -> Constructor:
        return CONSTRUCTORS[self.ctor]

    @property
    def rule(self) -> Rule:
        return self.constructor.rule

    @functools.cached_property
    def hyper(self) -> Dict[str, Any]:
        """The rule's hyperparameters, by the names gdfast.ops and the reference take
        (``beta1``/``beta2``, not ``betas``), range-checked."""
        ctor = self.constructor
        values = ctor.hyper_values(ctor.defaults((), self.kwargs))
        self.rule.check(values)
        return values

    @functools.cached_property
    def states(self) -> Tuple[str, ...]:
        """The state arrays a step uses (torch's names, the kernel's order)."""
        return self.rule.used_states(self.hyper)

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def two_pass(self) -> bool:
        """The rule sums each tensor before it updates it (LAMB): two passes over the arrays."""
        return self.rule.tensor_sums > 0

    @property
    def title(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.kwargs.items())
        return f"{self.ctor}({args})" + (f", {self.note}" if self.note else "")

    def moved_bytes(self, precision: Any) -> int:
        """Bytes a step moves per parameter in a precision mode (precision.py)."""
        return int(precision.bytes_per_elem(self.n_states, self.two_pass))

    def package(self, impl: str) -> Optional[Package]:
        """The optimizer class that implementation ``impl`` runs for this case, if any."""
        return next((p for p in self.packages if p.impl == impl), None)

    def describe(self) -> str:
        return f"{self.name}: {self.title}"


CASES: Dict[str, Case] = {
    c.name: c
    for c in (
        Case("sgd", "SGD", dict(lr=1e-2), TORCH_PATHS, note="no momentum"),
        Case("momentum", "SGD", dict(lr=1e-2, momentum=0.9), TORCH_PATHS),
        Case("adam", "Adam", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8), TORCH_PATHS,
             (_deepspeed("adam", "DeepSpeedCPUAdam", adamw_mode=False),)),
        Case("adamw", "AdamW", dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2),
             TORCH_PATHS, (_deepspeed("adam", "DeepSpeedCPUAdam", adamw_mode=True),)),
        Case("lion", "Lion", dict(lr=1e-4, betas=(0.9, 0.99), weight_decay=1e-2),
             packages=(_lion_pytorch(),)),
        Case("rmsprop", "RMSprop", dict(lr=1e-2), UNFUSED),
        Case("adagrad", "Adagrad", dict(lr=1e-2), TORCH_PATHS,
             (_deepspeed("adagrad", "DeepSpeedCPUAdagrad"),)),
        Case("adadelta", "Adadelta", dict(lr=1.0), UNFUSED),
        Case("adamax", "Adamax", dict(lr=2e-3), UNFUSED),
        Case("nadam", "NAdam", dict(lr=2e-3), UNFUSED),
        Case("radam", "RAdam", dict(lr=1e-3), UNFUSED),
        Case("asgd", "ASGD", dict(lr=1e-2), UNFUSED),
        Case("rprop", "Rprop", dict(lr=1e-2), UNFUSED),
        Case("adan", "Adan", dict(lr=1e-3, weight_decay=1e-2),
             packages=(_pytorch_optimizer("Adan"),)),
        Case("ademamix", "AdEMAMix", dict(lr=1e-3, weight_decay=1e-2, weight_decouple=True),
             packages=(_pytorch_optimizer("AdEMAMix"),)),
        Case("schedulefree_adamw", "ScheduleFreeAdamW", dict(lr=2.5e-3, weight_decay=1e-2),
             packages=(_pytorch_optimizer("ScheduleFreeAdamW"),)),
        # (the class's steps between refreshes of the Hessian average: 9 in 10 by default)
        Case("sophia", "SophiaH", dict(lr=6e-2, weight_decay=1e-2)),
        Case("lamb", "Lamb", dict(lr=1e-3, weight_decay=1e-2),
             packages=(_pytorch_optimizer("Lamb"),)),
    )
}

# The cases a run without --optimizers steps: the benchmark's first five, whose figures the
# README quotes (a default run: about 90 s on 2 cores). ``all`` adds the other twelve, and
# takes about 3 times as long.
DEFAULT = ("sgd", "momentum", "adam", "adamw", "lion")


def parse_optimizers(text: str) -> List[Case]:
    """``"adam,lion"`` -> [CASES["adam"], CASES["lion"]]; ``"all"`` -> every case;
    ``"default"`` -> DEFAULT."""
    text = text.strip()
    names: Sequence[str] = (list(CASES) if text == "all" else DEFAULT if text == "default"
                            else [s.strip() for s in text.split(",") if s.strip()])
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        raise ValueError(f"unknown optimizer {', '.join(unknown) or '(none)'}; "
                         f"choose from {', '.join(CASES)}, default or all")
    return [CASES[n] for n in dict.fromkeys(names)]
