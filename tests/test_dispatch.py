"""Runtime dispatch: levels are visible and steerable, and every level computes exactly what
the one-lane scalar level computes (the rules avoid FMA contraction, so bitwise)."""

from __future__ import annotations

import platform
from typing import Any, Dict, Tuple

import numpy as np
import pytest

import gdfast

from cases import CASES, Case, Variant
from conftest import run_python

INFO = gdfast.isa_info()
SIMD_ISAS = [name for name in INFO["supported"] if name != "scalar"]
# Tail lengths around every lane width (4, 8, 16 floats; 2, 4, 8 doubles) and a long one.
SIZES = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 4099]

def _arrays(case: Case, hyper: Dict[str, Any], n: int, dtype: Any,
            seed: int) -> Dict[str, np.ndarray]:
    """param, grad and the states these options use: standard normal (states that are never
    negative in real runs: their absolute values), exact zeros in grad (sign(0), sqrt(0))."""
    rng = np.random.default_rng(seed)
    out = {name: rng.standard_normal(n).astype(dtype)
           for name in case.tensor_names(hyper)}
    out["grad"][::7] = 0.0
    for name in case.nonnegative:
        if name in out:
            out[name] = np.abs(out[name])
    return out


def _run(isa: str, case: Case, variant: Variant, n: int, dtype: Any,
         steps: int = 3) -> Tuple[Dict[str, np.ndarray], Dict[str, float]]:
    """Steps 1..3 (SGD's first step writes its buffer, later ones read it), scalar states
    carried from step to step."""
    hyper = case.hyper(variant)
    arrays = _arrays(case, hyper, n, dtype, seed=n)
    states = {k: v for k, v in arrays.items() if k not in ("param", "grad")}
    scalars: Dict[str, float] = {}
    op = getattr(gdfast.ops, case.op)
    with gdfast.use_isa(isa), np.errstate(all="ignore"):
        for s in range(1, steps + 1):
            result = op(arrays["param"], arrays["grad"], **states, step=s, **hyper, **scalars)
            scalars.update(result or {})
    return arrays, scalars


def _nan_as_nan(a: np.ndarray) -> np.ndarray:
    """NaN results agree as NaN (sign and payload are not promised: test_properties)."""
    return np.where(np.isnan(a), np.nan, a).astype(a.dtype)


def test_isa_info_shape():
    assert set(INFO) == {"compiled", "supported", "active", "prefetch_bytes"}
    assert "scalar" in INFO["compiled"]
    assert set(INFO["supported"]) <= set(INFO["compiled"])
    assert INFO["active"] in INFO["supported"]
    if platform.machine().lower() in ("x86_64", "amd64"):
        assert INFO["compiled"] == ["scalar", "baseline", "avx2", "avx512"]
        assert "baseline" in INFO["supported"]


def test_default_is_best_supported():
    out = run_python("import gdfast; print(gdfast.isa_info()['active'])")
    assert out.stdout.strip() == INFO["supported"][-1], out.stderr


@pytest.mark.parametrize("name", INFO["supported"])
def test_use_isa_switches_and_restores(name):
    before = gdfast.isa_info()["active"]
    with gdfast.use_isa(name):
        assert gdfast.isa_info()["active"] == name
    assert gdfast.isa_info()["active"] == before


def test_use_isa_restores_after_exception():
    before = gdfast.isa_info()["active"]
    with pytest.raises(RuntimeError, match="inside"):
        with gdfast.use_isa("scalar"):
            raise RuntimeError("inside")
    assert gdfast.isa_info()["active"] == before


def test_unknown_isa_is_rejected():
    with pytest.raises(ValueError, match=r"unknown ISA level 'sse9'.*this build has: scalar"):
        gdfast.set_isa("sse9")
    assert gdfast.isa_info()["active"] in INFO["supported"]


@pytest.mark.parametrize("name", INFO["supported"])
def test_env_var_forces_level(name):
    out = run_python("import gdfast; print(gdfast.isa_info()['active'])", GDFAST_ISA=name)
    assert out.stdout.strip() == name, out.stderr


def test_env_var_unknown_level_fails_import_clearly():
    out = run_python("import gdfast", GDFAST_ISA="avx1024")
    assert out.returncode != 0
    assert "GDFAST_ISA: unknown ISA level 'avx1024'" in out.stderr


@pytest.mark.skipif(set(INFO["compiled"]) == set(INFO["supported"]),
                    reason="this CPU supports every compiled level")
def test_unsupported_level_is_rejected():
    missing = next(n for n in INFO["compiled"] if n not in INFO["supported"])
    with pytest.raises(ValueError, match=f"'{missing}' is not supported by this CPU"):
        gdfast.set_isa(missing)


@pytest.mark.parametrize("name", SIMD_ISAS)
def test_lane_width_matches_level(name):
    expected = {"baseline": 4, "avx2": 8, "avx512": 16, "neon": 4}[name]
    with gdfast.use_isa(name):
        assert gdfast._core.float32_lanes() == expected


@pytest.mark.parametrize("isa_name", SIMD_ISAS)
@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_level_bitwise_equals_scalar(case: Case, isa_name: str, dtype: Any) -> None:
    """Every variant of the case (together they switch on every option of the rule), on every
    tail length: the same bits as the one-lane scalar level, scalar states too."""
    for variant in case.variants:
        for n in SIZES:
            expected, expected_scalars = _run("scalar", case, variant, n, dtype)
            got, scalars = _run(isa_name, case, variant, n, dtype)
            assert scalars == expected_scalars
            for name, e in expected.items():
                np.testing.assert_array_equal(
                    _nan_as_nan(got[name]).view(np.uint8), _nan_as_nan(e).view(np.uint8),
                    err_msg=f"{variant.name}, n={n}: {name}")


def test_special_values_propagate_like_scalar():
    """NaN/inf/±0 in grads and states flow through every level exactly as the scalar rule."""
    values = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-30, -1e30],
                      dtype=np.float32)
    n = values.size * 3
    results = {}
    for name in INFO["supported"]:
        arrays = [np.resize(np.roll(values, k), n) for k in range(5)]
        arrays[3] = np.abs(arrays[3])
        with gdfast.use_isa(name):
            gdfast.ops.lion_(arrays[0], arrays[1], arrays[2], lr=0.1)
            gdfast.ops.adam_(arrays[0], arrays[1], arrays[2], arrays[3], step=2, amsgrad=True,
                             max_exp_avg_sq=arrays[4])
        results[name] = arrays
    for name, arrays in results.items():
        for e, g in zip(results["scalar"], arrays):
            np.testing.assert_array_equal(g.view(np.uint32), e.view(np.uint32), err_msg=name)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_special_values_agree_on_every_level(case: Case) -> None:
    """NaN/inf/±0/tiny/huge in grads and states, through each case's checked call (every
    state in use): every level gives the scalar level's results, NaN where it gives NaN."""
    values = np.array([0.0, -0.0, 1.0, -1.0, np.inf, -np.inf, np.nan, 1e-30, -1e30],
                      dtype=np.float32)
    n = values.size * 3
    names = case.tensor_names(case.checked)
    results = {}
    for isa in INFO["supported"]:
        arrays = {name: np.resize(np.roll(values, k), n) for k, name in enumerate(names)}
        for name in case.nonnegative:
            if name in arrays:
                arrays[name] = np.abs(arrays[name])
        with gdfast.use_isa(isa), np.errstate(all="ignore"):
            getattr(gdfast.ops, case.op)(arrays["param"], arrays["grad"],
                                         **{k: arrays[k] for k in names[2:]}, **case.checked)
        results[isa] = arrays
    for isa, arrays in results.items():
        for name, a in arrays.items():
            np.testing.assert_array_equal(_nan_as_nan(a).view(np.uint32),
                                          _nan_as_nan(results["scalar"][name]).view(np.uint32),
                                          err_msg=f"{isa}: {name}")


# -- software prefetch (GDFAST_PREFETCH) -------------------------------------------------------


def test_prefetch_default_and_environment():
    """2048 bytes on Intel CPUs, 0 elsewhere (cpu/dispatch.cpp says why); GDFAST_PREFETCH
    overrides it, and a bad value fails the import naming the variable."""
    cpu = run_python("import gdfast; print(gdfast.isa_info()['prefetch_bytes'])")
    assert cpu.stdout.strip() in ("0", "2048"), cpu.stderr
    out = run_python("import gdfast; print(gdfast.isa_info()['prefetch_bytes'])",
                     GDFAST_PREFETCH="256")
    assert out.stdout.strip() == "256", out.stderr
    for bad in ("abc", "-1", "100000"):
        out = run_python("import gdfast", GDFAST_PREFETCH=bad)
        assert out.returncode != 0 and "GDFAST_PREFETCH" in out.stderr, bad


@pytest.mark.parametrize("case", CASES, ids=str)
def test_prefetch_distance_does_not_change_results(case: Case):
    """Prefetching only moves data into the cache: results are bitwise the same for any
    distance, including one past the end of every array and none at all."""
    variant = case.variants[-1]
    before = gdfast._core.prefetch_bytes()
    try:
        results = []
        for distance in (0, 64, 1024, 65536):
            gdfast._core.set_prefetch_bytes(distance)
            results.append(_run(INFO["active"], case, variant, 70_001, np.float32))
    finally:
        gdfast._core.set_prefetch_bytes(before)
    (first, first_scalars), *others = results
    for arrays, scalars in others:
        assert scalars == first_scalars
        for name, value in first.items():
            np.testing.assert_array_equal(_nan_as_nan(arrays[name]), _nan_as_nan(value),
                                          err_msg=name)
    with pytest.raises(ValueError, match=r"bytes: expected a byte count in \[0, 65536\]"):
        gdfast._core.set_prefetch_bytes(-1)
