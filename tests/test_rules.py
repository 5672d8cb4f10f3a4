"""Multi-step trajectories of gdfast.ops against the float64 reference rules.

Every variant of cases.py runs 100 steps on every small size (all SIMD tails), for float32
and float64, on every ISA level this CPU supports, and is compared after several steps with
the tolerance stated in cases.py. The large size (1e6, split across threads) runs fewer
variants and steps (reason in cases.LARGE_STEPS). The gradients are a fixed sequence that
does not depend on the parameters, so that the only differences between gdfast and the
reference are rounding (L2 weight decay still feeds the parameters back into the gradient).

Further:
* Bitwise equality with ``reference.*_same_order``: gdfast's documented operation order
  repeated in NumPy in the array's own dtype (checks "no FMA contraction, this order").
  This is also how Lion is checked exactly, since sign() is discontinuous.
* Lion against the float64 reference: mismatches are allowed only at elements where the
  reference's sign argument was within rounding of zero at some step, are bounded there by
  2*lr per such step, and must be rare.
* The list (multi-tensor) form gives bitwise the results of one call per tensor.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, Mapping, Sequence, Tuple

import numpy as np
import pytest

import gdfast

import cases
import reference
from cases import CASES, Case, ReferenceRun, Variant, check_close

# -- parametrization -----------------------------------------------------------------------
CASE_VARIANTS = [pytest.param(case, variant, id=f"{case.name}-{variant.name}")
                 for case in CASES for variant in case.variants]
LARGE_CASE_VARIANTS = [pytest.param(case, case.variant(name), id=f"{case.name}-{name}")
                       for case in CASES for name in case.large_variants]
SIZES = [pytest.param(n, id=f"n={n}") for n in cases.SMALL_SIZES]
# The conftest `isa` fixture, parametrized here as the innermost loop (a decorator above the
# others), so that consecutive tests share one cached reference trajectory.
EVERY_ISA = pytest.mark.parametrize("isa", gdfast.isa_info()["supported"], indirect=True,
                                    ids=lambda name: f"isa={name}")


def unit_roundoff(dtype: Any) -> float:
    return float(np.finfo(dtype).eps)


# -- one step of each implementation ---------------------------------------------------------
def gdfast_step(case: Case, p: Any, g: Any, states: Mapping[str, Any], t: int,
                hyper: Mapping[str, Any]) -> None:
    """One gdfast.ops call; p, g and each state are arrays or lists of arrays."""
    op = getattr(gdfast.ops, case.op)
    if case.name == "sgd":
        op(p, g, states.get("momentum_buffer"), step=t, **hyper)
    elif case.name == "adam":
        op(p, g, states["exp_avg"], states["exp_avg_sq"], step=t,
           max_exp_avg_sq=states.get("max_exp_avg_sq"), **hyper)
    else:
        op(p, g, states["exp_avg"], **hyper)


def same_order_step(case: Case, p: np.ndarray, g: np.ndarray, states: Mapping[str, Any],
                    t: int, hyper: Mapping[str, Any]) -> None:
    if case.name == "sgd":
        reference.sgd_same_order(p, g, states.get("momentum_buffer"), step=t, **hyper)
    elif case.name == "adam":
        reference.adam_same_order(p, g, states["exp_avg"], states["exp_avg_sq"], step=t,
                                  max_exp_avg_sq=states.get("max_exp_avg_sq"), **hyper)
    else:
        reference.lion_same_order(p, g, states["exp_avg"], **hyper)


def fresh_states(case: Case, hyper: Mapping[str, Any], like: np.ndarray) -> Dict[str, Any]:
    states = {name: np.zeros_like(like) for name in case.state_names(hyper)}
    if "momentum_buffer" in states:
        # SGD's first step must overwrite the buffer whatever it holds
        states["momentum_buffer"].fill(np.nan)
    return states


# -- trajectories ---------------------------------------------------------------------------
def gradients(size: int, dtype_name: str, steps: int) -> np.ndarray:
    """All gradients of a trajectory, (steps, size), read-only (cached across ISA levels
    and variants; ~80 MB for the large size in float64, so only the last one of those)."""
    cached = _gradients_large if size > 1 << 16 else _gradients_small
    return cached(size, dtype_name, steps)


def _gradients(size: int, dtype_name: str, steps: int) -> np.ndarray:
    out = np.empty((steps, size), dtype=dtype_name)
    for t in range(1, steps + 1):
        out[t - 1] = cases.gradient(size, dtype_name, t)
    out.flags.writeable = False
    return out


_gradients_small = functools.lru_cache(maxsize=None)(_gradients)
_gradients_large = functools.lru_cache(maxsize=1)(_gradients)


def grad_at(size: int, dtype: Any, t: int, steps: int) -> np.ndarray:
    return gradients(size, np.dtype(dtype).name, steps)[t - 1]


def checkpoints(steps: int, size: int) -> Tuple[int, ...]:
    if size > 1 << 16:  # snapshots of the large size are big: the first and the last step
        return (1, steps)
    return tuple(sorted({t for t in cases.CHECKPOINTS if t < steps} | {steps}))


Snapshot = Dict[str, Any]


def reference_trajectory(case_name: str, variant_name: str, dtype_name: str, size: int,
                         steps: int) -> Dict[int, Snapshot]:
    """The float64 reference from the same (dtype-rounded) inputs: at each checkpoint the
    parameter, the states and their tolerance bounds for that dtype (cached across ISAs;
    only the last one of the large size, for memory)."""
    cached = _reference_large if size > 1 << 16 else _reference_small
    return cached(case_name, variant_name, dtype_name, size, steps)


def _reference_trajectory(case_name: str, variant_name: str, dtype_name: str, size: int,
                          steps: int) -> Dict[int, Snapshot]:
    case = cases.CASES_BY_NAME[case_name]
    hyper = case.hyper(case.variant(variant_name))
    run = ReferenceRun(case, hyper, cases.initial_param(size, dtype_name),
                       unit_roundoff(dtype_name))
    out: Dict[int, Snapshot] = {}
    marks = checkpoints(steps, size)
    for t in range(1, steps + 1):
        run.step(grad_at(size, dtype_name, t, steps))
        if t in marks:
            out[t] = {
                "param": run.p.copy(),
                "param_bound": run.param_bound(),
                "ambiguous": run.ambiguous.copy(),
                "states": {n: run.state[n].copy() for n in run.state_env},
                "state_bounds": {n: run.state_bound(n) for n in run.state_env},
            }
    return out


_reference_small = functools.lru_cache(maxsize=4)(_reference_trajectory)
_reference_large = functools.lru_cache(maxsize=1)(_reference_trajectory)


def run_gdfast(case: Case, hyper: Mapping[str, Any], dtype: Any, size: int, steps: int,
               step_fn: Any = gdfast_step) -> Dict[int, Snapshot]:
    p = cases.initial_param(size, dtype)
    states = fresh_states(case, hyper, p)
    marks = checkpoints(steps, size)
    out: Dict[int, Snapshot] = {}
    for t in range(1, steps + 1):
        step_fn(case, p, grad_at(size, dtype, t, steps), states, t, hyper)
        if t in marks:
            out[t] = {"param": p.copy(), "states": {n: s.copy() for n, s in states.items()}}
    return out


def compare_with_reference(case: Case, variant: Variant, dtype: Any, size: int,
                           steps: int) -> float:
    hyper = case.hyper(variant)
    dtype_name = np.dtype(dtype).name
    expected = reference_trajectory(case.name, variant.name, dtype_name, size, steps)
    got = run_gdfast(case, hyper, dtype, size, steps)
    worst = 0.0
    for t, ref in expected.items():
        mine = got[t]
        assert mine["param"].dtype == dtype
        worst = max(worst, check_close(f"param after step {t}", mine["param"], ref["param"],
                                       ref["param_bound"]))
        for name, value in ref["states"].items():
            worst = max(worst, check_close(f"{name} after step {t}", mine["states"][name],
                                           value, ref["state_bounds"][name]))
    return worst


# -- the tests ------------------------------------------------------------------------------
@EVERY_ISA
@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("case", "variant"), CASE_VARIANTS)
def test_trajectory_matches_reference(case: Case, variant: Variant, size: int, dtype: Any,
                                      isa: str) -> None:
    compare_with_reference(case, variant, dtype, size, cases.STEPS)


@EVERY_ISA
@pytest.mark.parametrize(("case", "variant"), LARGE_CASE_VARIANTS)
def test_large_trajectory_matches_reference(case: Case, variant: Variant, dtype: Any,
                                            isa: str) -> None:
    compare_with_reference(case, variant, dtype, cases.LARGE_SIZE, cases.LARGE_STEPS)


SAME_ORDER_STEPS = 20  # bitwise: a difference in the operations shows on the first steps


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize(("case", "variant"), CASE_VARIANTS)
def test_bitwise_equals_documented_operation_order(case: Case, variant: Variant, size: int,
                                                   dtype: Any, isa: str) -> None:
    """gdfast promises IEEE operations in a fixed order without FMA contraction; the same
    operations in NumPy must then give the same bits, on every ISA level."""
    hyper = case.hyper(variant)
    got = run_gdfast(case, hyper, dtype, size, SAME_ORDER_STEPS)
    expected = run_gdfast(case, hyper, dtype, size, SAME_ORDER_STEPS, step_fn=same_order_step)
    for t, snap in expected.items():
        np.testing.assert_array_equal(got[t]["param"], snap["param"],
                                      err_msg=f"param after step {t}", strict=True)
        for name, value in snap["states"].items():
            np.testing.assert_array_equal(got[t]["states"][name], value,
                                          err_msg=f"{name} after step {t}", strict=True)


@pytest.mark.parametrize("variant", cases.LION.variants, ids=str)
def test_lion_sign_exemption_is_rare(variant: Variant, dtype: Any) -> None:
    """The Lion comparison with the float64 reference exempts elements whose sign argument
    was within rounding of zero: check that this exemption is rare, so that the comparison
    in test_trajectory_matches_reference really checks almost every element."""
    size, steps = 4099, cases.STEPS
    expected = reference_trajectory("lion", variant.name, np.dtype(dtype).name, size, steps)
    ambiguous = expected[steps]["ambiguous"]
    assert np.count_nonzero(ambiguous) <= size // 200, "sign exemption covers > 0.5%"
    if dtype == np.float64:
        assert np.count_nonzero(ambiguous) <= 1


# -- the list (multi-tensor) form ---------------------------------------------------------------
LIST_SIZES = (0, 1, 17, 0, 1000, 33, 4099, 16, 7)
# Larger than 2 * 2**14 in total, so that the work is split across threads, with thread
# boundaries falling inside some tensor, after empty ones.
LIST_SIZES_SPLIT = (40_000, 0, 7, 30_001, 0, 65, 12_345)
LIST_STEPS = 5


def run_lists(case: Case, hyper: Mapping[str, Any], dtype: Any, sizes: Sequence[int],
              as_list: bool) -> Tuple[List[np.ndarray], Dict[str, List[np.ndarray]]]:
    params = [cases.initial_param(n, dtype, seed=k) for k, n in enumerate(sizes)]
    states = [fresh_states(case, hyper, p) for p in params]
    names = case.state_names(hyper)
    for t in range(1, LIST_STEPS + 1):
        grads = [cases.gradient(n, dtype, t, seed=k) for k, n in enumerate(sizes)]
        if as_list:
            gdfast_step(case, params, grads, {n: [s[n] for s in states] for n in names}, t,
                        hyper)
        else:
            for p, g, s in zip(params, grads, states):
                gdfast_step(case, p, g, s, t, hyper)
    return params, {n: [s[n] for s in states] for n in names}


def assert_lists_equal(case: Case, hyper: Mapping[str, Any], dtype: Any,
                       sizes: Sequence[int]) -> None:
    p_list, s_list = run_lists(case, hyper, dtype, sizes, as_list=True)
    p_each, s_each = run_lists(case, hyper, dtype, sizes, as_list=False)
    for k in range(len(sizes)):
        np.testing.assert_array_equal(p_list[k], p_each[k], err_msg=f"param[{k}]", strict=True)
        for name in s_list:
            np.testing.assert_array_equal(s_list[name][k], s_each[name][k],
                                          err_msg=f"{name}[{k}]", strict=True)


@pytest.mark.parametrize(("case", "variant"), CASE_VARIANTS)
def test_list_form_equals_one_call_per_tensor(case: Case, variant: Variant, dtype: Any,
                                              isa: str) -> None:
    assert_lists_equal(case, case.hyper(variant), dtype, LIST_SIZES)


@pytest.mark.parametrize(("case", "variant"), LARGE_CASE_VARIANTS)
def test_list_form_split_across_threads(case: Case, variant: Variant, dtype: Any, isa: str,
                                        threads: int) -> None:
    assert_lists_equal(case, case.hyper(variant), dtype, LIST_SIZES_SPLIT)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_list_form_all_empty(case: Case, dtype: Any) -> None:
    hyper = case.hyper(case.variants[-1])
    params, _ = run_lists(case, hyper, dtype, (0, 0), as_list=True)
    assert [p.shape for p in params] == [(0,), (0,)]
