"""Multi-step trajectories of gdfast.ops against the float64 reference rules, for every case of
cases.py (every rule of the registry).

Every variant runs 100 steps on every small size (all SIMD tails), for float32 and float64,
on every ISA level this CPU supports, and is compared after several steps with the tolerance
stated in cases.py. The large size (1e6, split across threads) runs fewer variants and steps
(reason in cases.LARGE_STEPS). The gradients are a fixed sequence that does not depend on the
parameters, so that the only differences between gdfast and the reference are rounding (L2
weight decay still feeds the parameters back into the gradient). Scalar states (NAdam's
mu_product, ASGD's eta and mu) are computed in double on both sides from the same formula and
must agree exactly.

The rules are elementwise, so the reference (and the documented operation order below) runs
once per variant and dtype on all small sizes' inputs laid end to end, and each size's test
compares its slice (at the large size: a sample of elements, see large_sample). A per-tensor
rule's (LAMB's) runs on each size alone, and at the large size on the whole array. Each test
runs gdfast on every ISA level: the first level's trajectory is compared with the reference,
every other level's must equal it bitwise (gdfast's promise, which then carries the
tolerance over).

Further:
* Bitwise equality with ``reference.SAME_ORDER``: gdfast's documented operation order
  repeated in NumPy in the array's own dtype (checks "no FMA contraction, this order").
  This is also how Lion's and Rprop's signs are checked exactly.
* Lion against the float64 reference: mismatches are allowed only at elements where the
  reference's sign argument was within rounding of zero at some step, are bounded there by
  2*lr per such step, and must be rare; Rprop's decisions must never be ambiguous.
* The list (multi-tensor) form gives bitwise the results of one call per tensor.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pytest

import gdfast

import cases
import reference
from cases import CASES, Case, ReferenceRun, Variant, check_close

ISAS: List[str] = gdfast.isa_info()["supported"]
DTYPES = [pytest.param(np.float32, id="float32"), pytest.param(np.float64, id="float64")]

# -- parametrization -----------------------------------------------------------------------
CASE_VARIANTS = [pytest.param(case, variant, id=f"{case.name}-{variant.name}")
                 for case in CASES for variant in case.variants]
LARGE_CASE_VARIANTS = [pytest.param(case, case.variant(name), id=f"{case.name}-{name}")
                       for case in CASES for name in case.large_variants]
SIZES = [pytest.param(n, id=f"n={n}") for n in cases.SMALL_SIZES]
# Where each small size's elements sit in the concatenation of all of them.
OFFSETS = dict(zip(cases.SMALL_SIZES, np.cumsum((0,) + cases.SMALL_SIZES[:-1]).tolist()))
SMALL_TOTAL = sum(cases.SMALL_SIZES)


def unit_roundoff(dtype: Any) -> float:
    return float(np.finfo(dtype).eps)


# -- one step of each implementation ---------------------------------------------------------
Scalars = Dict[str, float]


def gdfast_step(case: Case, p: Any, g: Any, states: Mapping[str, Any], scalars: Scalars,
                t: int, hyper: Mapping[str, Any]) -> None:
    """One gdfast.ops call; p, g and each state are arrays or lists of arrays. ``scalars``
    holds the scalar states (none before the first step: the op's defaults), updated."""
    result = getattr(gdfast.ops, case.op)(p, g, **case.inputs_at(g, t), **states, step=t,
                                          **hyper, **scalars)
    if result is not None:
        scalars.update(result)


def same_order_step(case: Case, p: np.ndarray, g: np.ndarray, states: Mapping[str, Any],
                    scalars: Scalars, t: int, hyper: Mapping[str, Any]) -> None:
    result = reference.SAME_ORDER[case.name](p, g, dict(states), step=t, **hyper, **scalars,
                                             **case.inputs_at(g, t))
    if result is not None:
        scalars.update(result)


def fresh_states(case: Case, hyper: Mapping[str, Any], like: np.ndarray) -> Dict[str, Any]:
    states = {}
    for name in case.state_names(hyper):
        if name in case.written_first:  # the first step must overwrite whatever it holds
            states[name] = np.full_like(like, np.nan)
        else:
            states[name] = np.full_like(like, case.start(name, hyper))
    return states


# -- inputs --------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=None)
def _param(size: int, dtype_name: str, seed: int = 0) -> np.ndarray:
    out = cases.initial_param(size, dtype_name, seed)
    out.flags.writeable = False
    return out


def initial(size: int, dtype: Any, seed: int = 0) -> np.ndarray:
    return _param(size, np.dtype(dtype).name, seed).copy()


@functools.lru_cache(maxsize=None)
def _grad(size: int, dtype_name: str, t: int, seed: int = 0) -> np.ndarray:
    """One gradient (cached: the list-form tests reuse them across variants)."""
    out = cases.gradient(size, dtype_name, t, seed)
    out.flags.writeable = False
    return out


def gradients(size: int, dtype_name: str, steps: int) -> np.ndarray:
    """All gradients of a trajectory, (steps, size), read-only (the large size's, ~80 MB in
    float64, only for the last dtype asked)."""
    if size > 1 << 16:
        return _gradients_large(size, dtype_name, steps)
    return _gradients_small(size, dtype_name, steps)


def _gradients(size: int, dtype_name: str, steps: int) -> np.ndarray:
    out = np.empty((steps, size), dtype=dtype_name)
    for t in range(1, steps + 1):
        out[t - 1] = cases.gradient(size, dtype_name, t)
    out.flags.writeable = False
    return out


_gradients_small = functools.lru_cache(maxsize=None)(_gradients)
_gradients_large = functools.lru_cache(maxsize=1)(_gradients)


@functools.lru_cache(maxsize=None)
def concatenated(dtype_name: str, steps: int) -> Tuple[np.ndarray, np.ndarray]:
    """Initial params and gradients of all small sizes laid end to end."""
    p0 = np.concatenate([_param(n, dtype_name) for n in cases.SMALL_SIZES])
    grads = np.concatenate([gradients(n, dtype_name, steps) for n in cases.SMALL_SIZES], axis=1)
    p0.flags.writeable = grads.flags.writeable = False
    return p0, grads


def checkpoints(steps: int, size: int) -> Tuple[int, ...]:
    if size > 1 << 16:  # snapshots of the large size are big: the first and the last step
        return (1, steps)
    return tuple(sorted({t for t in cases.CHECKPOINTS if t < steps} | {steps}))


# -- trajectories ---------------------------------------------------------------------------
Snapshot = Dict[str, Any]


def reference_snapshots(case: Case, hyper: Mapping[str, Any], p0: np.ndarray,
                        grads: np.ndarray, dtype: Any, marks: Sequence[int]) -> Dict[int, Snapshot]:
    """The float64 reference from the (dtype-rounded) inputs: at each checkpoint the
    parameter, the states, their tolerance bounds for that dtype and the scalar states."""
    run = ReferenceRun(case, hyper, p0, unit_roundoff(dtype))
    out: Dict[int, Snapshot] = {}
    for t in range(1, len(grads) + 1):
        run.step(grads[t - 1], case.inputs_at(grads[t - 1], t))
        if t in marks:
            out[t] = {
                "param": run.p.copy(),
                "param_bound": run.param_bound(),
                "ambiguous": run.ambiguous.copy(),
                "states": {n: run.state[n].copy() for n in run.state_env},
                "state_bounds": {n: run.state_bound(n) for n in run.state_env},
                "scalars": run.scalars,
            }
    return out


def laid_end_to_end(parts: Sequence[Dict[int, Snapshot]]) -> Dict[int, Snapshot]:
    """Each small size's snapshots as if of their concatenation (a per-tensor case's, whose
    sizes are stepped each alone); the scalar states are the first size's (none such case has
    any)."""
    def join(values: Sequence[Any]) -> Any:
        if isinstance(values[0], dict):
            return {k: join([v[k] for v in values]) for k in values[0]}
        return np.concatenate(values)

    out: Dict[int, Snapshot] = {}
    for t in parts[0]:
        out[t] = {k: parts[0][t][k] if k == "scalars" else join([p[t][k] for p in parts])
                  for k in parts[0][t]}
    return out


@functools.lru_cache(maxsize=2)
def small_reference(case_name: str, variant_name: str, dtype_name: str) -> Dict[int, Snapshot]:
    """The reference over all small sizes at once (cached across sizes); a per-tensor case's
    over each size alone, laid end to end."""
    case = cases.CASES_BY_NAME[case_name]
    hyper = case.hyper(case.variant(variant_name))
    marks = checkpoints(cases.STEPS, SMALL_TOTAL)
    if case.per_tensor:
        return laid_end_to_end([
            reference_snapshots(case, hyper, _param(n, dtype_name),
                                gradients(n, dtype_name, cases.STEPS), dtype_name, marks)
            for n in cases.SMALL_SIZES])
    p0, grads = concatenated(dtype_name, cases.STEPS)
    return reference_snapshots(case, hyper, p0, grads, dtype_name, marks)


@functools.lru_cache(maxsize=1)
def large_sample(n: int) -> np.ndarray:
    """The elements of the large size compared with the reference (the rules are elementwise,
    so the reference of a subset is the subset of the reference; the whole float64 reference
    at 1e6 costs ~1.5 s per variant and dtype): every 7th (7 is coprime to every lane count,
    so every lane position of the vector body), +-128 around every point where an even split
    into 2..16 threads falls (gdfast rounds those down to multiples of 64), and the first and
    last 4099 elements. Every ISA level's result is still compared bitwise on all elements."""
    bounds = {n * p // k for k in range(2, 17) for p in range(1, k)}
    windows = [np.arange(max(0, b - 128), min(n, b + 128)) for b in bounds]
    return np.unique(np.concatenate([np.arange(0, n, 7), np.arange(4099),
                                     np.arange(n - 4099, n), *windows]))


@functools.lru_cache(maxsize=1)
def large_reference(case_name: str, variant_name: str, dtype_name: str) -> Dict[int, Snapshot]:
    """The reference at the large size, on large_sample's elements (a per-tensor case's of
    the whole array, then sampled)."""
    case = cases.CASES_BY_NAME[case_name]
    n, steps = cases.LARGE_SIZE, cases.LARGE_STEPS
    sample = large_sample(n)
    hyper = case.hyper(case.variant(variant_name))
    if case.per_tensor:
        whole = reference_snapshots(case, hyper, _param(n, dtype_name),
                                    gradients(n, dtype_name, steps), dtype_name,
                                    checkpoints(steps, n))
        return {t: {k: v if k == "scalars" else
                    ({name: a[sample] for name, a in v.items()} if isinstance(v, dict)
                     else v[sample]) for k, v in snap.items()} for t, snap in whole.items()}
    return reference_snapshots(case, hyper, _param(n, dtype_name)[sample],
                               gradients(n, dtype_name, steps)[:, sample],
                               dtype_name, checkpoints(steps, n))


StepFn = Callable[..., None]


def run_steps(case: Case, hyper: Mapping[str, Any], p: np.ndarray, grads: np.ndarray,
              marks: Sequence[int], step_fn: StepFn = gdfast_step) -> Dict[int, Snapshot]:
    """p and fresh states stepped along ``grads``; snapshots at ``marks``."""
    states = fresh_states(case, hyper, p)
    scalars: Scalars = {}
    out: Dict[int, Snapshot] = {}
    for t in range(1, len(grads) + 1):
        step_fn(case, p, grads[t - 1], states, scalars, t, hyper)
        if t in marks:
            out[t] = {"param": p.copy(), "states": {n: s.copy() for n, s in states.items()},
                      "scalars": dict(scalars)}
    return out


def compare(what: str, got: Dict[int, Snapshot], expected: Dict[int, Snapshot],
            part: slice, dtype: Any) -> float:
    """Every checkpoint within the tolerance (the expected arrays' ``part``); the scalar
    states exactly. Returns the worst ratio of difference to bound."""
    worst = 0.0
    for t, ref in expected.items():
        mine = got[t]
        assert mine["param"].dtype == dtype
        worst = max(worst, check_close(f"{what}: param after step {t}", mine["param"],
                                       ref["param"][part], ref["param_bound"][part]))
        for name, value in ref["states"].items():
            worst = max(worst, check_close(f"{what}: {name} after step {t}",
                                           mine["states"][name], value[part],
                                           ref["state_bounds"][name][part]))
        # double on both sides, from the same formula (the step count and the previous value)
        assert mine["scalars"] == ref["scalars"], f"{what}: scalar states after step {t}"
    return worst


# -- the tests ------------------------------------------------------------------------------
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "variant"), CASE_VARIANTS)
def test_trajectory_matches_reference(case: Case, variant: Variant, dtype: Any,
                                      size: int) -> None:
    name = np.dtype(dtype).name
    expected = small_reference(case.name, variant.name, name)
    part = slice(OFFSETS[size], OFFSETS[size] + size)
    grads = gradients(size, name, cases.STEPS)
    check_every_isa(case, variant, dtype, size, grads, expected, part)


def check_every_isa(case: Case, variant: Variant, dtype: Any, size: int, grads: np.ndarray,
                    expected: Dict[int, Snapshot], part: slice,
                    sample: Optional[np.ndarray] = None) -> None:
    """The first ISA level's trajectory within the tolerance (on ``sample``'s elements, if
    given), every other level's bitwise equal to it on all elements (as gdfast promises: the
    tolerance then holds for each)."""
    first: Optional[Dict[int, Snapshot]] = None
    for isa in ISAS:
        with gdfast.use_isa(isa):
            got = run_steps(case, case.hyper(variant), initial(size, dtype), grads,
                            tuple(expected))
        if first is None:
            compare(f"isa={isa}", got if sample is None else picked(got, sample), expected,
                    part, dtype)
            first = got
        else:
            assert_same_snapshots(f"isa={isa} vs isa={ISAS[0]}", got, first)


def picked(snapshots: Dict[int, Snapshot], where: np.ndarray) -> Dict[int, Snapshot]:
    return {t: {"param": snap["param"][where],
                "states": {n: a[where] for n, a in snap["states"].items()},
                "scalars": snap["scalars"]} for t, snap in snapshots.items()}


def assert_same_snapshots(what: str, got: Dict[int, Snapshot],
                          expected: Dict[int, Snapshot], part: slice = slice(None)) -> None:
    for t, snap in expected.items():
        where = f"{what}: after step {t}"
        np.testing.assert_array_equal(got[t]["param"], snap["param"][part],
                                      err_msg=f"{where}: param", strict=True)
        for state, value in snap["states"].items():
            np.testing.assert_array_equal(got[t]["states"][state], value[part],
                                          err_msg=f"{where}: {state}", strict=True)
        assert got[t]["scalars"] == snap["scalars"], f"{where}: scalar states"


@pytest.mark.parametrize(("case", "variant"), LARGE_CASE_VARIANTS)
@pytest.mark.parametrize("dtype", DTYPES)
def test_large_trajectory_matches_reference(case: Case, variant: Variant, dtype: Any) -> None:
    """1e6 elements: the long vector body, and the split across threads (the default count);
    compared with the reference on large_sample's elements."""
    name = np.dtype(dtype).name
    expected = large_reference(case.name, variant.name, name)
    grads = gradients(cases.LARGE_SIZE, name, cases.LARGE_STEPS)
    check_every_isa(case, variant, dtype, cases.LARGE_SIZE, grads, expected, slice(None),
                    sample=large_sample(cases.LARGE_SIZE))
    if case.ambiguous is not None and case.ambiguous_slack(case.full(variant.hyper)) == 0:
        assert not expected[cases.LARGE_STEPS]["ambiguous"].any()


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "variant"),
                         [p for p in CASE_VARIANTS if p.values[0].ambiguous is not None])
def test_ambiguous_elements_are_rare(case: Case, variant: Variant, dtype: Any) -> None:
    """The comparison with the float64 reference exempts Lion's elements whose sign argument
    was within rounding of zero: check that this exemption is rare, so that the comparison
    above really checks almost every element. Rprop's decisions may never be ambiguous."""
    final = small_reference(case.name, variant.name, np.dtype(dtype).name)[cases.STEPS]
    count = np.count_nonzero(final["ambiguous"])
    if case.ambiguous_slack(case.full(variant.hyper)) == 0:
        assert count == 0, "elements whose decisions depend on the precision"
    else:
        assert count <= SMALL_TOTAL // 200, "sign exemption covers > 0.5%"
        if dtype == np.float64:
            assert count <= 1


# -- gdfast's documented operation order, bitwise ---------------------------------------------
SAME_ORDER_STEPS = 20  # bitwise: a difference in the operations shows on the first steps


@functools.lru_cache(maxsize=2)
def same_order_snapshots(case_name: str, variant_name: str,
                         dtype_name: str) -> Dict[int, Snapshot]:
    case = cases.CASES_BY_NAME[case_name]
    hyper = case.hyper(case.variant(variant_name))
    marks = checkpoints(SAME_ORDER_STEPS, SMALL_TOTAL)
    if case.per_tensor:
        return laid_end_to_end([
            run_steps(case, hyper, initial(n, dtype_name),
                      gradients(n, dtype_name, cases.STEPS)[:SAME_ORDER_STEPS], marks,
                      step_fn=same_order_step) for n in cases.SMALL_SIZES])
    p0, grads = concatenated(dtype_name, cases.STEPS)
    return run_steps(case, hyper, p0.copy(), grads[:SAME_ORDER_STEPS], marks,
                     step_fn=same_order_step)


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "variant"), CASE_VARIANTS)
def test_bitwise_equals_documented_operation_order(case: Case, variant: Variant, dtype: Any,
                                                   size: int) -> None:
    """gdfast promises IEEE operations in a fixed order without FMA contraction; the same
    operations in NumPy must then give the same bits, on every ISA level."""
    name = np.dtype(dtype).name
    expected = same_order_snapshots(case.name, variant.name, name)
    part = slice(OFFSETS[size], OFFSETS[size] + size)
    grads = gradients(size, name, cases.STEPS)[:SAME_ORDER_STEPS]
    for isa in ISAS:
        with gdfast.use_isa(isa):
            got = run_steps(case, case.hyper(variant), initial(size, dtype), grads,
                            tuple(expected))
        assert_same_snapshots(f"isa={isa} vs NumPy", got, expected, part)


# -- the list (multi-tensor) form ---------------------------------------------------------------
LIST_SIZES = (0, 1, 17, 0, 1000, 33, 4099, 16, 7)
# Larger than 2 * 2**14 in total, so that the work is split across threads, with thread
# boundaries falling inside some tensor, after empty ones.
LIST_SIZES_SPLIT = (40_000, 0, 7, 30_001, 0, 65, 12_345)
LIST_STEPS = 5


def run_lists(case: Case, hyper: Mapping[str, Any], dtype: Any, sizes: Sequence[int],
              as_list: bool) -> Tuple[List[np.ndarray], Dict[str, List[np.ndarray]],
                                      List[Optional[Scalars]]]:
    """Params, states and scalar states after LIST_STEPS steps: one call for all tensors, or
    one call per tensor (each with its own scalar states, which must come out the same)."""
    name = np.dtype(dtype).name
    params = [initial(n, dtype, seed=k) for k, n in enumerate(sizes)]
    states = [fresh_states(case, hyper, p) for p in params]
    names = case.state_names(hyper)
    together: Scalars = {}
    apart: List[Scalars] = [{} for _ in sizes]
    for t in range(1, LIST_STEPS + 1):
        grads = [_grad(n, name, t, seed=k) for k, n in enumerate(sizes)]
        if as_list:
            gdfast_step(case, params, grads, {n: [s[n] for s in states] for n in names},
                        together, t, hyper)
        else:
            for p, g, s, sc in zip(params, grads, states, apart):
                gdfast_step(case, p, g, s, sc, t, hyper)
    scalars: List[Optional[Scalars]] = [together] if as_list else list(apart)
    return params, {n: [s[n] for s in states] for n in names}, scalars


def assert_lists_equal(case: Case, hyper: Mapping[str, Any], dtype: Any,
                       sizes: Sequence[int]) -> None:
    p_list, s_list, sc_list = run_lists(case, hyper, dtype, sizes, as_list=True)
    p_each, s_each, sc_each = run_lists(case, hyper, dtype, sizes, as_list=False)
    for k in range(len(sizes)):
        np.testing.assert_array_equal(p_list[k], p_each[k], err_msg=f"param[{k}]", strict=True)
        for name in s_list:
            np.testing.assert_array_equal(s_list[name][k], s_each[name][k],
                                          err_msg=f"{name}[{k}]", strict=True)
    assert all(sc == sc_list[0] for sc in sc_each), "scalar states"


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(("case", "variant"), CASE_VARIANTS)
def test_list_form_equals_one_call_per_tensor(case: Case, variant: Variant,
                                              dtype: Any) -> None:
    for isa in ISAS:
        with gdfast.use_isa(isa):
            assert_lists_equal(case, case.hyper(variant), dtype, LIST_SIZES)


@pytest.mark.parametrize(("case", "variant"), LARGE_CASE_VARIANTS)
def test_list_form_split_across_threads(case: Case, variant: Variant, dtype: Any,
                                        threads: int) -> None:
    for isa in ISAS:
        with gdfast.use_isa(isa):
            assert_lists_equal(case, case.hyper(variant), dtype, LIST_SIZES_SPLIT)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_list_form_all_empty(case: Case, dtype: Any) -> None:
    hyper = case.hyper(case.variants[-1])
    params, _, _ = run_lists(case, hyper, dtype, (0, 0), as_list=True)
    assert [p.shape for p in params] == [(0,), (0,)]
