"""Runtime dispatch: levels are visible and steerable, and every level computes exactly what
the one-lane scalar level computes (the rules avoid FMA contraction, so bitwise)."""

from __future__ import annotations

import platform

import numpy as np
import pytest

import gdfast

from conftest import run_python

INFO = gdfast.isa_info()
SIMD_ISAS = [name for name in INFO["supported"] if name != "scalar"]
# Tail lengths around every lane width (4, 8, 16 floats; 2, 4, 8 doubles) and a long one.
SIZES = [1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 100, 4099]

# Each optimizer with option sets that, together, switch on every flag of its rule.
CALLS = {
    "sgd-plain": lambda a, s: gdfast.ops.sgd_(a[0], a[1], step=s, lr=0.1),
    "sgd-momentum-first": lambda a, s: gdfast.ops.sgd_(
        a[0], a[1], a[2], step=1, lr=0.1, momentum=0.9, weight_decay=0.01),
    "sgd-nesterov-maximize": lambda a, s: gdfast.ops.sgd_(
        a[0], a[1], a[2], step=s + 1, lr=0.1, momentum=0.9, nesterov=True, maximize=True),
    "sgd-dampening-wd": lambda a, s: gdfast.ops.sgd_(
        a[0], a[1], a[2], step=s + 1, lr=0.1, momentum=0.5, dampening=0.3, weight_decay=0.1),
    "adam": lambda a, s: gdfast.ops.adam_(a[0], a[1], a[2], a[3], step=s, lr=0.01),
    "adam-l2-amsgrad": lambda a, s: gdfast.ops.adam_(
        a[0], a[1], a[2], a[3], step=s, lr=0.01, weight_decay=0.1, amsgrad=True,
        max_exp_avg_sq=a[4]),
    "adamw-maximize": lambda a, s: gdfast.ops.adam_(
        a[0], a[1], a[2], a[3], step=s, lr=0.01, weight_decay=0.1,
        decoupled_weight_decay=True, maximize=True),
    "lion": lambda a, s: gdfast.ops.lion_(a[0], a[1], a[2], lr=0.01),
    "lion-wd-maximize": lambda a, s: gdfast.ops.lion_(
        a[0], a[1], a[2], lr=0.01, weight_decay=0.1, maximize=True, beta1=0.5),
}


def _arrays(n: int, dtype, seed: int):
    rng = np.random.default_rng(seed)
    p, g = rng.standard_normal((2, n)).astype(dtype)
    g[::7] = 0.0  # exact zeros exercise sign(0) and sqrt(0)
    states = [rng.standard_normal(n).astype(dtype) for _ in range(2)]
    states[1] = np.abs(states[1])  # exp_avg_sq >= 0
    return [p, g, *states, np.abs(rng.standard_normal(n)).astype(dtype)]


def _run(isa: str, name: str, n: int, dtype, steps: int = 3):
    arrays = _arrays(n, dtype, seed=n)
    with gdfast.use_isa(isa):
        for s in range(1, steps + 1):
            CALLS[name](arrays, s)
    return arrays


def test_isa_info_shape():
    assert set(INFO) == {"compiled", "supported", "active"}
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


@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"n={n}")
@pytest.mark.parametrize("call", sorted(CALLS))
@pytest.mark.parametrize("isa_name", SIMD_ISAS)
def test_every_level_bitwise_equals_scalar(isa_name, call, n, dtype):
    expected = _run("scalar", call, n, dtype)
    got = _run(isa_name, call, n, dtype)
    for e, g in zip(expected, got):
        np.testing.assert_array_equal(g.view(np.uint8), e.view(np.uint8))


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
