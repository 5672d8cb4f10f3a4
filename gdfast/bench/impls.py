"""The implementations compared: gdfast, what a user would otherwise run, and the two bounds.

Each :class:`Implementation` builds a :class:`Runner` for one case (cases.py) on one
workload's data. A runner owns its parameters and optimizer state (own copies; the gradients
are shared and only read), exposes ``step`` (exactly one optimizer step, the timed unit) and
can ``reset`` to the initial parameters with fresh state (for the correctness gate).

Nothing here knows an optimizer: gdfast's runner calls the case's rule through gdfast.ops with
the states its plan names, NumPy runs the rule of reference.py, torch.optim and the other
packages build the class the case's row names, with the case's keyword arguments. Optional
packages (torch, lion-pytorch, DeepSpeed) are imported only when an implementation that needs
them is built; a missing one makes that implementation unavailable, with a reason.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .bandwidth import STREAM_SCALE
from .cases import CASES, FUSED, LOOP, TORCH_PATHS, Case, Package
from .optional import Unavailable, dist_version, load, quiet
from .precision import Precision, as_precision, storage_dtype
from .reference import STEPS
from .workloads import Data, Pool, single

Step = Callable[[], None]


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
        self.precision: Precision = data.precision
        self.params = []
        self.states: Dict[str, List[np.ndarray]] = {}  # by torch's state name, per tensor
        self.masters: List[np.ndarray] = []  # float32 copies of the params (master weights)
        self._pooled: List[np.ndarray] = []

    def _take(self, like: np.ndarray, dtype: Any = None) -> np.ndarray:
        a = self.data.pool.take(like, dtype)
        self._pooled.append(a)
        return a

    def _own_arrays(self, states: Sequence[str]) -> None:
        """Parameters, the named state arrays per tensor in the precision mode's state type,
        and the master copies if it keeps them, from the data's pool (filled by reset)."""
        state_type = storage_dtype(self.precision.state)
        self.params = [self._take(p) for p in self.data.p0]
        self.states = {name: [self._take(p, state_type) for p in self.data.p0]
                       for name in states}
        if self.precision.master:
            self.masters = [self._take(p, np.float32) for p in self.data.p0]

    def _restore(self) -> None:
        """Parameters = p0 (and their masters), every state at its start (zeros, or the
        hyperparameter the rule fills it from, rounded to the state's type)."""
        for p, p0 in zip(self.params, self.data.p0):
            np.copyto(p, p0)
        for m, p0 in zip(self.masters, self.data.p0):
            np.copyto(m, p0.astype(np.float32))  # exact: p0 is stored narrower
        starts = state_starts(self.case)
        for name, arrays in self.states.items():
            for a in arrays:
                a.fill(starts[name])

    def reset(self) -> None:
        """Parameters back to p0, optimizer state fresh, step count 0."""
        self.step = self._fresh()
        self.fresh = True

    def _fresh(self) -> Step:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare(self) -> None:
        """Called before each timed batch (after the thread count is set)."""

    def state_bytes(self) -> int:
        """Bytes of optimizer state this implementation keeps (after at least one step),
        master copies included."""
        return (sum(a.nbytes for arrays in self.states.values() for a in arrays)
                + sum(m.nbytes for m in self.masters))

    def close(self) -> None:
        """Drop the references to big arrays; hand the pooled ones back."""
        self._drop()
        self.params, self.states, self.masters = [], {}, []
        self.data.pool.give(self._pooled)
        self._pooled = []

    def _drop(self) -> None:
        """Subclasses: drop what else refers to the arrays."""


def state_starts(case: Case) -> Dict[str, float]:
    """Each state's first value, as the registry declares it: zeros, or every element at a
    hyperparameter's value ("fill": Adagrad's sum, Rprop's step sizes). A state the first step
    writes before reading ("unset") starts at zero too."""
    return {s.name: float(case.hyper[s.fill_from]) if s.init == "fill" and s.fill_from else 0.0
            for s in case.rule.states}


class Implementation:
    name = ""
    kind = "reference"  # "gdfast", "reference" or "bound"
    description = ""
    # transient arrays a step allocates, for the memory estimate: (n, m) = n arrays the size of
    # the largest tensor (per-tensor loops) plus m arrays the size of the whole list (foreach)
    temporaries = (0, 0)
    copies_workload = True  # holds its own params and states the size of the workload
    install = ""  # how to get it, when check_available fails: "pip install ..."

    def check_available(self) -> None:
        """Raise Unavailable(reason) if this cannot run here."""

    def supports(self, case: Case, precision: Any) -> Optional[str]:
        """None if it can run ``case`` in ``precision`` (a precision mode, or a dtype: its
        plain mode), else the reason it cannot."""
        return None

    def slow_for(self, case: Case) -> bool:
        """Beaten by a faster reference of the same case, and costly at large sizes: skipped
        above --slow-limit."""
        return False

    def build(self, case: Case, data: Data) -> Runner:  # pragma: no cover - abstract
        raise NotImplementedError

    def version(self) -> Optional[str]:
        return None


# ---------------------------------------------------------------------------------------------
# gdfast

# The ``step`` argument of the t-th call (1-based), per the rule's step kind: the count itself
# (torch's state["step"]); 1 on the call that makes the state and 2 after (SGD's momentum
# buffer is written, not read, on its first step); none (Lion keeps no count).
STEP_ARGUMENT = {"counted": "t", "first_call": "1 if t == 1 else 2", "none": "None"}


def op_step(case: Case, param: Any, grad: Any, states: Dict[str, Any],
            extra: Optional[Dict[str, Any]] = None) -> Step:
    """One call of ``gdfast.ops.<rule>_`` per step, on these arrays (one array, or a list) with
    the case's hyperparameters: the step count per the rule's step kind, scalar states carried
    from the dict the op returns. The call is generated with every argument spelled out as a
    keyword, as a user writes it: passing the hyperparameters as ``**dict`` costs more than the
    call itself (16-element adam_: 1.25 us with keywords, 2.8 us with the case's dict).
    ``extra``: more keyword arguments, the same on every call (a precision mode's
    master_param, stochastic_rounding, seed)."""
    import gdfast.ops

    rule = case.rule
    op = getattr(gdfast.ops, f"{rule.name}_")
    scalars = [f.name for f in rule.scalar_states]
    env: Dict[str, Any] = {"_op": op, "_param": param, "_grad": grad}
    args = []
    for i, name in enumerate(states):
        env[f"_s{i}"] = states[name]
        args.append(f"{name}=_s{i}")
    for i, (name, value) in enumerate(case.hyper.items()):
        env[f"_h{i}"] = value
        args.append(f"{name}=_h{i}")
    for i, (name, value) in enumerate((extra or {}).items()):
        env[f"_x{i}"] = value
        args.append(f"{name}=_x{i}")
    carried = [f"_c{i}" for i in range(len(scalars))]  # the scalar states between calls
    env.update({f"_start{i}": rule.scalar_start(f, case.hyper)
                for i, f in enumerate(rule.scalar_states)})
    args += [f"{name}={c}" for name, c in zip(scalars, carried)]
    # stochastic rounding is keyed by the step argument: the count itself on every call, for
    # every rule, or each step would round alike (the ops require it)
    step = "t" if (extra or {}).get("stochastic_rounding") else STEP_ARGUMENT[rule.step]
    # inputs after the gradient (Sophia's Hessian estimate): the gradient again, not read by
    # the steps the rows time (the class's steps between refreshes); no memory traffic added
    inputs = "".join(", _grad" for _ in rule.inputs[1:])
    call = f"_op(_param, _grad{inputs}, {', '.join(args)}, step={step})"
    lines = ["def make():", "    t = 0"]
    lines += [f"    {c} = _start{i}" for i, c in enumerate(carried)]
    lines += ["    def step():", f"        nonlocal {', '.join(['t', *carried])}",
              "        t += 1"]
    if scalars:
        lines += [f"        after = {call}"]
        lines += [f"        {c} = after[{name!r}]" for name, c in zip(scalars, carried)]
    else:
        lines += [f"        {call}"]
    lines += ["    return step"]
    exec(compile("\n".join(lines), f"<gdfast-bench {case.name} step>", "exec"), env)
    return env["make"]()  # type: ignore[no-any-return]


class GdfastRunner(Runner):
    def __init__(self, case: Case, data: Data, isa: Optional[str]):
        super().__init__(case, data)
        self.isa = isa
        self._own_arrays(case.states)
        self.reset()

    def _arg(self, arrays: List[np.ndarray]) -> Any:
        """One array as such, a list as a list."""
        return arrays[0] if self.data.single else arrays

    def _kernel_args(self) -> Tuple[Any, Any, Dict[str, Any]]:
        """param, grad and states by name."""
        return (self._arg(self.params), self._arg(self.data.grads),
                {name: self._arg(arrays) for name, arrays in self.states.items()})

    def _precision_args(self) -> Dict[str, Any]:
        """The op's keywords for the precision mode (none for a plain one): the master
        copies, or stochastic rounding seeded from the data's seed."""
        if self.precision.master:
            return {"master_param": self._arg(self.masters)}
        if self.precision.stochastic:
            return {"stochastic_rounding": True, "seed": self.data.seed}
        return {}

    def _fresh(self) -> Step:
        self._restore()
        return op_step(self.case, *self._kernel_args(), self._precision_args())

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

    def supports(self, case: Case, precision: Any) -> Optional[str]:
        as_precision(precision)  # every mode is gdfast's (an unknown dtype raises)
        return None

    def build(self, case: Case, data: Data) -> Runner:
        return GdfastRunner(case, data, self.isa)

    def version(self) -> Optional[str]:
        import gdfast

        return gdfast.__version__


# ---------------------------------------------------------------------------------------------
# The bounds: not optimizers, timed with them (see bandwidth.py for the stream kernel).


class BoundRunner(GdfastRunner):
    """gdfast's runner with the stream kernel in place of the update rule: the case's
    in-place access pattern (its used states, in the precision mode's storage types) at
    memory speed. With a master copy, the stream reads and writes the float32 master as one
    more state: the step only writes the narrow param, but a store to a line not read moves
    it in from memory first all the same, so this is the traffic the step causes (2 B per
    element more than it counts as moved). (The master as a state, not in the param's place:
    then every state is float32, a combination of types gdfast compiles in; a float32 param
    with a bfloat16 state takes its generic path, 3x slower in cache.)"""

    def _fresh(self) -> Step:
        from gdfast import _core

        self._restore()
        param, grad, states = self._kernel_args()
        arrays = tuple(states[name] for name in self.case.states)
        if self.precision.master:
            arrays += (self._arg(self.masters),)
        stream = _core.stream
        if self.case.two_pass and self.precision.plain and len(arrays) == 2:
            # LAMB's two passes as they move their bytes, array for array: pass 1 reads p, g, m,
            # v and writes m, v; pass 2 reads p, m, v and writes p (40 B per fp32 element).
            first, second = arrays

            def own_passes() -> None:
                stream(first, grad, (second,), STREAM_SCALE, input=param)
                stream(param, first, (), STREAM_SCALE, input=second)

            return own_passes
        if self.case.two_pass and arrays:
            # In the precision modes (the stream with an input takes float32 and float64 arrays
            # only): the pattern of pass 1 and a param write, then the param updated from one
            # state; as many bytes as the rule moves, one write more and one array fewer read
            # (with a master copy, a state here: 38 B per element against the rule's 40).
            def two_passes() -> None:
                stream(param, grad, arrays, STREAM_SCALE)
                stream(param, arrays[0], (), STREAM_SCALE)

            return two_passes

        def step() -> None:
            stream(param, grad, arrays, STREAM_SCALE)

        return step

    def state_bytes(self) -> int:
        return 0


class Bound(Implementation):
    """Not an optimizer: the in-place stream with the case's access pattern, on the same
    workload, interleaved with the implementations. 100% = this row's bytes/second."""

    name = "bound"
    kind = "bound"
    description = "gdfast._core.stream: the case's in-place access pattern at memory speed"

    def __init__(self, isa: Optional[str] = None):
        self.isa = isa

    def build(self, case: Case, data: Data) -> Runner:
        return BoundRunner(case, data, self.isa)


ARITH_BLOCK = 16384  # elements: Adam's 4 fp32 arrays take 256 KiB, well inside one core's L2
ARITH_ELEMENTS_PER_CALL = 1 << 21  # per Python call: its ~1 us overhead drops below 0.5%
# The step count of the arithmetic bound's steps: a run under way, past every warm-up branch
# (RAdam rectifies from step 6); a first_call rule reads its state from its second call on.
ARITH_STEP = {"counted": 1000, "first_call": 2, "none": 0}
ARITH_COUNT = 1000  # what keys stochastic rounding (the step count for counted rules)


def _staggered(dtypes: Sequence[np.dtype], n: int) -> List[np.ndarray]:
    """Arrays of ``n`` elements of these dtypes, cache-line aligned, at different offsets
    within a 4 KiB page: arrays at the same offset (what an allocator gives arrays of equal
    size) make loads wait on older stores to the same low address bits, which is the layout's
    cost, not the arithmetic's."""
    line, stagger, page = 64, 640, 4096
    widest = max(d.itemsize for d in dtypes)
    stride = -(-n * widest // page) * page + stagger
    raw = np.empty(len(dtypes) * stride + line, np.uint8)
    start = -raw.ctypes.data % line
    return [raw[start + k * stride:][: n * d.itemsize].view(d) for k, d in enumerate(dtypes)]


class ArithRunner(GdfastRunner):
    """gdfast's step on the workload's first ARITH_BLOCK elements, applied ``repeats`` times
    in place per call (``_core.run_repeated``); ``time_scale`` turns a call's time into the
    time for the workload's element count."""

    def __init__(self, case: Case, data: Data, isa: Optional[str]):
        block = min(data.workload.numel, ARITH_BLOCK)
        self.repeats = max(math.ceil(data.workload.numel / block),
                           math.ceil(ARITH_ELEMENTS_PER_CALL / block))
        self.time_scale = data.workload.numel / (block * self.repeats)
        precision = data.precision
        kinds = [data.grads[0].dtype, data.dtype] + [storage_dtype(precision.state)] * (
            case.n_states) + ([np.dtype(np.float32)] if precision.master else [])
        grad, param, *owned = _staggered(kinds, block)

        def head(arrays: List[np.ndarray], out: np.ndarray) -> List[np.ndarray]:
            flat = np.concatenate([a.reshape(-1)[:block] for a in arrays])
            np.copyto(out, flat[:block])
            return [out]

        small = dataclasses.replace(data, workload=single(block),
                                    p0=head(data.p0, np.empty_like(param)),
                                    grads=head(data.grads, grad), sample=[], pool=Pool())
        small.pool.give([param, *owned])  # the runner takes its param, states and master here
        super().__init__(case, small, isa)

    def _fresh(self) -> Step:
        from gdfast import _core

        self._restore()
        param, grad, states = self._kernel_args()
        rule = self.case.rule
        inputs = (grad,) * len(rule.inputs)  # (later inputs: the gradient again, as op_step)
        batch = rule.batch(param, inputs, states, self.case.hyper, ARITH_STEP[rule.step])
        if not self.precision.plain:
            # (master, seed, param_index, the count that keys stochastic rounding)
            extra = self._precision_args()
            batch += ((extra.get("master_param"), extra.get("seed"), None, ARITH_COUNT),)
        batches = [batch]
        rule_id, repeats, run = rule.id, self.repeats, _core.run_repeated

        def step() -> None:
            run(rule_id, batches, repeats)

        return step

    def state_bytes(self) -> int:
        return 0


class ArithBound(Implementation):
    """Not an optimizer: gdfast's step on cache-resident data, without per-call costs."""

    name = "arith"
    kind = "bound"
    copies_workload = False
    description = ("gdfast's step repeated in place on a cache-resident block: the "
                   "arithmetic a step needs, at the core's speed")

    def __init__(self, isa: Optional[str] = None):
        self.isa = isa

    def supports(self, case: Case, precision: Any) -> Optional[str]:
        return Gdfast().supports(case, precision)

    def build(self, case: Case, data: Data) -> Runner:
        return ArithRunner(case, data, self.isa)


# ---------------------------------------------------------------------------------------------
# NumPy: the reference rule run in the arrays' own dtype, one tensor at a time.


class NumpyRunner(Runner):
    def __init__(self, case: Case, data: Data):
        super().__init__(case, data)
        self._own_arrays(())  # parameters only: the rule keeps its state in a dict per tensor
        self.tensor_states: List[Dict[str, Any]] = []
        self.reset()

    def _fresh(self) -> Step:
        self._restore()
        rule, hyper = STEPS[self.case.rule.name], dict(self.case.hyper)
        self.tensor_states = [{} for _ in self.params]
        work = list(zip(self.params, self.data.grads, self.tensor_states))

        def step() -> None:
            for p, g, state in work:
                p[...] = rule(p, g, state, **hyper)

        return step

    def state_bytes(self) -> int:
        return sum(v.nbytes for state in self.tensor_states for v in state.values()
                   if isinstance(v, np.ndarray))

    def _drop(self) -> None:
        self.tensor_states = []


class Numpy(Implementation):
    name = "numpy"
    # reference.py's rules make new arrays for the parameter, its update and each state: 9
    # arrays of the tensor's size at most (Adam and NAdam, measured with tracemalloc)
    temporaries = (9, 0)
    description = ("NumPy: reference.py's rule in the arrays' dtype, one tensor at a time, "
                   "p[...] = step(p, g, state) (what a user would write)")

    def slow_for(self, case: Case) -> bool:
        return True

    def supports(self, case: Case, precision: Any) -> Optional[str]:
        if not as_precision(precision).plain:
            return "NumPy steps float32 and float64 arrays (no narrower storage)"
        return None

    def build(self, case: Case, data: Data) -> Runner:
        return NumpyRunner(case, data)

    def version(self) -> Optional[str]:
        return np.__version__


# ---------------------------------------------------------------------------------------------
# torch.optim and torch-based packages. Parameters are torch tensors made from copies of p0;
# gradients share the NumPy gradient arrays' memory (torch.from_numpy, no copy).


class TorchRunner(Runner):
    def __init__(self, case: Case, data: Data, make_optimizer: Callable[[List[Any]], Any]):
        super().__init__(case, data)
        torch = load("torch")
        self.torch = torch
        self.make_optimizer = make_optimizer
        self._own_arrays(())  # parameters only: the optimizer allocates its own state
        self.tensors = [torch.nn.Parameter(as_tensor(torch, p)) for p in self.params]
        for t, g in zip(self.tensors, data.grads):
            t.grad = as_tensor(torch, g)
        self.optimizer: Any = None
        self.reset()

    def _fresh(self) -> Step:
        self._restore()
        self._drop()  # the old state goes before the new is made
        self.optimizer = self.make_optimizer(self.tensors)
        step: Step = self.optimizer.step
        torch = self.torch
        dtype = self.tensors[0].dtype if self.tensors else None
        if dtype != torch.float64 or not self.case.rule.scalar_states:
            return step

        # torch.optim keeps scalar states (NAdam's mu_product, ASGD's eta and mu: the rules
        # whose registry entry has scalar states) as tensors of torch's default dtype, float32,
        # made on the first step and, in ASGD's for-loop, again on every step: float64
        # parameters are stepped with float64 as the default (as a float64 user sets it), or
        # those scalars round the update to float32 accuracy and fail the gate. Setting and
        # restoring the default costs ~2 us per step, on these float64 rows only. (Step counts
        # are float32 tensors too, but exact up to 2**24 steps.)
        set_default = torch.set_default_dtype

        def with_default_dtype() -> None:
            previous = torch.get_default_dtype()
            set_default(dtype)
            try:
                step()
            finally:
                set_default(previous)

        return with_default_dtype

    def state_bytes(self) -> int:
        total = 0
        state = getattr(self.optimizer, "state", {})
        for per_param in state.values():
            for value in per_param.values():
                if self.torch.is_tensor(value):
                    total += value.nelement() * value.element_size()
        return total

    def _drop(self) -> None:
        # torch.optim's for-loop optimizers sit in a reference cycle: empty it so that its
        # state is freed now, not at some later garbage collection
        opt, self.optimizer = self.optimizer, None
        if opt is not None:
            opt.state.clear()
            opt.param_groups.clear()

    def close(self) -> None:
        super().close()
        self.tensors = []


def as_tensor(torch: Any, a: np.ndarray) -> Any:
    """A torch tensor sharing ``a``'s memory (bfloat16: through its bits, which
    torch.from_numpy cannot take as ml_dtypes' type)."""
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.uint16)).view(torch.bfloat16)
    return torch.from_numpy(a)


def torch_style_supports(who: str, precision: Any,
                         state_types: Sequence[str] = ()) -> Optional[str]:
    """Whether a torch-style optimizer class can run a precision mode: params and grads of
    one type, its states in that type (or in one of ``state_types``), no master copy, no
    stochastic rounding."""
    p = as_precision(precision)
    if p.master:
        return f"{who} keeps no float32 master copy"
    if p.stochastic:
        return f"{who} has no stochastic rounding"
    if p.param != p.grad:
        return f"{who} takes grads of the param's type"
    if p.state != p.param and p.state not in state_types:
        return f"{who} keeps its states in the param's type"
    return None


class TorchOptim(Implementation):
    """torch.optim.<the case's constructor> on one of its code paths, where its row lists
    it."""

    FLAGS = {"loop": {"foreach": False}, "foreach": {"foreach": True}, "fused": {"fused": True}}

    def __init__(self, variant: str):
        assert variant in TORCH_PATHS
        self.variant = variant
        self.name = f"torch-{variant}"
        self.install = "pip install torch==2.13.0 (the bench extra has it)"
        # measured peak: up to 3.25 extra arrays per tensor (Rprop's loop), 2 per list (foreach)
        self.temporaries = {"loop": (4, 0), "foreach": (0, 2), "fused": (0, 0)}[variant]
        self.description = {
            "loop": "torch.optim, foreach=False: a Python loop over tensors",
            "foreach": "torch.optim, foreach=True: torch._foreach_* ops over the list",
            "fused": "torch.optim, fused=True: one fused kernel per tensor (CPU since 2.4)",
        }[variant]

    def check_available(self) -> None:
        load("torch")

    def supports(self, case: Case, precision: Any) -> Optional[str]:
        if not case.torch:
            return "not in torch.optim"
        if self.variant not in case.torch:
            return f"torch.optim has no {self.variant} path for it on CPU"
        return torch_style_supports("torch.optim", precision)

    def slow_for(self, case: Case) -> bool:
        """The loop always (foreach beats it); foreach where a fused path exists."""
        return self.variant == LOOP or (self.variant != FUSED and FUSED in case.torch)

    def build(self, case: Case, data: Data) -> Runner:
        cls = getattr(load("torch").optim, case.ctor)
        kwargs = {**case.kwargs, **self.FLAGS[self.variant]}

        def make(params: List[Any]) -> Any:
            return cls(params, **kwargs)
        return TorchRunner(case, data, make)

    def version(self) -> Optional[str]:
        return dist_version("torch")


class PackageOptim(Implementation):
    """Another package's torch-style optimizers: for each case, the class its row names for
    this implementation (cases.Package), built with the case's keyword arguments. The
    implementation's name is the package's distribution name."""

    def __init__(self, name: str, description: str, install: str = ""):
        self.name, self.description = name, description
        self.install = install or f"pip install {name} (the bench extra has it)"

    def modules(self) -> List[str]:
        """The modules the rows name for this implementation."""
        return list(dict.fromkeys(p.module for c in CASES.values() for p in c.packages
                                  if p.impl == self.name))

    def check_available(self) -> None:
        load("torch")
        for module in self.modules():
            load(module)

    def supports(self, case: Case, precision: Any) -> Optional[str]:
        if case.package(self.name) is None:
            return f"not in {self.name}"
        return torch_style_supports(self.name, precision)

    def optimizer_class(self, package: Package) -> Any:
        return getattr(load(package.module), package.cls)

    def precision_kwargs(self, precision: Precision) -> Dict[str, Any]:
        """Constructor arguments that choose the precision mode (none here)."""
        return {}

    def build(self, case: Case, data: Data) -> Runner:
        package = case.package(self.name)
        assert package is not None, "supports() says so"
        cls = self.optimizer_class(package)
        kwargs = {**case.kwargs, **package.extra, **self.precision_kwargs(data.precision)}

        def make(params: List[Any]) -> Any:
            return cls(params, **kwargs)
        return TorchRunner(case, data, make)

    def version(self) -> Optional[str]:
        return dist_version(self.name)


class DeepSpeed(PackageOptim):
    """DeepSpeed's CPU optimizers: float32, bfloat16 or float16 params and grads of one type,
    states in float32 (``fp32_optimizer_states=True``, its default) or in the param's type;
    each class's C++ op is JIT-compiled on first use (~40 s, cached in
    ~/.cache/torch_extensions after), which may fail: that case is then skipped with the
    reason."""

    PARAM_TYPES = ("float32", "bfloat16", "float16")

    _built: Dict[str, str] = {}  # class path -> "" (loads) or why not, for the whole process

    def __init__(self) -> None:
        super().__init__("deepspeed", "DeepSpeed's CPU optimizers (CPUAdam, CPUAdagrad; fp32 "
                                      "states; the C++ op is JIT-compiled on first use, ~1 min, "
                                      "cached after)",
                         "pip install --no-build-isolation deepspeed (after torch)")

    def check_available(self) -> None:
        with quiet():
            super().check_available()

    def supports(self, case: Case, precision: Any) -> Optional[str]:
        if case.package(self.name) is None:
            return f"not in {self.name}"
        p = as_precision(precision)
        if p.param not in self.PARAM_TYPES:
            return (f"DeepSpeed steps {', '.join(self.PARAM_TYPES[:-1])} and "
                    f"{self.PARAM_TYPES[-1]} params only")
        return torch_style_supports("DeepSpeed", p, ("float32",))

    def precision_kwargs(self, precision: Precision) -> Dict[str, Any]:
        """States in the param's narrow type: fp32_optimizer_states=False (float32 states
        are its default)."""
        return {} if precision.state == "float32" else {"fp32_optimizer_states": False}

    def optimizer_class(self, package: Package) -> Any:
        with quiet():
            cls = super().optimizer_class(package)
            _memoize_cpuinfo()
        built = self._built
        if package.path not in built:
            built[package.path] = ""
            try:  # build or load the op now, so that a failure is a reason, not an error
                torch = load("torch")
                with quiet():
                    p = torch.nn.Parameter(torch.zeros(8))
                    p.grad = torch.zeros(8)
                    cls([p]).step()
            except Exception as exc:
                built[package.path] = (f"{package.cls} does not build here "
                                       f"({type(exc).__name__}: {exc})")
        if built[package.path]:
            raise Unavailable(built[package.path])

        def quietly(*args: Any, **kwargs: Any) -> Any:
            with quiet():
                return cls(*args, **kwargs)
        return quietly


def _memoize_cpuinfo() -> None:
    """DeepSpeed's CPU optimizers call py-cpuinfo's get_cpu_info() when built, which runs
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


def registry() -> List[Implementation]:
    """Every implementation the CLI knows, gdfast first (the bounds are added by the suite)."""
    return [Gdfast(), Numpy(), *(TorchOptim(v) for v in TORCH_PATHS),
            PackageOptim("lion-pytorch", "lion-pytorch (use_triton=False): torch ops per tensor"),
            PackageOptim("pytorch_optimizer", "pytorch_optimizer (foreach=True): torch's "
                         "foreach ops over the list"),
            DeepSpeed()]
