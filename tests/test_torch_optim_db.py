"""gdfast.torch.<Name> against torch.optim.<Name>, driven by torch 2.13's own optimizer test
database (torch.testing._internal.common_optimizers: ``optim_db``, its ``optim_inputs_func``
and ``optim_error_inputs_func``) for SGD, Adam, AdamW, RMSprop, Adagrad, Adadelta, Adamax,
NAdam, RAdam, ASGD and Rprop:

- trajectories (params and every state tensor and scalar) for every CPU hyperparameter input
  the database lists, float32/float64/complex64/complex128, against torch.optim with
  foreach=False; every ISA level and SIMD tail size;
- the database's error inputs raise the same exception (or warning) types;
- signatures, defaults and param groups equal torch's;
- state_dict interchange both ways mid-run, named parameters, sparse gradients, and
  all-or-nothing steps (a step that raises leaves every group untouched).

Tolerances. The gradients never depend on the params (except through weight decay), so the
two implementations differ only by rounding: each step is a handful of roundings, ordered
differently by torch and by gdfast (which never contracts into FMA), i.e. a few units of
roundoff u of the magnitudes involved per step, accumulating at most linearly. Every tensor
(param or state) is held after t steps to

    |ours - torch| <= ULPS_PER_STEP * t * u * (|torch| + scale)   (+ the allowances below)

u = 2^-53 (float64) or 2^-24 (float32; complex: its real dtype), ULPS_PER_STEP = 4 (Adadelta
16, see there), scale = the largest magnitude of that quantity in the run (an element that
crosses zero still carries the rounding of the magnitudes it was formed from). The gradients
are kept away from cancelling against weight decay (see gradients()), where a one-rounding
difference is amplified without bound. Measured worst, as a fraction of the bound: 0.51, which
is one ulp of a param after step 1 (the final rounding of p + update; 2u of 4u); 0.2-0.4
after 50 steps. A formula difference (a wrong bias correction, a missed weight decay) shows
as >= 1e-4 relative, so the float64 runs, held to ~1e-14, prove the formulas, and prove that
float64 params are computed in float64 (float32 arithmetic would be ~1e-7 off). Allowances:

- A tensor lr or betas: torch forms the scalars derived from them (lr / bias_correction,
  1 - lr * weight_decay, beta1 ** step) as float32 tensors, so those runs take u = 2^-24
  whatever the param dtype.
- NAdam's mu_product (a float32 scalar tensor unless the default dtype is float64): torch
  multiplies it in float32 each step (mu rounded to float32, then the product rounded), gdfast
  advances it in double and stores it rounded once, so they differ by up to (2t+1) * 2^-24
  relative after t steps. Through the update's two coefficients, c1 = lr*(1-mu_t)/(1-prod_t)
  and c2 = lr*mu_{t+1}/(1-prod_{t+1}), this moves a param by at most (first order)
  delta_t * prod_t/(1-prod_t) * sqrt(t) * (c1 + c2) per step (|g|/denom and |m|/denom are both
  <= sqrt(t) for Adam-type second moments); summed and doubled: nadam_allowance, ~1.1e-6*lr,
  of which float64 runs use 4%. With L2 weight decay that param difference reaches exp_avg
  (<= wd*dp) and exp_avg_sq (<= 2*max|g|*wd*dp). With the default dtype float64
  (test_default_dtype_float64_scalar_states) mu_product is float64 on both sides and NAdam is
  held to the plain bound.
- ASGD after load_state_dict into float64 params: asgd_allowance.
- Scalar states: step exactly; mu_product by the relative bound above; ASGD's eta and mu are
  a double rounded once to the scalar dtype on both sides: 2 ulps (measured: equal).
"""

from __future__ import annotations

import copy
import inspect
import io
import math
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("expecttest")  # torch.testing._internal imports it
import torch.nn as nn  # noqa: E402

import gdfast  # noqa: E402
import gdfast.torch as gt  # noqa: E402
from gdfast._stepping import GDFAST_OPTIONS  # noqa: E402

FLAGS_FROZEN_BEFORE = torch.backends.flags_frozen()


def _import_optim_db() -> Any:
    """torch's database; importing torch.testing._internal.common_utils freezes
    torch.backends' flags for the whole process (torch's own test-suite policy), which would
    leak into every other test module of the session: undone here."""
    from torch.testing._internal import common_optimizers

    if not FLAGS_FROZEN_BEFORE:  # the flag lives in the globals of torch/backends/__init__.py
        torch.backends.flags_frozen.__globals__["__allow_nonbracketed_mutation_flag"] = True
    return common_optimizers


co = _import_optim_db()

NAMES = ("SGD", "Adam", "AdamW", "RMSprop", "Adagrad", "Adadelta", "Adamax", "NAdam", "RAdam",
         "ASGD", "Rprop")
OPTIM_DB = {info.name: info for info in co.optim_db}
STEPS = 50
COMPARE_AT = (1, 2, STEPS)  # first step (states created), second (first-step branches), last
ULPS_PER_STEP = 4
# Adadelta's acc_delta: each side forms delta^2 = (acc+eps)/(sq+eps)*g^2 through ~5 roundings,
# then squares (doubling them) and accumulates: up to ~8 u per side per step. Measured: 5 u.
ULPS_PER_STEP_OF = {"Adadelta": 16}
SCALAR_STATES = ("step", "mu_product", "eta", "mu")
# One group: a long vector (4099 = 4096 + 3: a tail for every SIMD width), a matrix, an empty
# tensor and a single element.
SHAPES = ((4099,), (3, 5), (0,), (1,))
DTYPES = {"float32": torch.float32, "float64": torch.float64, "complex64": torch.complex64,
          "complex128": torch.complex128}

# Database error inputs that torch's constructor checks and its step does not (tensor lr and
# betas against foreach): edited into a group after construction they are no error there.
CONSTRUCTOR_ONLY = {
    "lr as Tensor doesn't work with foreach & not capturable",
    "betas must be either both floats or both Tensors",
    r"betas\[0\] as a Tensor is not supported for capturable=False and foreach=True",
}


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    """Small tensors: torch's thread pool buys nothing and competes with gdfast's for the
    cores of a loaded machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")


def cpu_inputs(name: str) -> List[Any]:
    return OPTIM_DB[name].optim_inputs_func("cpu")


def richest_input(name: str) -> Dict[str, Any]:
    """The database's CPU input with the most options set (the last of equals)."""
    best: Dict[str, Any] = {}
    for optim_input in cpu_inputs(name):
        if len(optim_input.kwargs) >= len(best):
            best = optim_input.kwargs
    return best


def cuda_only_inputs(name: str) -> List[Any]:
    """The inputs the database lists for CUDA devices only (all with capturable=True)."""
    cpu_descs = {i.desc for i in cpu_inputs(name)}
    return [i for i in OPTIM_DB[name].optim_inputs_func("cuda") if i.desc not in cpu_descs]


def _db_parity_params() -> List[Any]:
    """Every CPU input; then every CUDA-only input with capturable dropped, where that is not
    a CPU input already (capturable only keeps the step count and lr on the params' device;
    the arithmetic is the same): tensor lr and tensor betas, Adamax's and NAdam's
    weight_decay=0.9."""
    out = []
    for name in NAMES:
        seen = []
        for k, optim_input in enumerate(cpu_inputs(name)):
            seen.append(repr(optim_input.kwargs))
            out.append(pytest.param(name, optim_input.kwargs, id=f"{name}-{k}-"
                                    f"{_slug(optim_input.desc)}"))
        for k, optim_input in enumerate(cuda_only_inputs(name)):
            kwargs = {key: v for key, v in optim_input.kwargs.items() if key != "capturable"}
            if repr(kwargs) not in seen:
                seen.append(repr(kwargs))
                out.append(pytest.param(name, kwargs, id=f"{name}-cuda{k}-"
                                        f"{_slug(optim_input.desc)}-without_capturable"))
    return out


# ---------------------------------------------------------------------------------------------
# Runs and their comparison


def _uniform(shape: Tuple[int, ...], dtype: Any, gen: Any) -> Any:
    """Initial params: uniform in [-1, 1) (each part, for complex)."""
    wide = torch.complex128 if dtype.is_complex else torch.float64
    return (2 * torch.rand(shape, dtype=wide, generator=gen) - (1 + 1j if dtype.is_complex
                                                                else 1)).to(dtype)


def gradients(specs: Sequence[Tuple[Tuple[int, ...], Any]], t: int) -> List[Any]:
    """Step t's gradients: new samples each step, of magnitude 2 + |normal| with a random sign
    (complex: phase), so that the weight-decayed gradient g + wd*p never cancels (wd <= 0.9,
    and |p| stays below 1.8 from its start in [-1, 1): compare() checks wd*|p| < 1.5):
    cancellation there would amplify a one-rounding difference without bound (Adam's
    m/(sqrt(v)+eps) has slope lr/eps at g ~ 0) and no ulp bound could hold. Every 7th step
    every 5th element is exactly 0 (Rprop's sign(0) branch, Adamax's max against 0; with
    coupled weight decay the gradient there is wd*p, one rounding)."""
    gen = torch.Generator().manual_seed(1000 + t)
    out = []
    for shape, dtype in specs:
        wide = torch.complex128 if dtype.is_complex else torch.float64
        z = torch.randn(shape, dtype=wide, generator=gen)
        g = (z / z.abs().clamp_min(1e-300) * (2 + z.abs())).to(dtype)
        if t % 7 == 0:
            g.view(-1)[::5] = 0
        out.append(g)
    return out


def torch_maker(name: str, kwargs: Dict[str, Any]) -> Callable[[List[Any]], Any]:
    return lambda params: getattr(torch.optim, name)(params, foreach=False,
                                                     **copy.deepcopy(kwargs))


def gdfast_maker(name: str, kwargs: Dict[str, Any]) -> Callable[[List[Any]], Any]:
    # foreach=False as torch's side gets (accepted and ignored), so param groups compare equal.
    return lambda params: getattr(gt, name)(params, foreach=False, **copy.deepcopy(kwargs))


class Run:
    """An optimizer over its own copies of the initial params (or given params), stepped with
    ``gradients(t)``; tracks max|grad| and max|param| (for the allowances)."""

    def __init__(self, make: Callable[[List[Any]], Any],
                 specs: Sequence[Tuple[Tuple[int, ...], Any]], params: Optional[List[Any]] = None,
                 t: int = 0) -> None:
        self.specs = list(specs)
        if params is None:
            gen = torch.Generator().manual_seed(0)
            params = [nn.Parameter(_uniform(shape, dtype, gen)) for shape, dtype in specs]
        self.params = params
        self.initial = [p.detach().clone() for p in params]
        self.opt = make(self.params)
        self.t = t
        self.gmax = self.pmax = 0.0

    def step(self, n: int = 1) -> None:
        for _ in range(n):
            self.t += 1
            for p, g in zip(self.params, gradients(self.specs, self.t)):
                p.grad = g
                if g.numel():
                    self.gmax = max(self.gmax, float(g.abs().max()))
                    self.pmax = max(self.pmax, float(p.detach().abs().max()))
            self.opt.step()


def nadam_allowance(kwargs: Dict[str, Any], steps: int) -> float:
    """The bound (module docstring) on how far NAdam's params may drift from torch's through
    mu_product's float32 rounding; 0 when the scalar states are float64."""
    if torch.get_default_dtype() == torch.float64:
        return 0.0
    u = 2.0 ** -24
    lr = float(kwargs.get("lr", 2e-3))
    beta1 = float(kwargs.get("betas", (0.9, 0.999))[0])
    psi = float(kwargs.get("momentum_decay", 4e-3))

    def mu(t: int) -> float:
        return beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))

    total, prod = 0.0, 1.0
    for t in range(1, steps + 1):
        prod *= mu(t)
        c1 = lr * (1.0 - mu(t)) / (1.0 - prod)
        c2 = lr * mu(t + 1) / (1.0 - prod * mu(t + 1))
        total += (2 * t + 1) * u * prod / (1.0 - prod) * math.sqrt(t) * (c1 + c2)
    return 2.0 * total


def asgd_allowance(kwargs: Dict[str, Any], steps: int, gmax: float, pmax: float) -> float:
    """ASGD with an eta that load_state_dict cast to a float64 param's dtype: torch still
    rounds each new eta to the default dtype (torch.as_tensor of a Python float) before
    copying it in, gdfast stores the double. eta then differs by <= 2^-24 relative, and each
    step's p*(1 - lambd*eta) - eta*(g + wd*p) by 2^-24 * eta * (lambd*|p| + |g| + wd*|p|),
    eta <= lr; summed over the steps, doubled. Measured: 4% of it."""
    lr = float(kwargs.get("lr", 1e-2))
    lambd, wd = float(kwargs.get("lambd", 1e-4)), float(kwargs.get("weight_decay", 0.0))
    return 2.0 * steps * 2.0 ** -24 * lr * ((lambd + wd) * pmax + gmax)


def _unit_roundoff(dtype: Any) -> float:
    return torch.finfo(dtype).eps / 2  # complex: its real dtype's


def _real64(t: Any) -> Any:
    t = t.detach()
    return (torch.view_as_real(t) if t.is_complex() else t).double()


def _max_abs(tensors: Sequence[Any]) -> float:
    return max((float(_real64(t).abs().max()) for t in tensors if t.numel()), default=0.0)


def check_close(what: str, actual: Any, expected: Any, per_step: float, steps: int,
                atol: float = 0.0, scale: Optional[float] = None) -> None:
    """|actual - expected| <= per_step * steps * (|expected| + scale) + atol (per_step:
    ULPS_PER_STEP * u), where
    scale is the largest magnitude of this quantity in the run (default: in ``expected``):
    an element that crosses zero carries the rounding of the magnitudes it was formed from."""
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.device == expected.device, what
    if expected.numel() == 0:
        return
    a, b = _real64(actual), _real64(expected)
    if scale is None:
        scale = float(b.abs().max())
    allowed = per_step * steps * (b.abs() + scale) + atol
    diff = (a - b).abs()
    if not bool((diff <= allowed).all()):
        worst = int(torch.argmax(diff - allowed))
        pytest.fail(f"{what} after {steps} steps: |diff| {float(diff.view(-1)[worst]):.3e} > "
                    f"allowed {float(allowed.view(-1)[worst]):.3e} at flat index {worst} "
                    f"(ours {float(a.view(-1)[worst])!r}, torch {float(b.view(-1)[worst])!r})")


def compare(name: str, kwargs: Dict[str, Any], ours: Run, theirs: Run, where: str = "") -> None:
    """Params and every state entry of ``ours`` within the module's bounds of ``theirs``."""
    steps = theirs.t
    tensor_hyper = torch.is_tensor(kwargs.get("lr")) or any(
        torch.is_tensor(b) for b in kwargs.get("betas", ()))
    param_atol = nadam_allowance(kwargs, steps) if name == "NAdam" else 0.0
    wd = float(kwargs.get("weight_decay", 0.0))
    coupled = not kwargs.get("decoupled_weight_decay", False)
    assert wd * theirs.pmax < 1.5, "gradients() no longer dominate weight decay"
    state_atol = (param_atol * wd * (2 * (theirs.gmax + wd * theirs.pmax) + 1) if coupled
                  else 0.0)
    scalar_u = _unit_roundoff(torch.get_default_dtype())
    states = [theirs.opt.state.get(q, {}) for q in theirs.params]
    scales = {key: _max_abs([s[key] for s in states if key in s])
              for key in {k for s in states for k in s} - set(SCALAR_STATES)}
    param_scale = _max_abs(theirs.params)
    for i, (p, q) in enumerate(zip(ours.params, theirs.params)):
        mine, ref = ours.opt.state.get(p, {}), states[i]
        assert mine.keys() == ref.keys(), f"{where}state names of param {i}"
        u = _unit_roundoff(q.dtype)
        if tensor_hyper:
            u = max(u, 2.0 ** -24)
        per_step = ULPS_PER_STEP_OF.get(name, ULPS_PER_STEP) * u
        atol = param_atol
        if "eta" in ref and ref["eta"].dtype != torch.get_default_dtype():
            atol += asgd_allowance(kwargs, steps, theirs.gmax, theirs.pmax)
        check_close(f"{where}param {i}", p, q, per_step, steps, atol, param_scale)
        for key, value in ref.items():
            what = f"{where}{key} of param {i}"
            if key in SCALAR_STATES:
                check_scalar(key, what, mine[key], value, steps, scalar_u)
            else:
                check_close(what, mine[key], value, per_step, steps, max(atol, state_atol),
                            scales[key])


def check_scalar(key: str, what: str, actual: Any, expected: Any, steps: int, u: float) -> None:
    assert torch.is_tensor(actual), what
    assert (actual.shape, actual.dtype, actual.device) == (
        expected.shape, expected.dtype, expected.device), f"{what}: {actual!r} vs {expected!r}"
    a, b = float(actual), float(expected)
    if key == "step":
        assert a == b, f"{what}: {a} != {b}"
    elif key == "mu_product":
        assert abs(a - b) <= (2 * steps + 1) * u * abs(b), f"{what}: {a!r} vs {b!r}"
    else:  # ASGD's eta, mu
        assert abs(a - b) <= 2 * 2 * u * abs(b), f"{what}: {a!r} vs {b!r}"


def run_pair(name: str, kwargs: Dict[str, Any], specs: Sequence[Tuple[Tuple[int, ...], Any]],
             steps: int = STEPS, compare_at: Sequence[int] = COMPARE_AT) -> Tuple[Run, Run]:
    ours = Run(gdfast_maker(name, kwargs), specs)
    theirs = Run(torch_maker(name, kwargs), specs)
    for t in range(1, steps + 1):
        ours.step()
        theirs.step()
        if t in compare_at:
            compare(name, kwargs, ours, theirs)
    return ours, theirs


# ---------------------------------------------------------------------------------------------
# Trajectories for every CPU input of the database


def test_importing_the_database_left_torch_backends_flags_as_they_were():
    assert torch.backends.flags_frozen() == FLAGS_FROZEN_BEFORE


def test_database_lists_every_optimizer():
    for name in NAMES:
        assert OPTIM_DB[name].optim_cls is getattr(torch.optim, name)
        assert OPTIM_DB[name].supports_complex, name  # so complex params are compared below
        assert cpu_inputs(name), name


@pytest.mark.parametrize("name", NAMES)
def test_cuda_only_inputs_are_capturable(name):
    """The database's CUDA-only inputs all set capturable=True; they run in
    test_trajectory_matches_torch without it (the same arithmetic on CPU params)."""
    inputs = cuda_only_inputs(name)
    assert all(i.kwargs.get("capturable") is True for i in inputs), name
    if inputs:
        pytest.skip(f"{len(inputs)} CUDA-only inputs with capturable=True: needs CUDA params "
                    "and gdfast's CUDA kernels; this CPU torch has no CUDA tensors")


@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("name, kwargs", _db_parity_params())
def test_trajectory_matches_torch(name, kwargs, dtype):
    ours, _ = run_pair(name, kwargs, [(shape, dtype) for shape in SHAPES])
    assert not torch.equal(ours.params[0], ours.initial[0]), "nothing was stepped"


@pytest.mark.parametrize("name", NAMES)
def test_default_dtype_float64_scalar_states(name):
    """torch.optim keeps step counts and scalar states in the default dtype when that is
    float64; so must gdfast.torch. NAdam's mu_product is then float64 on both sides and NAdam
    is held to the plain float64 bound (nadam_allowance is 0)."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        ours, _ = run_pair(name, richest_input(name), [(s, torch.float64) for s in SHAPES])
        for state in ours.opt.state.values():
            for key in SCALAR_STATES:
                if key in state:
                    assert state[key].dtype == torch.float64, key
    finally:
        torch.set_default_dtype(previous)


TAIL_SIZES = (*range(1, 18), 31, 33, 63, 65, 127, 129, 4099)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name", NAMES)
def test_every_isa_and_tail_size(name, dtype):
    """Every SIMD level this CPU has steps the same bits, for every length 1..17 (below, at
    and past each vector width, 2 to 16 lanes, where the pipelined loop and the masked tail
    meet) and around 32/64/128, and agrees with torch."""
    kwargs = richest_input(name)
    specs = [((n,), dtype) for n in TAIL_SIZES]
    steps = 5
    theirs = Run(torch_maker(name, kwargs), specs)
    theirs.step(steps)
    runs = {}
    for isa in gdfast.isa_info()["supported"]:
        with gdfast.use_isa(isa):
            runs[isa] = Run(gdfast_maker(name, kwargs), specs)
            runs[isa].step(steps)
    (first_isa, first), *others = runs.items()
    compare(name, kwargs, first, theirs, where=f"isa={first_isa}: ")
    for isa, run in others:
        for i, (p, q) in enumerate(zip(run.params, first.params)):
            assert torch.equal(p, q), f"param {i} (size {TAIL_SIZES[i]}): {isa} != {first_isa}"
            for key, value in first.opt.state[q].items():
                assert torch.equal(run.opt.state[p][key], value), (
                    f"{key} of param {i}: {isa} != {first_isa}")


# ---------------------------------------------------------------------------------------------
# The database's error inputs


def _error_params() -> List[Any]:
    out = []
    for name in NAMES:
        for k, error_input in enumerate(OPTIM_DB[name].optim_error_inputs_func("cpu",
                                                                               torch.float32)):
            desc = error_input.optimizer_error_input.desc
            out.append(pytest.param(name, k, id=f"{name}-{k}-{_slug(desc)}"))
    return out


# The constructor arguments whose bad values gdfast reports under the rule's own names.
ARGUMENT_NAMES = {"betas": ("betas", "beta1", "beta2"), "etas": ("etas", "etaminus", "etaplus"),
                  "step_sizes": ("step_sizes", "step_size_min", "step_size_max")}


def _raised(make: Callable[[], Any], expected: type) -> Optional[BaseException]:
    """Runs ``make``, which must raise ``expected`` (or warn it); returns the exception."""
    if issubclass(expected, Warning):
        with pytest.warns(expected):
            make()
        return None
    with pytest.raises(expected) as info:
        make()
    return info.value


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("name, index", _error_params())
def test_error_inputs_raise_torchs_exception_type(name, index, dtype):
    error_input = OPTIM_DB[name].optim_error_inputs_func("cpu", dtype)[index]
    optim_input = error_input.optimizer_error_input
    kwargs = optim_input.kwargs
    expected = error_input.error_type

    def attempt(cls: Any) -> Callable[[], Any]:
        def make() -> Any:
            # The database passes params=None for hyperparameter errors (torch checks those
            # first): a real param here, so that it is the hyperparameter that is refused.
            params = optim_input.params
            if params is None:
                params = [nn.Parameter(torch.randn(2, dtype=dtype))]
            opt = cls(params, **copy.deepcopy(kwargs))
            if error_input.error_on == co.OptimizerErrorEnum.STEP_ERROR:
                for group in opt.param_groups:
                    for p in group["params"]:
                        p.grad = torch.randn_like(p)
                opt.step()
            return opt
        return make

    _raised(attempt(getattr(torch.optim, name)), expected)  # the input still errs in torch
    ours = _raised(attempt(getattr(gt, name)), expected)
    if ours is not None and optim_input.params is None:  # a hyperparameter: named
        names = [n for key in kwargs for n in ARGUMENT_NAMES.get(key, (key,))]
        assert any(n in str(ours) for n in names), f"{ours} names none of {names}"


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW", "Adagrad"])
def test_fused_and_foreach_together_raise_runtime_error(name):
    """torch.optim refuses ``fused=True, foreach=True`` on CPU too (the database lists it for
    CUDA only, where fused is the default path)."""
    with pytest.raises(RuntimeError):
        getattr(torch.optim, name)([nn.Parameter(torch.randn(2))], foreach=True, fused=True)
    with pytest.raises(RuntimeError):
        getattr(gt, name)([nn.Parameter(torch.randn(2))], foreach=True, fused=True)


@pytest.mark.parametrize("name", NAMES)
def test_differentiable_and_capturable_refused(name):
    """Intended differences (gdfast's steps are fused kernels): differentiable=True is
    refused, and capturable=True where there are no gdfast CUDA kernels."""
    p = nn.Parameter(torch.randn(2))
    with pytest.raises(ValueError, match="differentiable"):
        getattr(gt, name)([p], differentiable=True)
    if "capturable" in inspect.signature(getattr(gt, name).__init__).parameters:
        if not gdfast.cuda.is_available():
            with pytest.raises(ValueError, match="capturable"):
                getattr(gt, name)([p], capturable=True)


# ---------------------------------------------------------------------------------------------
# Signatures, defaults, param groups


def _same_value(a: Any, b: Any) -> bool:
    """Equal values; numbers compare as numbers (torch writes weight_decay=0 where gdfast
    writes 0.0), flags and None by identity, tensors by value."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and torch.equal(a, b)
    if isinstance(a, tuple) or isinstance(b, tuple):
        return (isinstance(a, tuple) and isinstance(b, tuple) and len(a) == len(b)
                and all(_same_value(x, y) for x, y in zip(a, b)))
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a is b
    return bool(a == b)


@pytest.mark.parametrize("name", NAMES)
def test_signature_defaults_and_groups_are_torchs(name):
    ours_cls, theirs_cls = getattr(gt, name), getattr(torch.optim, name)
    assert issubclass(ours_cls, torch.optim.Optimizer)
    assert ours_cls._step_supports_amp_scaling is True
    # (gdfast's own precision options, issue 12, come after torch's arguments)
    ours = {k: p for k, p in inspect.signature(ours_cls.__init__).parameters.items()
            if k not in GDFAST_OPTIONS}
    theirs = inspect.signature(theirs_cls.__init__).parameters
    assert list(ours) == list(theirs)
    ours_names = list(inspect.signature(ours_cls.__init__).parameters)
    assert ours_names[-len(GDFAST_OPTIONS):] == list(GDFAST_OPTIONS)
    for arg, p in theirs.items():
        assert ours[arg].kind == p.kind, arg
        assert _same_value(ours[arg].default, p.default), (arg, ours[arg].default, p.default)
    for kwargs in [{}] + [i.kwargs for i in cpu_inputs(name)]:
        mine = ours_cls([nn.Parameter(torch.randn(2))], **copy.deepcopy(kwargs))
        ref = theirs_cls([nn.Parameter(torch.randn(2))], **copy.deepcopy(kwargs))
        assert mine.defaults.keys() - GDFAST_OPTIONS.keys() == ref.defaults.keys(), kwargs
        for key, value in ref.defaults.items():
            assert _same_value(mine.defaults[key], value), (kwargs, key)
        group, ref_group = mine.param_groups[0], ref.param_groups[0]
        assert group.keys() - GDFAST_OPTIONS.keys() == ref_group.keys(), kwargs
        for key in ref_group.keys() - {"params"}:
            assert _same_value(group[key], ref_group[key]), (kwargs, key)


# ---------------------------------------------------------------------------------------------
# state_dict interchange, both ways, mid-run


# Mixed dtypes in one group: two batches per step, and load_state_dict's per-param casts.
MIXED_SPECS = (((4099,), torch.float32), ((3, 5), torch.float64), ((1,), torch.float32),
               ((0,), torch.float64))
INTERCHANGE = [pytest.param(name, kwargs, id=f"{name}-{label}")
               for name in NAMES
               for label, kwargs in (("default", {}), ("richest", richest_input(name)))]


def _through_file(state_dict: Dict[str, Any]) -> Dict[str, Any]:
    """torch.save, then torch.load's default weights_only=True (what a checkpoint does)."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    buffer.seek(0)
    return torch.load(buffer)


def _torch_groups(state_dict: Dict[str, Any]) -> List[Dict[str, Any]]:
    """A state_dict's param groups without gdfast's own precision options (issue 12), which
    torch.optim's groups lack (and torch.optim ignores when it loads them)."""
    return [{k: v for k, v in g.items() if k not in GDFAST_OPTIONS}
            for g in state_dict["param_groups"]]


def _layout(state_dict: Dict[str, Any]) -> Dict[Any, Any]:
    return {k: {n: (type(v), getattr(v, "dtype", None), getattr(v, "shape", None),
                    getattr(v, "device", None)) for n, v in s.items()}
            for k, s in state_dict["state"].items() if s}


@pytest.mark.parametrize("direction", ["torch_to_gdfast", "gdfast_to_torch"])
@pytest.mark.parametrize("name, kwargs", INTERCHANGE)
def test_state_dict_interchange_mid_run(name, kwargs, direction):
    """One side steps 10 times and saves a checkpoint (through a file), the other loads it and
    steps 10 more; compared with torch continuing from its own checkpoint of the same point
    (load_state_dict casts state to each param's dtype, scalar states included, so that is
    what torch itself would have)."""
    half = 10
    reference = Run(torch_maker(name, kwargs), MIXED_SPECS)
    reference.step(half)
    if direction == "torch_to_gdfast":
        first, second_maker = reference, gdfast_maker(name, kwargs)
    else:
        first, second_maker = Run(gdfast_maker(name, kwargs), MIXED_SPECS), torch_maker(name,
                                                                                          kwargs)
        first.step(half)
        # gdfast's checkpoint: torch's layout (state names, dtypes, shapes), its param groups.
        assert _layout(first.opt.state_dict()) == _layout(reference.opt.state_dict())
        assert _torch_groups(first.opt.state_dict()) == reference.opt.state_dict()[
            "param_groups"]

    twin = Run(torch_maker(name, kwargs), MIXED_SPECS,
               params=[nn.Parameter(p.detach().clone()) for p in reference.params], t=half)
    twin.opt.load_state_dict(_through_file(reference.opt.state_dict()))
    second = Run(second_maker, MIXED_SPECS, params=first.params, t=half)
    second.opt.load_state_dict(_through_file(first.opt.state_dict()))
    for p, q in zip(second.params, twin.params):
        mine, ref = second.opt.state.get(p, {}), twin.opt.state.get(q, {})
        assert mine.keys() == ref.keys()
        for key, value in ref.items():
            assert (mine[key].dtype, mine[key].shape, mine[key].device) == (
                value.dtype, value.shape, value.device), key

    twin.step(half)
    second.step(half)
    twin.gmax, twin.pmax = max(twin.gmax, reference.gmax), max(twin.pmax, reference.pmax)
    compare(name, kwargs, second, twin)


# ---------------------------------------------------------------------------------------------
# Named parameters (torch >= 2.5 semantics)


def _model(seed: int = 0) -> Any:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def _train(model: Any, opt: Any, steps: int, start: int = 0) -> None:
    for t in range(start, start + steps):
        gen = torch.Generator().manual_seed(t)
        x = torch.randn(8, 5, dtype=torch.float64, generator=gen)
        opt.zero_grad()
        model(x).square().mean().backward()
        opt.step()


@pytest.mark.parametrize("name", NAMES)
def test_named_parameters(name):
    names = [n for n, _ in _model().named_parameters()]
    kwargs = dict(richest_input(name), foreach=False)  # foreach: equal param groups
    models, opts = [_model(), _model()], []
    for cls, model in zip((getattr(gt, name), getattr(torch.optim, name)), models):
        opts.append(cls(model.named_parameters(), **copy.deepcopy(kwargs)))
        _train(model, opts[-1], 5)
    ours, theirs = opts
    assert ours.param_groups[0]["param_names"] == names
    assert _torch_groups(ours.state_dict()) == theirs.state_dict()["param_groups"]
    assert _layout(ours.state_dict()) == _layout(theirs.state_dict())

    # Named groups, and a load between named torch and named gdfast optimizers both ways.
    def grouped(model: Any) -> List[Dict[str, Any]]:
        return [{"params": model[0].named_parameters(), "lr": 0.01},
                {"params": list(model[2].named_parameters())}]

    for source, target_cls in ((theirs, getattr(gt, name)), (ours, getattr(torch.optim, name))):
        model = _model()
        model.load_state_dict(models[0 if source is ours else 1].state_dict())
        target = target_cls(grouped(model), **copy.deepcopy(kwargs))
        assert [g["param_names"] for g in target.state_dict()["param_groups"]] == [
            ["weight", "bias"], ["weight", "bias"]]
        flat = copy.deepcopy(source.state_dict())
        # One group in the source, two in the target: split the source's group as torch
        # expects it (same param order), names included.
        group = flat["param_groups"][0]
        flat["param_groups"] = [dict(group, params=group["params"][:2],
                                     param_names=group["param_names"][:2], lr=0.01),
                                dict(group, params=group["params"][2:],
                                     param_names=group["param_names"][2:])]
        target.load_state_dict(flat)
        assert [g["param_names"] for g in target.state_dict()["param_groups"]] == [
            names[:2], names[2:]]


@pytest.mark.parametrize("name", NAMES)
def test_named_parameters_continue_after_load_as_torch(name):
    kwargs = dict(richest_input(name), foreach=False)
    runs = {}
    for label, source_cls, target_cls in (
            ("torch", getattr(torch.optim, name), getattr(torch.optim, name)),
            ("to_gdfast", getattr(torch.optim, name), getattr(gt, name)),
            ("to_torch", getattr(gt, name), getattr(torch.optim, name))):
        model = _model()
        source = source_cls(model.named_parameters(), **copy.deepcopy(kwargs))
        _train(model, source, 5)
        target = target_cls(model.named_parameters(), **copy.deepcopy(kwargs))
        target.load_state_dict(_through_file(source.state_dict()))
        _train(model, target, 5, start=5)
        runs[label] = model
    for label in ("to_gdfast", "to_torch"):
        for (n, p), q in zip(runs[label].named_parameters(), runs["torch"].parameters()):
            # The module's float64 bound for 10 steps, with NAdam's and ASGD's allowances
            # (|grad| and |param| stay far below 10 in this model). The gradients depend on
            # the params here (a real model), so rounding differences propagate through it;
            # measured: at most 4% of the bound.
            atol = nadam_allowance(kwargs, 10) if name == "NAdam" else 0.0
            if name == "ASGD":  # eta cast to float64 by the load (asgd_allowance)
                atol += asgd_allowance(kwargs, 10, 10.0, 10.0)
            check_close(f"{label} {n}", p, q, ULPS_PER_STEP_OF.get(name, ULPS_PER_STEP)
                        * 2.0 ** -53, 10, atol)


MIXED_NAMES = {
    "in_one_group": lambda cls, m: cls([("w", m[0].weight), m[0].bias]),
    "named_then_unnamed_group": lambda cls, m: cls([{"params": m[0].named_parameters()},
                                                    {"params": m[2].parameters()}]),
    "unnamed_then_named_group": lambda cls, m: cls([{"params": m[0].parameters()},
                                                    {"params": m[2].named_parameters()}]),
}


def _torch_class(name: str) -> Any:
    if name == "Lion":
        return pytest.importorskip("lion_pytorch").Lion
    return getattr(torch.optim, name)


@pytest.mark.parametrize("name", [*NAMES, "Lion"])
def test_names_mixed_with_unnamed_params_raise_torchs_value_error(name):
    model = _model()
    for what, make in MIXED_NAMES.items():
        with pytest.raises(ValueError, match="names") as ours:
            make(getattr(gt, name), model)
        with pytest.raises(ValueError) as theirs:
            make(_torch_class(name), model)
        assert str(ours.value) == str(theirs.value), what
    opt = getattr(gt, name)(model[0].named_parameters())
    with pytest.raises(ValueError, match="names"):
        opt.add_param_group({"params": model[2].parameters()})
    assert len(opt.param_groups) == 1


# ---------------------------------------------------------------------------------------------
# Sparse gradients


@pytest.mark.parametrize("name", [*NAMES, "Lion"])
def test_sparse_gradients_raise_runtime_error(name):
    """Every gdfast.torch optimizer refuses sparse gradients with RuntimeError, as
    torch.optim's dense-only optimizers do. Intended difference: torch.optim.SGD and Adagrad
    accept them; gdfast's kernels are dense (CONTEXT: sparse raises everywhere)."""
    emb = nn.Embedding(10, 3, sparse=True)
    emb(torch.tensor([1, 2])).sum().backward()
    before = emb.weight.detach().clone()
    opt = getattr(gt, name)(emb.parameters())
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert torch.equal(emb.weight.detach(), before) and not opt.state
    if name in ("SGD", "Adagrad"):
        with torch.sparse.check_sparse_tensor_invariants(enable=True):  # (else torch warns)
            getattr(torch.optim, name)(emb.parameters()).step()  # torch: accepted
    elif name != "Lion":
        with pytest.raises(RuntimeError, match="sparse"):
            getattr(torch.optim, name)(emb.parameters(), foreach=False).step()


# ---------------------------------------------------------------------------------------------
# All-or-nothing steps: a problem in the second group leaves the first untouched


def _all_names() -> List[str]:
    return [*NAMES, "Lion"]


def _stateful_kwargs(name: str) -> Dict[str, Any]:
    return {"SGD": {"momentum": 0.9}, "RMSprop": {"momentum": 0.5, "centered": True},
            "Adam": {"amsgrad": True}}.get(name, {})


def _two_groups(name: str, seed: int = 0) -> Tuple[Any, Any, Any]:
    gen = torch.Generator().manual_seed(seed)
    a = nn.Parameter(torch.randn(37, generator=gen))
    b = nn.Parameter(torch.randn(4, 3, generator=gen))
    opt = getattr(gt, name)([{"params": [a]}, {"params": [b], "lr": 0.02}],
                            **_stateful_kwargs(name))
    return opt, a, b


def _good_grads(a: Any, b: Any, t: int) -> None:
    gen = torch.Generator().manual_seed(100 + t)
    a.grad = torch.randn(a.shape, generator=gen)
    b.grad = torch.randn(b.shape, generator=gen)


def _snapshot(opt: Any, params: Sequence[Any]) -> Any:
    return ([p.detach().clone() for p in params],
            {id(p): {k: v.clone() for k, v in s.items()} for p, s in opt.state.items()})


def _assert_bitwise_unchanged(opt: Any, params: Sequence[Any], before: Any) -> None:
    values, states = before
    for i, (p, v) in enumerate(zip(params, values)):
        assert torch.equal(p.detach(), v), f"param {i} was written"
    now = {id(p): s for p, s in opt.state.items()}
    assert now.keys() == states.keys(), "state was created or dropped"
    for key, state in states.items():
        assert now[key].keys() == state.keys(), "a state entry was created or dropped"
        for name, value in state.items():
            assert torch.equal(now[key][name], value), f"{name} was written"


def _sparse(opt: Any, a: Any, b: Any) -> Callable[[], None]:
    good = b.grad
    b.grad = torch.zeros(b.shape).to_sparse()
    return lambda: setattr(b, "grad", good)


def _wrong_shape(opt: Any, a: Any, b: Any) -> Callable[[], None]:
    good = b.grad.data
    b.grad.data = torch.randn(5)  # torch refuses p.grad = <wrong shape>, not this
    return lambda: setattr(b.grad, "data", good)


def _shares_memory(opt: Any, a: Any, b: Any) -> Callable[[], None]:
    good = b.grad
    with pytest.raises(RuntimeError, match="own grad"):
        b.grad = b  # torch refuses the param itself ...
    b.grad = b.detach()  # ... not the same memory
    return lambda: setattr(b, "grad", good)


def _negative_lr(opt: Any, a: Any, b: Any) -> Callable[[], None]:
    opt.param_groups[1]["lr"] = -1.0
    return lambda: opt.param_groups[1].__setitem__("lr", 0.02)


def _loaded_state_of_wrong_shape(opt: Any, a: Any, b: Any) -> Callable[[], None]:
    good = opt.state_dict()
    bad = copy.deepcopy(good)
    key = next(k for k, v in bad["state"][1].items() if k not in SCALAR_STATES)
    bad["state"][1][key] = torch.zeros(5)
    opt.load_state_dict(bad)
    return lambda: opt.load_state_dict(good)


PROBLEMS = {"sparse_grad": _sparse, "grad_of_wrong_shape": _wrong_shape,
            "grad_sharing_memory_with_param": _shares_memory, "negative_lr": _negative_lr,
            "loaded_state_of_wrong_shape": _loaded_state_of_wrong_shape}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("name", _all_names())
def test_problem_in_second_group_writes_nothing(name, problem):
    """Group 1 is fine, group 2 has a problem: the step raises and writes no byte of either
    group (params, states, step counts), creates no state; fixed, the next step is exactly the
    step of a twin optimizer that never saw the failed one."""
    opt, a, b = _two_groups(name)
    twin, ta, tb = _two_groups(name)
    for o, x, y in ((opt, a, b), (twin, ta, tb)):
        _good_grads(x, y, 0)
        o.step()
        _good_grads(x, y, 1)
    undo = PROBLEMS[problem](opt, a, b)
    before = _snapshot(opt, [a, b])
    with pytest.raises((RuntimeError, ValueError, TypeError)):
        opt.step()
    _assert_bitwise_unchanged(opt, [a, b], before)
    undo()
    opt.step()
    twin.step()
    for p, q in ((a, ta), (b, tb)):
        assert torch.equal(p.detach(), q.detach())
        for key, value in twin.state[q].items():
            assert torch.equal(opt.state[p][key], value), key


def _refused_hyperparameters(name: str) -> List[Dict[str, Any]]:
    """The database's bad hyperparameter sets gdfast's constructor refuses, plus lr=-1."""
    out = [{"lr": -1.0}]
    for error_input in OPTIM_DB[name].optim_error_inputs_func("cpu", torch.float32):
        optim_input = error_input.optimizer_error_input
        if optim_input.params is None and optim_input.desc not in CONSTRUCTOR_ONLY:
            out.append(optim_input.kwargs)
    return out


@pytest.mark.parametrize("name", NAMES)
def test_refused_hyperparameter_edited_into_second_group_writes_nothing(name):
    opt, a, b = _two_groups(name)
    _good_grads(a, b, 0)
    opt.step()
    _good_grads(a, b, 1)
    for bad in _refused_hyperparameters(name):
        with pytest.raises(ValueError):
            getattr(gt, name)([nn.Parameter(torch.randn(2))], **copy.deepcopy(bad))
        saved = dict(opt.param_groups[1])
        opt.param_groups[1].update(copy.deepcopy(bad))
        before = _snapshot(opt, [a, b])
        with pytest.raises(ValueError, match=r"param_groups\[1\]"):
            opt.step()
        _assert_bitwise_unchanged(opt, [a, b], before)
        opt.param_groups[1].clear()
        opt.param_groups[1].update(saved)
    opt.step()  # usable again


@pytest.mark.parametrize("name", _all_names())
def test_bad_first_step_leaves_state_empty(name):
    opt, a, b = _two_groups(name)
    _good_grads(a, b, 0)
    before = [a.detach().clone(), b.detach().clone()]
    b.grad = b.grad.to_sparse()
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()
    assert not opt.state
    assert torch.equal(a.detach(), before[0]) and torch.equal(b.detach(), before[1])
    twin, ta, tb = _two_groups(name)
    _good_grads(ta, tb, 0)
    twin.step()
    _good_grads(a, b, 0)
    opt.step()
    assert torch.equal(a.detach(), ta.detach()) and torch.equal(b.detach(), tb.detach())
