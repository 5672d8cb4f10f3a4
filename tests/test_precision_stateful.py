"""The precision options of the stateful classes (issue 12): bfloat16/float16 params in
gdfast.torch.<Name> and gdfast.<Name>, ``state_dtype``, ``master_weights``,
``stochastic_rounding`` with ``seed``, their state_dict round trips and their bad input.

What the kernels do with narrow storage elementwise (rounding bit patterns, NaN, every ISA) is
tests/test_precision.py's; here: that the classes hand the kernels the right arrays, keys,
seeds and step counts, keep the right states in the right dtypes, and match torch.optim.

Distances between bfloat16/float16 results are counted in ulps of the narrow type: the
distance of two bit patterns in the order of the numbers they encode (ulps()).
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Dict, List, Sequence

import numpy as np
import pytest

import gdfast

import reference

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)

import precision_reference as pr  # noqa: E402  (needs ml_dtypes)

F16 = np.dtype(np.float16)
F32 = np.dtype(np.float32)

try:
    import torch
except ImportError:  # the NumPy half runs without it
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="torch is not installed")
if torch is not None:
    import gdfast.torch as gt

SHAPES = [(37,), (5, 7), (16,)]


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Any:
    """Tiny tensors: torch's threads would only compete with gdfast's on a loaded machine."""
    if torch is None:
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# -- helpers -----------------------------------------------------------------------------------
def bits16(x: Any) -> np.ndarray:
    """The 16-bit patterns of a bfloat16/float16 tensor or array, as int64."""
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().contiguous().view(torch.int16).numpy()
    else:
        x = np.ascontiguousarray(x).view(np.int16)
    return x.astype(np.int64) & 0xFFFF


def ordered(x: Any) -> np.ndarray:
    """A bfloat16/float16 tensor or array's bit patterns as integers in the order of the
    numbers: both types are sign-magnitude, so the magnitude bits signed by the sign bit
    (+0 and -0 coincide); consecutive numbers differ by 1 (an ulp)."""
    bits = bits16(x).reshape(-1)
    return np.where(bits & 0x8000, -(bits & 0x7FFF), bits & 0x7FFF)


def ulps(a: Any, b: Any) -> int:
    """Largest distance between elements of a and b in ulps of their (16-bit) type."""
    return int(np.max(np.abs(ordered(a) - ordered(b)), initial=0))


def as_float(x: Any) -> np.ndarray:
    if torch is not None and isinstance(x, torch.Tensor):
        return x.detach().float().reshape(-1).numpy()
    return np.asarray(x, np.float32).reshape(-1)


def assert_ulps(a: Any, b: Any, n: int, what: str) -> None:
    """Each element within n ulps of its narrow type, or within 2^-20 of b's largest magnitude:
    a state or param that is a difference of nearly equal terms (Adam's exp_avg, beta1*m +
    (1 - beta1)*g, near a sign change) is computed to a few float32 ulps of those terms
    (2^-24 each) by any operation order, and near 0 that can be thousands of ulps of the tiny
    result (measured: 0.0 against -2.0e-10 in exp_avg)."""
    x, y = as_float(a), as_float(b)
    far = np.abs(x.astype(np.float64) - y) > 2.0**-20 * float(np.max(np.abs(y), initial=0.0))
    distance = np.abs(ordered(a) - ordered(b))
    assert np.all(distance[far] <= n), f"{what}: {int(distance[far].max())} ulps"


def torch_dtype(dtype: np.dtype) -> Any:
    return {BF16: torch.bfloat16, F16: torch.float16, F32: torch.float32}[dtype]


def torch_params(dtype: Any, seed: int = 0, shapes: Sequence[tuple] = SHAPES) -> List[Any]:
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.Parameter(torch.randn(s, generator=g).to(dtype)) for s in shapes]


def torch_grads(params: Sequence[Any], step: int) -> List[Any]:
    g = torch.Generator().manual_seed(1000 + step)
    return [torch.randn(p.shape, generator=g).to(p.dtype) for p in params]


def numpy_params(dtype: np.dtype, seed: int = 0,
                 shapes: Sequence[tuple] = SHAPES) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in shapes]


def numpy_grads(params: Sequence[np.ndarray], step: int) -> List[np.ndarray]:
    rng = np.random.default_rng(1000 + step)
    return [rng.standard_normal(p.shape).astype(np.float32).astype(p.dtype) for p in params]


def same_bits(a: Any, b: Any) -> bool:
    if torch is not None and isinstance(a, torch.Tensor):
        return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
            a.detach().reshape(-1).view(torch.uint8), b.detach().reshape(-1).view(torch.uint8))
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def snapshot_torch(opt: Any) -> List[Any]:
    """Every param and state tensor of a torch optimizer, copied."""
    out = []
    for group in opt.param_groups:
        for p in group["params"]:
            out.append(p.detach().clone())
            out += [v.clone() for _, v in sorted(opt.state.get(p, {}).items())
                    if isinstance(v, torch.Tensor)]
    return out


def snapshot_numpy(opt: Any) -> List[np.ndarray]:
    out = [p.copy() for g in opt.param_groups for p in g["params"]]
    for i in sorted(opt.state):
        out += [np.array(v, copy=True) for _, v in sorted(opt.state[i].items())]
    return out


def all_same(before: Sequence[Any], after: Sequence[Any]) -> bool:
    return len(before) == len(after) and all(same_bits(a, b) for a, b in zip(before, after))


# -- (a) bfloat16/float16 params with no option: torch.optim's semantics ----------------------
@needs_torch
@pytest.mark.parametrize("name, kwargs", [("AdamW", {}), ("Adam", {"weight_decay": 0.1})])
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_adam_matches_torch_fused(name: str, kwargs: Dict[str, Any], dtype: str) -> None:
    """States in the param's dtype, float32 math, stores rounded to nearest: torch's fused CPU
    step does the same, so the two differ only where their float32 results (a few float32 ulps
    apart: gdfast writes Adam's last line as lr*sqrt(bc2)/bc1 * m / (sqrt(v) + eps*sqrt(bc2)),
    torch divides twice) straddle a rounding boundary of the narrow type: at most 1 ulp of it
    per element after one step. Over 10 steps a state that rounded the other way feeds back
    into later steps; allowed 3 ulps. Both beside assert_ulps's floor near 0. Measured: at
    most 1 ulp, on 0 to 11 elements per run (2035 elements, 3 arrays, 10 steps); one exp_avg
    element of Adam/bfloat16 near a sign change fell under the floor."""
    tdtype = getattr(torch, dtype)
    ours_params, theirs_params = (torch_params(tdtype, shapes=[(2000,), (5, 7)])
                                  for _ in range(2))
    ours = getattr(gt, name)(ours_params, lr=1e-2, **kwargs)
    theirs = getattr(torch.optim, name)(theirs_params, lr=1e-2, fused=True, **kwargs)
    for step in range(10):
        for a, b, g in zip(ours_params, theirs_params, torch_grads(ours_params, step)):
            a.grad, b.grad = g.clone(), g.clone()
        ours.step()
        theirs.step()
        bound = 1 if step == 0 else 3
        for a, b in zip(ours_params, theirs_params):
            assert_ulps(a, b, bound, f"step {step + 1}: param")
            for key in ("exp_avg", "exp_avg_sq"):
                mine, torchs = ours.state[a][key], theirs.state[b][key]
                assert mine.dtype == tdtype, key  # torch's: the param's dtype
                assert_ulps(mine, torchs, bound, f"step {step + 1}: {key}")
    assert ulps(ours_params[0], torch_params(tdtype, shapes=[(2000,)])[0]) > 0, "params moved"


def rounded(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return x.astype(dtype)


@pytest.mark.parametrize("front", ["numpy", pytest.param("torch", marks=needs_torch)])
@pytest.mark.parametrize("name, kwargs", [
    ("SGD", {"lr": 0.1, "momentum": 0.9, "weight_decay": 0.01}),
    ("SGD", {"lr": 0.1, "momentum": 0.9, "nesterov": True}),
    ("Lion", {"lr": 1e-2, "weight_decay": 0.1}),
])
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_sgd_lion_match_the_reference_rounded_per_step(front: str, name: str,
                                                       kwargs: Dict[str, Any],
                                                       dtype: np.dtype) -> None:
    """Each step against the float64 reference (tests/reference.py STEPS) started from
    gdfast's current param and states and rounded to the narrow type: gdfast's float32 result
    is within a few float32 ulps (2^-24 relative each) of the exact one, the narrow ulp is
    2^-8 (bfloat16) or 2^-11 (float16) relative, so the two roundings land on the same or
    adjacent numbers: at most 1 ulp, beside assert_ulps's floor near 0 (measured: 1 ulp on 0
    to 2 elements per run, the rest equal). (torch 2.13's fused CPU SGD is no reference here:
    it leaves most bfloat16 elements unchanged.)"""
    rule = gdfast._spec.RULES[name.lower()]
    hyper = dict(kwargs)
    if name == "Lion":
        hyper["beta1"], hyper["beta2"] = 0.9, 0.99
    params = numpy_params(dtype)
    if front == "torch":
        tensors = [torch.nn.Parameter(torch.from_numpy(p.astype(np.float32)).to(
            torch_dtype(dtype))) for p in params]
        opt = getattr(gt, name)(tensors, **kwargs)
        view: Callable[[Any], np.ndarray] = lambda t: t.detach().float().numpy()  # noqa: E731
    else:
        opt = getattr(gdfast, name)(params, **kwargs)
        view = lambda a: a.astype(np.float32)  # noqa: E731
    moved = 0
    for step in range(6):
        grads = numpy_grads(params, step)
        keys = tensors if front == "torch" else list(range(len(params)))
        current = [view(t) for t in (tensors if front == "torch" else params)]
        states = [{n: view(v).astype(np.float64) for n, v in opt.state.get(k, {}).items()
                   if n in rule.state_names} for k in keys]
        expected = [reference.STEPS[rule.name](c.astype(np.float64),
                                               g.astype(np.float32).astype(np.float64), st,
                                               **hyper)
                    for c, g, st in zip(current, grads, states)]
        if front == "torch":
            for t, g in zip(tensors, grads):
                t.grad = torch.from_numpy(g.astype(np.float32)).to(torch_dtype(dtype))
            opt.step()
            results = [t.detach() for t in tensors]
        else:
            opt.step(grads)
            results = params
        for k, (got, want, st) in enumerate(zip(results, expected, states)):
            assert_ulps(got, rounded(want, dtype), 1, f"step {step + 1}: param {k}")
            moved += ulps(got, rounded(current[k], dtype)) > 0
            for n, v in st.items():
                stored = opt.state[keys[k]][n]
                assert_ulps(stored, rounded(v, dtype), 1, f"step {step + 1}: {n} {k}")
    assert moved, "the params moved"


# -- (b) master weights -----------------------------------------------------------------------
MASTER_CASES = [("AdamW", {"lr": 1e-2}), ("SGD", {"lr": 0.1, "momentum": 0.9}),
                ("NAdam", {"lr": 1e-2}), ("Lion", {"lr": 1e-2, "weight_decay": 0.1}),
                ("Lamb", {"lr": 1e-2})]


@pytest.mark.parametrize("name, kwargs", MASTER_CASES)
@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_numpy_master_weights_follow_the_float32_trajectory(name: str, kwargs: Dict[str, Any],
                                                            dtype: np.dtype) -> None:
    """The master copy is the float32 param of a float32 optimizer given the same (widened)
    grads, bit for bit; states default to float32 and equal that optimizer's; the param is
    the master rounded to nearest (as ``master.astype(dtype)``)."""
    params = numpy_params(dtype)
    twins = [p.astype(np.float32) for p in params]
    ours = getattr(gdfast, name)(params, master_weights=True, **kwargs)
    twin = getattr(gdfast, name)(twins, **kwargs)
    for step in range(8):
        grads = numpy_grads(params, step)
        ours.step(grads)
        twin.step([g.astype(np.float32) for g in grads])
        for i, (p, t) in enumerate(zip(params, twins)):
            master = ours.state[i]["master_param"]
            assert same_bits(master, t), f"step {step + 1}: master {i}"
            assert same_bits(p, master.astype(dtype)), f"step {step + 1}: param {i}"
            for key, value in twin.state[i].items():
                if isinstance(value, np.ndarray):
                    assert same_bits(ours.state[i][key], value), f"step {step + 1}: {key}"
                else:
                    assert ours.state[i][key] == value, key


@needs_torch
@pytest.mark.parametrize("name, kwargs", MASTER_CASES)
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_torch_master_weights_follow_the_float32_trajectory(name: str, kwargs: Dict[str, Any],
                                                            dtype: str) -> None:
    tdtype = getattr(torch, dtype)
    params = torch_params(tdtype)
    twins = [torch.nn.Parameter(p.detach().float()) for p in params]
    ours = getattr(gt, name)(params, master_weights=True, **kwargs)
    twin = getattr(gt, name)(twins, **kwargs)
    for step in range(8):
        for p, t, g in zip(params, twins, torch_grads(params, step)):
            p.grad, t.grad = g, g.float()
        ours.step()
        twin.step()
        for i, (p, t) in enumerate(zip(params, twins)):
            master = ours.state[p]["master_param"]
            assert master.dtype == torch.float32
            assert same_bits(master, t.detach()), f"step {step + 1}: master {i}"
            assert same_bits(p.detach(), master.to(tdtype)), f"step {step + 1}: param {i}"
            for key, value in twin.state[t].items():
                assert same_bits(ours.state[p][key], value), f"step {step + 1}: {key}"


@needs_torch
def test_master_weights_keep_updates_that_round_to_nothing() -> None:
    """Why master weights: an update below half an ulp of the param is lost by the param alone
    (round to nearest, torch's semantics) but kept by the master, which then moves the param
    once the updates add up. 1.0 in bfloat16 has neighbours 1 - 2^-8 and 1 + 2^-7; 100 SGD
    steps of -1e-4 move the exact value by -0.01 (2.56 ulps below 1.0)."""
    plain = torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))
    kept = torch.nn.Parameter(torch.ones(8, dtype=torch.bfloat16))
    opts = [gt.SGD([plain], lr=1e-4), gt.SGD([kept], lr=1e-4, master_weights=True)]
    for _ in range(100):
        plain.grad = torch.ones(8, dtype=torch.bfloat16)
        kept.grad = torch.ones(8, dtype=torch.bfloat16)
        for opt in opts:
            opt.step()
    assert torch.all(plain == 1.0)  # every update rounded back to 1.0
    master = opts[1].state[kept]["master_param"]
    assert torch.allclose(master, torch.full((8,), 0.99, dtype=torch.float32), atol=1e-5)
    assert torch.all(kept == master.to(torch.bfloat16)) and torch.all(kept < 1.0)


# -- (c) stochastic rounding ------------------------------------------------------------------
def test_stochastic_rounding_keys_are_seed_step_global_index_and_role() -> None:
    """Bit for bit as specified, through the class: each param rounds with the key of (the
    group's seed, the step count, its index among all the optimizer's params, role 0), each
    bfloat16 state with role 1 + its index in the rule's states. The float32 values before
    rounding come from a float32 twin started each step from the narrow values widened
    (loads widen exactly, and the update uses the float32 states before they are narrowed)."""
    seed = 0x0123456789ABCDEF
    params = numpy_params(BF16)
    twins = [p.astype(np.float32) for p in params]
    ours = gdfast.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=1e-2,
                       stochastic_rounding=True, seed=seed, state_dtype="bfloat16")
    twin = gdfast.Adam(twins, lr=1e-2)
    roles = {name: 1 + k for k, name in enumerate(gdfast._spec.RULES["adam"].state_names)}
    assert roles == {"exp_avg": 1, "exp_avg_sq": 2, "max_exp_avg_sq": 3}
    for step in range(1, 5):
        for i, (p, t) in enumerate(zip(params, twins)):
            t[...] = p.astype(np.float32)
            for name in ("exp_avg", "exp_avg_sq"):
                if i in ours.state:
                    twin.state[i][name][...] = ours.state[i][name].astype(np.float32)
        grads = numpy_grads(params, step)
        ours.step(grads)
        twin.step([g.astype(np.float32) for g in grads])
        for i, (p, t) in enumerate(zip(params, twins)):
            expected = pr.round_stochastic(t, BF16, seed=seed, step=step, param_index=i, role=0)
            assert same_bits(p, expected), f"{step}: {i}"
            for name, role in roles.items():
                if name in twin.state[i]:
                    expected = pr.round_stochastic(twin.state[i][name], BF16, seed=seed, step=step,
                                                  param_index=i, role=role)
                    assert same_bits(ours.state[i][name], expected), f"{step}: {name} {i}"


def test_stochastic_rounding_is_unbiased_where_round_to_nearest_loses_updates() -> None:
    """SGD updates of -1e-3 on 1.0 in bfloat16 (neighbour below: 1 - 2^-8): round to nearest
    keeps 1.0; stochastic rounding moves an element down with probability 1e-3 / 2^-8 = 0.256
    (minus the 2^-16 ulp granularity of the draw). Over 8192 elements, 5 standard deviations:
    0.256 +- 0.024."""
    p = np.ones(8192, BF16)
    q = np.ones(8192, BF16)
    gdfast.SGD([p], lr=1e-3).step([np.ones(8192, BF16)])
    gdfast.SGD([q], lr=1e-3, stochastic_rounding=True, seed=7).step([np.ones(8192, BF16)])
    assert np.all(p == 1.0)
    moved = q != 1.0
    assert np.all(q[moved] == np.float32(1 - 2**-8))
    assert abs(moved.mean() - 0.256) < 0.024, moved.mean()


@needs_torch
def test_stochastic_rounding_is_reproducible_for_a_seed() -> None:
    """torch.manual_seed before construction reproduces the drawn seed, and so the run; another
    seed gives another run (some of its 1056 elements' roundings differ)."""
    def run(manual_seed: int) -> List[Any]:
        torch.manual_seed(manual_seed)
        params = torch_params(torch.bfloat16, shapes=[(1000,), (7, 8)])
        opt = gt.AdamW(params, lr=1e-2, stochastic_rounding=True)
        assert isinstance(opt.param_groups[0]["seed"], int)
        for step in range(4):
            for p, g in zip(params, torch_grads(params, step)):
                p.grad = g
            opt.step()
        return snapshot_torch(opt)

    first, again, other = run(3), run(3), run(4)
    assert all_same(first, again)
    assert not all_same(first, other)


@needs_torch
def test_stochastic_rounding_does_not_depend_on_groups_or_threads() -> None:
    """param_index is the param's position among all the optimizer's params, so any split into
    groups gives the same run; the kernels' work split gives the same run for any thread count
    (2**18 + 1000 elements: enough for gdfast to wake a second thread)."""
    shapes = [(1000,), (2**18,), (3, 5)]

    def run(split: Callable[[List[Any]], Any], threads: int) -> List[Any]:
        params = torch_params(torch.bfloat16, shapes=shapes)
        opt = gt.AdamW(split(params), lr=1e-2, stochastic_rounding=True, seed=12345,
                       state_dtype=torch.bfloat16)
        previous = gdfast.get_num_threads()
        gdfast.set_num_threads(threads)
        try:
            for step in range(3):
                for p, g in zip(params, torch_grads(params, step)):
                    p.grad = g
                opt.step()
        finally:
            gdfast.set_num_threads(previous)
        return snapshot_torch(opt)

    one_group = run(lambda ps: ps, 1)
    assert all_same(one_group, run(lambda ps: [{"params": ps[:1]}, {"params": ps[1:]}], 1))
    assert all_same(one_group, run(lambda ps: [{"params": ps[:2]}, {"params": ps[2:]}], 2))
    assert all_same(one_group, run(lambda ps: ps, 2))


@needs_torch
@pytest.mark.parametrize("name, kwargs", [("SGD", {"momentum": 0.9}), ("SGD", {}), ("Lion", {})])
def test_uncounted_rules_round_alike_however_grouped(name: str, kwargs: Dict[str, Any]) -> None:
    """SGD and Lion key their rounding by the optimizer's one rounding_step (not per group, not
    per batch): a group holding bfloat16 and float16 params (two kernel batches), a param with
    no grad on the first step (SGD's momentum then starts a step later: another batch), and any
    split into groups round the same way."""
    dtypes = [torch.bfloat16, torch.float16, torch.bfloat16]

    def run(split: Callable[[List[Any]], Any]) -> List[Any]:
        params = [torch.nn.Parameter(p.to(d))
                  for p, d in zip(torch_params(torch.float32, shapes=[(300,)] * 3), dtypes)]
        opt = getattr(gt, name)(split(params), lr=1e-3, stochastic_rounding=True, seed=5,
                                **kwargs)
        for step in range(4):
            for k, (p, g) in enumerate(zip(params, torch_grads(params, step))):
                p.grad = None if (step == 0 and k == 2) else g
            opt.step()
        assert {g["rounding_step"] for g in opt.param_groups} == {4}
        return snapshot_torch(opt)

    together = run(lambda ps: ps)
    assert all_same(together, run(lambda ps: [{"params": ps[:1]}, {"params": ps[1:]}]))
    assert all_same(together, run(lambda ps: [{"params": [p]} for p in ps]))


@needs_torch
def test_a_bad_rounding_step_is_refused_before_anything_is_written() -> None:
    p = torch.nn.Parameter(torch.ones(4, dtype=torch.bfloat16))
    opt = gt.SGD([p], lr=0.1, stochastic_rounding=True, seed=1)
    opt.param_groups[0]["rounding_step"] = "bad"
    p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match=r"^param_groups\[0\]: rounding_step: expected an int"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(4, dtype=torch.bfloat16))


@needs_torch
def test_numpy_optimizer_loads_a_torch_state_dict_with_state_dtype() -> None:
    source = gt.Adam([torch.nn.Parameter(torch.ones(3))], state_dtype=torch.bfloat16)
    opt = gdfast.Adam([np.ones(3, np.float32)])
    opt.load_state_dict(source.state_dict())
    opt.step([np.ones(3, np.float32)])
    assert opt.state[0]["exp_avg"].dtype == BF16


@needs_torch
def test_float16_states_of_a_wider_param_take_its_dtype_on_load() -> None:
    """float16 states only go with float16 params (their range): a checkpoint of a float16
    model loaded after the model became bfloat16 casts them, as torch.optim does."""
    src = torch.nn.Parameter(torch.ones(3, dtype=torch.float16))
    opt = gt.Adam([src])
    src.grad = torch.ones_like(src)
    opt.step()
    dst = torch.nn.Parameter(torch.ones(3, dtype=torch.bfloat16))
    target = gt.Adam([dst])
    target.load_state_dict(opt.state_dict())
    assert target.state[dst]["exp_avg"].dtype == torch.bfloat16


@needs_torch
def test_stochastic_rounding_resumes_from_a_state_dict() -> None:
    """The seed is a group entry: state_dict saves it, load_state_dict restores it (over the
    seed the new optimizer drew), so a resumed run continues bit for bit."""
    torch.manual_seed(0)
    params = torch_params(torch.bfloat16)
    opt = gt.Lion(params, lr=1e-2, stochastic_rounding=True)
    grads = [torch_grads(params, s) for s in range(6)]
    for step in range(3):
        for p, g in zip(params, grads[step]):
            p.grad = g
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    torch.manual_seed(1)
    resumed = gt.Lion(resumed_params, lr=1e-2, stochastic_rounding=True)
    assert resumed.param_groups[0]["seed"] != opt.param_groups[0]["seed"]
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["seed"] == opt.param_groups[0]["seed"]
    for step in range(3, 6):
        for p, q, g in zip(params, resumed_params, grads[step]):
            p.grad, q.grad = g, g.clone()
        opt.step()
        resumed.step()
    assert all_same(snapshot_torch(opt), snapshot_torch(resumed))


# -- (d) state_dict --------------------------------------------------------------------------
@needs_torch
def test_torch_load_state_dict_keeps_float32_master_and_states() -> None:
    """torch.optim's load_state_dict would cast every floating state to the param's dtype
    (bfloat16), losing the master copy's precision: gdfast's keep theirs, and a resumed run
    continues bit for bit (the round trip is exact)."""
    params = torch_params(torch.bfloat16)
    opt = gt.AdamW(params, lr=1e-2, master_weights=True)
    for step in range(3):
        for p, g in zip(params, torch_grads(params, step)):
            p.grad = g
        opt.step()
    saved = copy.deepcopy(opt.state_dict())
    resumed_params = [torch.nn.Parameter(p.detach().clone()) for p in params]
    resumed = gt.AdamW(resumed_params, lr=1e-2)  # the options come with the state_dict
    resumed.load_state_dict(saved)
    assert resumed.param_groups[0]["master_weights"] is True
    for p, q in zip(params, resumed_params):
        for key in ("master_param", "exp_avg", "exp_avg_sq"):
            assert resumed.state[q][key].dtype == torch.float32, key
            assert same_bits(resumed.state[q][key], opt.state[p][key]), key
    for step in range(3, 6):
        for p, q, g in zip(params, resumed_params, torch_grads(params, step)):
            p.grad, q.grad = g, g.clone()
        opt.step()
        resumed.step()
    assert all_same(snapshot_torch(opt), snapshot_torch(resumed))


@needs_torch
def test_torch_loads_a_torch_optim_state_dict() -> None:
    """A torch.optim.AdamW state_dict (bfloat16 states, no precision options) loads: its states
    keep their dtype, the group keeps this optimizer's precision options (master_weights here:
    the master copy is made from the param at the next step), and the run continues."""
    torch.manual_seed(0)
    theirs_params = torch_params(torch.bfloat16)
    theirs = torch.optim.AdamW(theirs_params, lr=1e-2, fused=True)
    for step in range(2):
        for p, g in zip(theirs_params, torch_grads(theirs_params, step)):
            p.grad = g
        theirs.step()
    params = [torch.nn.Parameter(p.detach().clone()) for p in theirs_params]
    ours = gt.AdamW(params, lr=1e-2, master_weights=True)
    ours.load_state_dict(theirs.state_dict())
    assert ours.param_groups[0]["master_weights"] is True
    for p, q in zip(params, theirs_params):
        assert ours.state[p]["exp_avg"].dtype == torch.bfloat16
        assert same_bits(ours.state[p]["exp_avg_sq"], theirs.state[q]["exp_avg_sq"])
    for p, g in zip(params, torch_grads(params, 2)):
        p.grad = g
    before = [p.detach().float() for p in params]
    ours.step()
    for p, b in zip(params, before):
        master = ours.state[p]["master_param"]
        assert master.dtype == torch.float32 and not torch.equal(master, b)
        assert same_bits(p.detach(), master.to(torch.bfloat16))
    # an optimizer made without options keeps none
    plain = gt.AdamW([torch.nn.Parameter(p.detach().clone()) for p in theirs_params], lr=1e-2)
    plain.load_state_dict(theirs.state_dict())
    assert plain.param_groups[0]["master_weights"] is False


@pytest.mark.parametrize("dtype", [BF16, F16], ids=["bfloat16", "float16"])
def test_numpy_state_dict_round_trip(dtype: np.dtype) -> None:
    """NumPy: float32 master and states, the options and the seed survive a round trip; a
    resumed run continues bit for bit; bfloat16 states stay bfloat16."""
    for options in ({"master_weights": True},
                    {"stochastic_rounding": True, "state_dtype": "bfloat16"}):
        params = numpy_params(dtype)
        opt = gdfast.AdamW(params, lr=1e-2, **options)
        for step in range(3):
            opt.step(numpy_grads(params, step))
        saved = copy.deepcopy(opt.state_dict())
        resumed_params = [p.copy() for p in params]
        resumed = gdfast.AdamW(resumed_params, lr=1e-2)
        resumed.load_state_dict(saved)
        for i, st in opt.state.items():
            for key, value in st.items():
                if isinstance(value, np.ndarray):
                    assert same_bits(resumed.state[i][key], value), (options, key)
        assert resumed.param_groups[0]["seed"] == opt.param_groups[0]["seed"]
        for step in range(3, 6):
            grads = numpy_grads(params, step)
            opt.step(grads)
            resumed.step([g.copy() for g in grads])
        assert all_same(snapshot_numpy(opt), snapshot_numpy(resumed)), options


@needs_torch
def test_numpy_loads_a_torch_state_dict_of_bfloat16_states() -> None:
    """torch.optim's bfloat16 states arrive as ml_dtypes bfloat16 arrays, exactly."""
    params = torch_params(torch.bfloat16)
    theirs = torch.optim.AdamW(params, lr=1e-2)
    for p, g in zip(params, torch_grads(params, 0)):
        p.grad = g
    theirs.step()
    arrays = [p.detach().float().numpy().astype(BF16) for p in params]
    ours = gdfast.AdamW(arrays, lr=1e-2)
    ours.load_state_dict(theirs.state_dict())
    for i, p in enumerate(params):
        assert ours.state[i]["exp_avg"].dtype == BF16
        assert (bits16(ours.state[i]["exp_avg"]) == bits16(theirs.state[p]["exp_avg"])).all()


# -- (e) bad input ----------------------------------------------------------------------------
BAD_OPTIONS = [
    ({"state_dtype": "float64"}, TypeError, r"state_dtype: expected None or float32, bfloat16 "
                                            r"or float16 .*, got float64"),
    ({"state_dtype": "int8"}, TypeError, r"state_dtype: expected .*, got int8"),
    ({"state_dtype": 3.5}, TypeError, r"state_dtype: expected .*, got 3\.5"),
    ({"seed": -1}, ValueError, r"seed: expected None or an int in \[0, 2\*\*64\), got -1"),
    ({"seed": 2**64}, ValueError, r"seed: expected None or an int in \[0, 2\*\*64\), got 1844"),
    ({"seed": 1.5}, TypeError, r"seed: expected None or an int in \[0, 2\*\*64\), got 1\.5"),
    ({"seed": True}, TypeError, r"seed: expected None or an int .*, got True"),
    ({"master_weights": "yes"}, TypeError, r"master_weights: expected True or False, got 'yes'"),
    ({"stochastic_rounding": 1}, TypeError, r"stochastic_rounding: expected True or False"),
    ({"master_weights": True, "stochastic_rounding": True}, ValueError,
     r"master_weights=True and stochastic_rounding=True: choose one"),
]


@pytest.mark.parametrize("options, exc, match", BAD_OPTIONS)
def test_numpy_bad_options_raise_at_construction(options: Dict[str, Any], exc: Any,
                                                 match: str) -> None:
    params = numpy_params(BF16)
    before = [p.copy() for p in params]
    with pytest.raises(exc, match=r"^param_groups\[0\]: " + match):
        gdfast.AdamW(params, **options)
    assert all_same(before, params)


@needs_torch
@pytest.mark.parametrize("options, exc, match", BAD_OPTIONS)
def test_torch_bad_options_raise_at_construction(options: Dict[str, Any], exc: Any,
                                                 match: str) -> None:
    options = dict(options)
    if isinstance(options.get("state_dtype"), str):  # (torch takes torch dtypes)
        options["state_dtype"] = getattr(torch, options["state_dtype"])
        match = match.replace("float32, bfloat16 or float16 .*", "torch.float32.*")
        match = match.replace("got float64", "got torch.float64").replace("got int8",
                                                                         "got torch.int8")
    with pytest.raises(exc, match="^" + match):
        gt.AdamW(torch_params(torch.bfloat16), **options)


@pytest.mark.parametrize("front", ["numpy", pytest.param("torch", marks=needs_torch)])
@pytest.mark.parametrize("dtype, options, match", [
    ("float32", {"master_weights": True},
     r"master_weights=True is for bfloat16 and float16 params, got a float32 param"),
    ("float64", {"master_weights": True}, r"master_weights=True .* got a float64 param"),
    ("float64", {"state_dtype": "float32"},
     r"state_dtype=float32: a float64 param keeps float64 states"),
    ("bfloat16", {"state_dtype": "float16"}, r"state_dtype=float16 is for float16 params"),
])
def test_options_that_do_not_fit_a_param_raise_naming_it(front: str, dtype: str,
                                                         options: Dict[str, Any],
                                                         match: str) -> None:
    """At construction (the params are known then), naming the param."""
    good = "bfloat16" if dtype != "bfloat16" else "float16"
    if front == "torch":
        options = {k: getattr(torch, v) if k == "state_dtype" else v for k, v in options.items()}
        params = [torch.nn.Parameter(torch.ones(3, dtype=getattr(torch, d)))
                  for d in (good, dtype)]
        if "state_dtype" in options and good == "bfloat16":
            params[0] = torch.nn.Parameter(torch.ones(3))  # (fits any state_dtype here)
        make = getattr(gt, "AdamW")
    else:
        params = [np.ones(3, {"bfloat16": BF16}.get(d, d)) for d in (good, dtype)]
        if "state_dtype" in options and good == "bfloat16":
            params[0] = np.ones(3, np.float32)
        make = gdfast.AdamW
    with pytest.raises(ValueError, match=r"^param_groups\[0\]\['params'\]\[1\]: " + match):
        make(params, **options)


def two_groups_numpy() -> Any:
    params = numpy_params(BF16)
    opt = gdfast.AdamW([{"params": params[:1]}, {"params": params[1:]}], lr=1e-2,
                       master_weights=True)
    opt.step(numpy_grads(params, 0))
    return opt, params


@pytest.mark.parametrize("mistake, exc, match", [
    (lambda opt, ps: opt.param_groups[1].update(stochastic_rounding=True), ValueError,
     r"^param_groups\[1\]: master_weights=True and stochastic_rounding=True"),
    (lambda opt, ps: opt.param_groups[1].update(seed=2**70), ValueError,
     r"^param_groups\[1\]: seed: expected"),
    (lambda opt, ps: opt.param_groups[1].update(state_dtype=np.int32), TypeError,
     r"^param_groups\[1\]: state_dtype: expected"),
    (lambda opt, ps: opt.param_groups[1].update(master_weights=False), ValueError,
     r"^param_groups\[1\]\['params'\]\[0\]: state\['master_param'\]: a master copy is kept, "
     r"but master_weights=False"),
    (lambda opt, ps: opt.state[2].update(master_param=opt.state[2]["master_param"].astype(BF16)),
     TypeError, r"^param_groups\[1\]: .*master"),
], ids=["master-and-stochastic", "seed", "state-dtype", "master-switched-off",
        "master-of-bfloat16"])
def test_numpy_step_mistake_in_the_second_group_changes_nothing(mistake: Any, exc: Any,
                                                                match: str) -> None:
    opt, params = two_groups_numpy()
    mistake(opt, params)
    before = snapshot_numpy(opt)
    with pytest.raises(exc, match=match):
        opt.step(numpy_grads(params, 1))
    assert all_same(before, snapshot_numpy(opt))


@needs_torch
def test_torch_step_mistakes_change_nothing() -> None:
    """A param replaced by a float32 one under master weights, a grad of another dtype than its
    param: raised naming the param, nothing written in any group."""
    params = torch_params(torch.bfloat16)
    opt = gt.AdamW([{"params": params[:1]}, {"params": params[1:]}], lr=1e-2,
                   master_weights=True)
    for p, g in zip(params, torch_grads(params, 0)):
        p.grad = g
    opt.step()
    before = snapshot_torch(opt)
    params[2].grad.data = params[2].grad.data.float()  # (torch checks only p.grad = ...)
    with pytest.raises(TypeError, match=r"^param_groups\[1\]\['params'\]\[1\]\.grad: expected "
                                        r"torch\.bfloat16 like its param, got torch\.float32"):
        opt.step()
    assert all_same(before, snapshot_torch(opt))
    params[2].grad.data = params[2].grad.data.to(torch.bfloat16)
    params[1].data = params[1].data.float()
    params[1].grad = torch.ones_like(params[1])
    before = snapshot_torch(opt)
    with pytest.raises(ValueError, match=r"^param_groups\[1\]\['params'\]\[0\]: "
                                         r"master_weights=True is for bfloat16"):
        opt.step()
    assert all_same(before, snapshot_torch(opt))


def test_numpy_load_of_a_master_for_a_float32_param_is_refused() -> None:
    params = numpy_params(BF16)
    opt = gdfast.AdamW(params, master_weights=True)
    opt.step(numpy_grads(params, 0))
    saved = opt.state_dict()
    target = gdfast.AdamW([p.astype(np.float32) for p in params])
    before = snapshot_numpy(target)
    with pytest.raises(ValueError, match=r"^state_dict\['state'\]\[0\]\['master_param'\]: a "
                                         r"master copy is for a bfloat16 or float16 param"):
        target.load_state_dict(saved)
    assert all_same(before, snapshot_numpy(target)) and target.state == {}


@pytest.mark.parametrize("name", ["Adam", "SGD", "Lion"])
def test_stochastic_rounding_draws_afresh_each_step(name: str) -> None:
    """Unbiased over time, element by element, not only over the elements: with updates of a
    quarter ulp (1e-3 on 1 - 2^-8 ... 1.0, ulp 2^-8), an element moves with probability
    ~0.256 per step, so after 20 steps all but 0.744^20 = 0.3% have moved if each step draws
    afresh; if the draws repeat, the same ~74% never move (measured so before SGD and Lion
    were keyed by the group's rounding_step). Allowed: 2%."""
    p = np.ones(8192, BF16)
    opt = getattr(gdfast, name)([p], lr=1e-3, stochastic_rounding=True, seed=7)
    never = np.ones(p.shape, bool)
    for _ in range(20):
        before = p.copy()
        opt.step([np.ones(p.shape, BF16)])
        never &= p == before
    assert never.mean() < 0.02, never.mean()


@pytest.mark.parametrize("front", ["numpy", "torch"])
def test_rounding_step_counts_steps_and_resumes(front: str) -> None:
    """SGD keeps no step count: its stochastic rounding is keyed by the group's rounding_step,
    which state_dict saves, so a resumed run rounds as the uninterrupted one did."""
    if front == "torch":
        torch = pytest.importorskip("torch")
        make = lambda: [torch.ones(300, dtype=torch.bfloat16)]  # noqa: E731
        cls = gdfast.torch.SGD

        def step(opt: Any, params: List[Any], k: int) -> None:
            for p in params:
                p.grad = torch.full_like(p, 1e-3 * (k + 1))
            opt.step()
    else:
        make = lambda: [np.ones(300, BF16)]  # noqa: E731
        cls = gdfast.SGD

        def step(opt: Any, params: List[Any], k: int) -> None:
            opt.step([np.full(p.shape, 1e-3 * (k + 1), BF16) for p in params])
    whole, first = make(), make()
    a = cls(whole, lr=1.0, momentum=0.9, stochastic_rounding=True, seed=3)
    b = cls(first, lr=1.0, momentum=0.9, stochastic_rounding=True, seed=3)
    for k in range(3):
        step(a, whole, k)
        step(b, first, k)
    assert a.param_groups[0]["rounding_step"] == 3
    resumed_params = [x.clone() if front == "torch" else x.copy() for x in first]
    resumed = cls(resumed_params, lr=1.0, momentum=0.9, stochastic_rounding=True, seed=99)
    resumed.load_state_dict(copy.deepcopy(b.state_dict()))
    for k in range(3, 6):
        step(a, whole, k)
        step(resumed, resumed_params, k)
    assert all(same_bits(x, y) for x, y in zip(whole, resumed_params))
