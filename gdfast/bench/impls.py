"""The implementations compared: gdfast, and what a user would otherwise run.

Each :class:`Implementation` builds a :class:`Runner` for one optimizer case on one
workload's data. A runner owns its parameters and optimizer state (own copies; the gradients
are shared and only read), exposes ``step`` (exactly one optimizer step, the timed unit) and
can ``reset`` to the initial parameters with fresh state (for the correctness gate).

Optional packages (torch, lion-pytorch, DeepSpeed) are imported only when an implementation
that needs them is built; a missing one makes that implementation unavailable, with a reason.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import math
import os
import warnings
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np

from .cases import Case
from .workloads import Data

Step = Callable[[], None]


class Unavailable(Exception):
    """The implementation cannot run here (package missing, op does not build, ...)."""


class Runner:
    """One implementation set up for one (case, workload). Subclasses take their arrays from
    the data's pool (``_own_arrays``; ``params`` are NumPy views of the stepped parameters,
    read by the gate) and implement ``_fresh`` (parameters = p0, fresh state; returns the step
    function). ``fresh`` is True after a reset until the gate steps the runner."""

    params: List[np.ndarray]
    step: Step
    fresh: bool  # reset and not stepped since (set by the owner of the runner, see Gate)
    time_scale = 1.0  # a step's time times this = the time reported for the workload

    def __init__(self, case: Case, data: Data):
        self.case = case
        self.data = data
        self.params = []
        self.states: List[List[np.ndarray]] = []
        self._pooled: List[np.ndarray] = []

    def _take(self, like: np.ndarray) -> np.ndarray:
        a = self.data.pool.take(like)
        self._pooled.append(a)
        return a

    def _own_arrays(self, n_states: int) -> None:
        """Parameters and ``n_states`` state arrays per tensor, from the data's pool (filled
        by reset)."""
        self.params = [self._take(p) for p in self.data.p0]
        self.states = [[self._take(p) for p in self.data.p0] for _ in range(n_states)]

    def _restore(self) -> None:
        """Parameters = p0, states = 0."""
        for p, p0 in zip(self.params, self.data.p0):
            np.copyto(p, p0)
        for arrays in self.states:
            for a in arrays:
                a.fill(0)

    def reset(self) -> None:
        """Parameters back to p0, optimizer state fresh, step count 0."""
        self.step = self._fresh()
        self.fresh = True

    def _fresh(self) -> Step:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self) -> None:
        """Called before each timed batch (after the thread count is set)."""

    def state_bytes(self) -> int:
        """Bytes of optimizer state this implementation keeps (after at least one step)."""
        return sum(a.nbytes for arrays in self.states for a in arrays)

    def close(self) -> None:
        """Drop the references to big arrays; hand the pooled ones back."""
        self._drop()
        self.params, self.states = [], []
        self.data.pool.give(self._pooled)
        self._pooled = []

    def _drop(self) -> None:
        """Subclasses: drop what else refers to the arrays."""


class Implementation:
    name = ""
    kind = "reference"  # "gdfast", "reference" or "bound"
    slow = False  # beaten by a faster reference of the same optimizer, and costly at large
    #               sizes: skipped above --slow-limit (NumPy, torch for-loop and foreach)
    description = ""
    # transient arrays a step allocates, for the memory estimate: (n, m) = n arrays the size of
    # the largest tensor (per-tensor loops) plus m arrays the size of the whole list (foreach)
    temporaries = (0, 0)
    copies_workload = True  # holds its own params and states the size of the workload

    def check_available(self) -> None:
        """Raise Unavailable(reason) if this cannot run here."""

    def supports(self, case: Case, dtype: np.dtype) -> Optional[str]:
        """None if it can run ``case`` in ``dtype``, else the reason it cannot."""
        return None

    def build(self, case: Case, data: Data) -> Runner:  # pragma: no cover - abstract
        raise NotImplementedError

    def version(self) -> Optional[str]:
        return None


# ---------------------------------------------------------------------------------------------
# gdfast


class GdfastRunner(Runner):
    def __init__(self, case: Case, data: Data, isa: Optional[str]):
        super().__init__(case, data)
        self.isa = isa
        self._own_arrays(case.n_states)
        self.reset()

    def _kernel_args(self) -> Tuple[Any, Any, List[Any]]:
        """param, grad and state arguments: one array as such, a list as a list."""
        def arg(arrays: List[np.ndarray]) -> Any:
            return arrays[0] if self.data.single else arrays

        return arg(self.params), arg(self.data.grads), [arg(s) for s in self.states]

    def _fresh(self) -> Step:
        from gdfast import ops

        self._restore()
        P, G, S = self._kernel_args()
        h = dict(self.case.hyper)
        t = 0
        if self.case.family == "sgd":
            B = S[0] if S else None
            lr, mom = h["lr"], h.get("momentum", 0.0)
            sgd_ = ops.sgd_

            def step() -> None:
                nonlocal t
                t += 1
                sgd_(P, G, B, step=t, lr=lr, momentum=mom)

        elif self.case.family == "adam":
            M, V = S
            lr, b1, b2, eps = h["lr"], h["beta1"], h["beta2"], h["eps"]
            wd, dec = h["weight_decay"], bool(h.get("decoupled_weight_decay", False))
            adam_ = ops.adam_

            def step() -> None:
                nonlocal t
                t += 1
                adam_(P, G, M, V, step=t, lr=lr, beta1=b1, beta2=b2, eps=eps, weight_decay=wd,
                      decoupled_weight_decay=dec)

        elif self.case.family == "lion":
            (M,) = S
            lr, b1, b2, wd = h["lr"], h["beta1"], h["beta2"], h["weight_decay"]
            lion_ = ops.lion_

            def step() -> None:
                lion_(P, G, M, lr=lr, beta1=b1, beta2=b2, weight_decay=wd)

        else:  # pragma: no cover
            raise ValueError(self.case.family)
        return step

    def prepare(self) -> None:
        if self.isa is not None:
            from gdfast import _core

            _core.set_active_isa(self.isa)


class Gdfast(Implementation):
    kind = "gdfast"
    description = "gdfast.ops (one call per step; a list workload is one multi-tensor call)"

    def __init__(self, isa: Optional[str] = None, label: Optional[str] = None):
        self.isa = isa
        self.name = label or "gdfast"

    def supports(self, case: Case, dtype: np.dtype) -> Optional[str]:
        if np.dtype(dtype) not in (np.float32, np.float64):
            return "gdfast steps float32 and float64"
        return None

    def build(self, case: Case, data: Data) -> Runner:
        return GdfastRunner(case, data, self.isa)

    def version(self) -> Optional[str]:
        import gdfast

        return gdfast.__version__


# ---------------------------------------------------------------------------------------------
# NumPy: the expressions a user would write (in place where NumPy allows, temporaries where it
# does not), one tensor at a time.


class NumpyRunner(Runner):
    def __init__(self, case: Case, data: Data):
        super().__init__(case, data)
        self._own_arrays(case.n_states)
        self.reset()

    def _fresh(self) -> Step:
        self._restore()
        h = self.case.hyper
        params, grads = self.params, self.data.grads
        lr = float(h["lr"])
        wd = float(h.get("weight_decay", 0.0))
        t = 0
        if self.case.family == "sgd":
            mom = float(h.get("momentum", 0.0))
            bufs = self.states[0] if mom else [None] * len(params)

            def step() -> None:
                nonlocal t
                t += 1
                for p, g, buf in zip(params, grads, bufs):
                    if buf is not None:
                        if t == 1:
                            buf[...] = g
                        else:
                            buf *= mom
                            buf += g
                        g = buf
                    p -= lr * g

        elif self.case.family == "adam":
            b1, b2, eps = float(h["beta1"]), float(h["beta2"]), float(h["eps"])
            decoupled = bool(h.get("decoupled_weight_decay", False))
            ms, vs = self.states

            def step() -> None:
                nonlocal t
                t += 1
                bc1 = 1.0 - b1**t
                bc2_sqrt = math.sqrt(1.0 - b2**t)
                for p, g, m, v in zip(params, grads, ms, vs):
                    if wd and decoupled:
                        p *= 1.0 - lr * wd
                    elif wd:
                        g = g + wd * p
                    m *= b1
                    m += (1.0 - b1) * g
                    v *= b2
                    v += (1.0 - b2) * (g * g)
                    denom = np.sqrt(v)
                    denom /= bc2_sqrt
                    denom += eps
                    p -= (lr / bc1) * m / denom

        elif self.case.family == "lion":
            b1, b2 = float(h["beta1"]), float(h["beta2"])
            (ms,) = self.states

            def step() -> None:
                for p, g, m in zip(params, grads, ms):
                    if wd:
                        p *= 1.0 - lr * wd
                    p -= lr * np.sign(b1 * m + (1.0 - b1) * g)
                    m *= b2
                    m += (1.0 - b2) * g

        else:  # pragma: no cover
            raise ValueError(self.case.family)
        return step


class Numpy(Implementation):
    name = "numpy"
    slow = True
    temporaries = (3, 0)
    description = "NumPy expressions, one tensor at a time (what a user would write)"

    def build(self, case: Case, data: Data) -> Runner:
        return NumpyRunner(case, data)

    def version(self) -> Optional[str]:
        return np.__version__


# ---------------------------------------------------------------------------------------------
# torch.optim and torch-based packages. Parameters are torch tensors made from copies of p0;
# gradients share the NumPy gradient arrays' memory (torch.from_numpy, no copy).


def _import(module: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return importlib.import_module(module)
    except Exception as exc:  # ImportError, or a broken install raising anything
        raise Unavailable(f"{module} does not import ({type(exc).__name__}: {exc})") from None


class TorchRunner(Runner):
    def __init__(self, case: Case, data: Data, make_optimizer: Callable[[List[Any]], Any]):
        super().__init__(case, data)
        torch = _import("torch")
        self.torch = torch
        self.make_optimizer = make_optimizer
        self._own_arrays(0)  # parameters only: the optimizer allocates its own state
        self.tensors = [torch.nn.Parameter(torch.from_numpy(p)) for p in self.params]
        for t, g in zip(self.tensors, data.grads):
            t.grad = torch.from_numpy(g)
        self.optimizer: Any = None
        self.reset()

    def _fresh(self) -> Step:
        self._restore()
        self._drop()  # the old state goes before the new is made
        self.optimizer = self.make_optimizer(self.tensors)
        return self.optimizer.step  # type: ignore[no-any-return]

    def state_bytes(self) -> int:
        total = 0
        state = getattr(self.optimizer, "state", {})
        for per_param in state.values():
            for value in per_param.values():
                if self.torch.is_tensor(value):
                    total += value.nelement() * value.element_size()
        return total

    def _drop(self) -> None:
        # torch.optim's for-loop Adam sits in a reference cycle: empty it so that its state is
        # freed now, not at some later garbage collection
        opt, self.optimizer = self.optimizer, None
        if opt is not None:
            opt.state.clear()
            opt.param_groups.clear()

    def close(self) -> None:
        super().close()
        self.tensors = []


class TorchOptim(Implementation):
    """torch.optim.SGD/Adam/AdamW with one of its three code paths."""

    def __init__(self, variant: str):
        assert variant in ("loop", "foreach", "fused")
        self.variant = variant
        self.name = f"torch-{variant}"
        self.slow = variant in ("loop", "foreach")
        self.temporaries = {"loop": (2, 0), "foreach": (0, 2), "fused": (0, 0)}[variant]
        self.description = {
            "loop": "torch.optim, foreach=False: a Python loop over tensors",
            "foreach": "torch.optim, foreach=True: torch._foreach_* ops over the list",
            "fused": "torch.optim, fused=True: one fused kernel per tensor (CPU since 2.4)",
        }[variant]

    def check_available(self) -> None:
        _import("torch")

    def supports(self, case: Case, dtype: np.dtype) -> Optional[str]:
        if case.family == "lion":
            return "torch.optim has no Lion"
        return None

    def flags(self) -> Dict[str, bool]:
        return {"loop": {"foreach": False, "fused": False},
                "foreach": {"foreach": True},
                "fused": {"fused": True}}[self.variant]

    def build(self, case: Case, data: Data) -> Runner:
        torch = _import("torch")
        h = case.hyper
        flags = self.flags()
        if case.family == "sgd":
            def make(params: List[Any]) -> Any:
                return torch.optim.SGD(params, lr=h["lr"], momentum=h.get("momentum", 0.0),
                                       **flags)
        else:
            cls = torch.optim.AdamW if h.get("decoupled_weight_decay") else torch.optim.Adam

            def make(params: List[Any]) -> Any:
                return cls(params, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                           weight_decay=h["weight_decay"], **flags)
        return TorchRunner(case, data, make)

    def version(self) -> Optional[str]:
        return _dist_version("torch")


class LionPytorch(Implementation):
    name = "lion-pytorch"  # slow, but Lion's only torch reference: timed at every size
    temporaries = (2, 0)
    description = "lion_pytorch.Lion (use_triton=False): torch ops per tensor"

    def check_available(self) -> None:
        _import("torch")
        _import("lion_pytorch")

    def supports(self, case: Case, dtype: np.dtype) -> Optional[str]:
        return None if case.family == "lion" else "lion-pytorch is Lion only"

    def build(self, case: Case, data: Data) -> Runner:
        lion_pytorch = _import("lion_pytorch")
        h = case.hyper

        def make(params: List[Any]) -> Any:
            return lion_pytorch.Lion(params, lr=h["lr"], betas=(h["beta1"], h["beta2"]),
                                     weight_decay=h["weight_decay"], use_triton=False)
        return TorchRunner(case, data, make)

    def version(self) -> Optional[str]:
        return _dist_version("lion-pytorch")


@contextlib.contextmanager
def _quiet_deepspeed() -> Iterator[None]:
    """DeepSpeed logs an accelerator warning on import (its logger resets its own level, so
    logging is disabled up to WARNING meanwhile) and may emit Python warnings."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logging.disable(previous)


class DeepSpeedCPUAdam(Implementation):
    name = "deepspeed"
    description = ("deepspeed.ops.adam.DeepSpeedCPUAdam (fp32 states; its C++ op is "
                   "JIT-compiled on first use, ~1 min, cached after)")
    _checked: Optional[str] = None  # "" = fine, else why not

    def check_available(self) -> None:
        cls = type(self)
        if cls._checked is None:
            cls._checked = ""
            try:
                _import("torch")
                with _quiet_deepspeed():
                    module = _import("deepspeed.ops.adam")
                    _memoize_cpuinfo()
                    torch = _import("torch")
                    p = torch.nn.Parameter(torch.zeros(8))
                    p.grad = torch.zeros(8)
                    module.DeepSpeedCPUAdam([p]).step()  # builds or loads the op
            except Unavailable as exc:
                cls._checked = str(exc)
            except Exception as exc:  # the op failed to build or load
                cls._checked = f"DeepSpeedCPUAdam does not build here ({type(exc).__name__}: {exc})"
        if cls._checked:
            raise Unavailable(cls._checked)

    def supports(self, case: Case, dtype: np.dtype) -> Optional[str]:
        if case.family != "adam":
            return "DeepSpeedCPUAdam is Adam/AdamW only"
        if np.dtype(dtype) != np.float32:
            return "DeepSpeedCPUAdam benchmarked in float32 only"
        return None

    def build(self, case: Case, data: Data) -> Runner:
        with _quiet_deepspeed():
            module = _import("deepspeed.ops.adam")
            _memoize_cpuinfo()
        h = case.hyper

        def make(params: List[Any]) -> Any:
            with _quiet_deepspeed():
                return module.DeepSpeedCPUAdam(
                    params, lr=h["lr"], betas=(h["beta1"], h["beta2"]), eps=h["eps"],
                    weight_decay=h["weight_decay"],
                    adamw_mode=bool(h.get("decoupled_weight_decay", False)))
        return TorchRunner(case, data, make)

    def version(self) -> Optional[str]:
        return _dist_version("deepspeed")


def _memoize_cpuinfo() -> None:
    """DeepSpeedCPUAdam's constructor calls py-cpuinfo's get_cpu_info(), which runs
    subprocesses: ~1 s per optimizer built, setup time only. Its answer cannot change within
    a run, so it is computed once."""
    try:
        import cpuinfo
    except ImportError:
        return
    if getattr(cpuinfo.get_cpu_info, "_gdfast_bench_memo", False):
        return
    original = cpuinfo.get_cpu_info
    cache: Dict[str, Any] = {}

    def get_cpu_info() -> Any:
        if "info" not in cache:
            cache["info"] = original()
        return dict(cache["info"])

    get_cpu_info._gdfast_bench_memo = True  # type: ignore[attr-defined]
    cpuinfo.get_cpu_info = get_cpu_info


def _dist_version(dist: str) -> Optional[str]:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def registry() -> List[Implementation]:
    """Every implementation the CLI knows, gdfast first (the bound is added by the suite)."""
    return [Gdfast(), Numpy(), TorchOptim("loop"), TorchOptim("foreach"), TorchOptim("fused"),
            LionPytorch(), DeepSpeedCPUAdam()]


def set_threads(n: int) -> None:
    """Thread count for gdfast and for torch (if imported; DeepSpeed's OpenMP loop follows
    torch's setting). NumPy's elementwise ops are single-threaded anyway."""
    import sys

    import gdfast

    gdfast.set_num_threads(n)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(n)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1
