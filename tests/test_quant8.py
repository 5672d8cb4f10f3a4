"""Blockwise 8-bit states (issue 12; README "8-bit states"), at the level of the functional ops
and of the kernels' map.

1. The map: every code decodes as tests/quant8_reference.py says (written from the
   description, not from gdfast's code); encoding moves a value by at most half its bin
   (float32 rounding aside: a few ulps of absmax); decoding then encoding gives the code back.
2. A step with 8-bit states is bitwise: decode (reference) -> gdfast's float32 step on the
   decoded values -> each block's new absmax and codes (reference). Every ISA level, 1-3
   threads (thread ranges split blocks: a block belongs to the thread holding its first
   element), sizes around the block (256) and group (2048) edges, lists, several rules, and
   float32 or bfloat16 params.
3. Non-finite values: a block holding a NaN or an Inf decodes to NaN as a whole; the other
   blocks are untouched by it.
4. Bad input: a TypeError/ValueError naming the argument, nothing written.
"""

from __future__ import annotations

from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import quant8_reference as q8

import gdfast
from gdfast._spec import RULES

from conftest import num_threads

ISAS: List[str] = gdfast.isa_info()["supported"]
F32 = np.float32


def _state_values(rng: np.random.Generator, n: int, nonnegative: bool) -> np.ndarray:
    """Values spread over many decades (most blocks mix large and tiny ones), some zeros."""
    x = rng.standard_normal(n) * 10.0 ** rng.uniform(-9, 1, n)
    x[rng.random(n) < 0.05] = 0.0
    return (np.abs(x) if nonnegative else x).astype(F32)


# -- 1. the map --------------------------------------------------------------------------------
@pytest.mark.parametrize("isa", ISAS)
def test_every_signed_code_decodes_as_the_description_says(isa: str) -> None:
    """SGD with momentum 1 and dampening 1 keeps its buffer as it is (buf = 1 * buf + 0 * g),
    and p -= 1 * buf from p = 0 reads the decoded buffer out: -decode(code). Then the buffer
    is stored again: the same code and absmax. (The unsigned map's decoding reaches the param
    bitwise through Adam's second moment in the step tests below.)"""
    codes = np.arange(256, dtype=np.uint8)
    absmax = np.array([3.0], F32)
    p, g = np.zeros(256, F32), np.ones(256, F32)
    buf, kept = codes.copy(), absmax.copy()
    with gdfast.use_isa(isa):
        gdfast.ops.sgd_(p, g, buf, step=2, lr=1.0, momentum=1.0, dampening=1.0,
                        absmax={"momentum_buffer": kept})
    expected = q8.decode(codes, absmax, signed=True)
    np.testing.assert_array_equal(-p, expected)  # (exact; -0 == 0)
    # (code 0x80, -0, is stored again as 0; every other code as itself)
    want = codes.copy()
    want[0x80] = 0
    np.testing.assert_array_equal(buf, want)
    np.testing.assert_array_equal(kept, q8.block_absmax(expected))


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_map_values_and_bins(signed: bool) -> None:
    """Codes are ordered by value; magnitudes span [10^-B, 1) (B = 7 signed, 8 unsigned);
    encoding a value moves it by at most half its bin plus float32 rounding, and decode then
    encode is the identity (but -0)."""
    magnitudes = np.arange(128 if signed else 256, dtype=np.uint8)
    one = np.array([1.0], F32)
    values = q8.decode(magnitudes, one, signed).astype(np.float64)
    assert values[0] == 0 and np.all(np.diff(values) > 0)
    assert values[1] > 10.0 ** -q8.bits(signed) and values[-1] < 1.0
    assert q8.encode(values.astype(F32), one, signed).tolist() == magnitudes.tolist()
    rng = np.random.default_rng(5)
    x = _state_values(rng, 50_000, nonnegative=not signed)
    codes, absmax = q8.requantize(x, signed)
    back = q8.decode(codes, absmax, signed).astype(np.float64)
    scale = np.repeat(absmax.astype(np.float64), q8.BLOCK)[:x.size]
    bound = q8.half_bin(codes, absmax, signed)
    # below the lowest decade a value becomes 0: its error is below 10^-B of its block's absmax
    tiny = np.abs(x) < scale * 10.0 ** -q8.bits(signed)
    err = np.abs(back - x.astype(np.float64))
    # 4 ulps of absmax: the float32 operations of the scaling and of the bin's centre
    slack = 4 * np.finfo(F32).eps * scale
    assert np.all(err[~tiny] <= bound[~tiny] + slack[~tiny])
    assert np.all(err[tiny] <= scale[tiny] * 10.0 ** -q8.bits(signed))
    # the bound is not empty: typical errors are a good fraction of it
    assert np.median(err[~tiny] / bound[~tiny]) > 0.2


# -- 2. steps, bitwise -------------------------------------------------------------------------
# (rule, hyperparameters, step): the states each uses come from the registry
CONFIGS: List[Tuple[str, Dict[str, Any], int]] = [
    ("adam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}, 7),
    ("adam", {"lr": 1e-2, "amsgrad": True}, 3),
    ("lion", {"lr": 1e-3, "weight_decay": 0.1}, 1),
    ("sgd", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}, 2),
    ("rmsprop", {"lr": 1e-2, "momentum": 0.5, "centered": True}, 4),
    ("adagrad", {"lr": 1e-2}, 3),
    ("adamax", {"lr": 1e-2}, 3),
    ("radam", {"lr": 1e-2}, 9),
]


def _used_states(rule: str, hyper: Dict[str, Any]) -> List[Any]:
    names = RULES[rule].used_states(hyper)
    return [s for s in RULES[rule].states if s.name in names]


def _case(rule: str, hyper: Dict[str, Any], sizes: List[int], seed: int,
          param_dtype: Any) -> Tuple[List[np.ndarray], List[np.ndarray], Dict[str, Any]]:
    rng = np.random.default_rng(seed)
    params = [rng.standard_normal(n).astype(param_dtype) for n in sizes]
    grads = [(rng.standard_normal(n) * 10.0 ** rng.uniform(-6, 0, n)).astype(param_dtype)
             for n in sizes]
    states: Dict[str, Any] = {}
    for s in _used_states(rule, hyper):
        pairs = [q8.requantize(_state_values(rng, n, s.nonnegative), not s.nonnegative)
                 for n in sizes]
        states[s.name] = ([c for c, _ in pairs], [a for _, a in pairs])
    return params, grads, states


def _reference_step(rule: str, hyper: Dict[str, Any], step: int, params: List[np.ndarray],
                    grads: List[np.ndarray], states: Dict[str, Any]) -> Tuple[Any, Any]:
    """Decode (reference), gdfast's float32 step on float32 states, encode (reference)."""
    signed = {s.name: not s.nonnegative for s in RULES[rule].states}
    decoded = {name: [q8.decode(c, a, signed[name]) for c, a in zip(*pair)]
               for name, pair in states.items()}
    params = [p.copy() for p in params]
    getattr(gdfast.ops, f"{rule}_")(params, grads, step=step, **decoded, **hyper)
    stored = {name: [q8.requantize(v, signed[name]) for v in values]
              for name, values in decoded.items()}
    return params, stored


@pytest.mark.parametrize("threads", [1, 2, 3], ids=lambda n: f"threads={n}")
@pytest.mark.parametrize("isa", ISAS)
@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c[0]}-{'-'.join(map(str, c[1]))}")
def test_step_is_decode_float32_step_encode(config: Tuple[str, Dict[str, Any], int], isa: str,
                                            threads: int) -> None:
    rule, hyper, step = config
    sizes = [1, 255, 256, 257, 2048 + 256 + 3, 40_000, 3]
    params, grads, states = _case(rule, hyper, sizes, seed=len(rule) + step, param_dtype=F32)
    want_params, want_states = _reference_step(rule, hyper, step, params, grads, states)
    with gdfast.use_isa(isa), num_threads(threads):
        getattr(gdfast.ops, f"{rule}_")(
            params, grads, step=step, **{n: c for n, (c, _) in states.items()},
            absmax={n: a for n, (_, a) in states.items()}, **hyper)
    for t in range(len(sizes)):
        np.testing.assert_array_equal(params[t].view(np.uint32), want_params[t].view(np.uint32))
        for name, (codes, absmax) in states.items():
            want_codes, want_absmax = want_states[name][t]
            np.testing.assert_array_equal(codes[t], want_codes, err_msg=f"{name}[{t}]")
            np.testing.assert_array_equal(absmax[t].view(np.uint32), want_absmax.view(np.uint32))


@pytest.mark.parametrize("isa", ISAS)
def test_bfloat16_params_with_8bit_states(isa: str) -> None:
    """bfloat16 params and grads (the bf16 recipe's loop inside the blocks), and stochastic
    rounding of the param, bitwise as the float32-state step on the decoded states."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    rule, hyper, step = CONFIGS[0]
    sizes = [300, 9000]
    params, grads, states = _case(rule, hyper, sizes, seed=3, param_dtype=ml_dtypes.bfloat16)
    for extra in ({}, {"stochastic_rounding": True, "seed": 11}):
        signed = {s.name: not s.nonnegative for s in RULES[rule].states}
        decoded = {n: [q8.decode(c, a, signed[n]) for c, a in zip(*pair)]
                   for n, pair in states.items()}
        want = [p.copy() for p in params]
        gdfast.ops.adam_(want, grads, step=step, **decoded, **hyper, **extra)
        got = [p.copy() for p in params]
        codes = {n: [c.copy() for c in pair[0]] for n, pair in states.items()}
        absmax = {n: [a.copy() for a in pair[1]] for n, pair in states.items()}
        with gdfast.use_isa(isa):
            gdfast.ops.adam_(got, grads, step=step, **codes, absmax=absmax, **hyper, **extra)
        for t in range(len(sizes)):
            np.testing.assert_array_equal(got[t].view(np.uint16), want[t].view(np.uint16))
            for n in states:
                c, a = q8.requantize(decoded[n][t], signed[n])
                np.testing.assert_array_equal(codes[n][t], c)
                np.testing.assert_array_equal(absmax[n][t].view(np.uint32), a.view(np.uint32))


# -- 3. non-finite values ----------------------------------------------------------------------
def test_a_non_finite_value_poisons_its_block_only() -> None:
    n = 1024
    p, g = np.zeros(n, F32), np.full(n, 0.5, F32)
    g[300] = np.nan
    g[700] = np.inf
    buf = np.zeros(n, np.uint8)
    absmax = np.zeros(4, F32)
    gdfast.ops.sgd_(p, g, buf, step=1, lr=0.0, momentum=0.9, absmax={"momentum_buffer": absmax})
    assert np.isnan(absmax[1]) and np.isnan(absmax[2]) and absmax[0] == absmax[3] == 0.5
    p2 = np.zeros(n, F32)
    gdfast.ops.sgd_(p2, np.zeros(n, F32), buf, step=2, lr=1.0, momentum=1.0, dampening=1.0,
                    absmax={"momentum_buffer": absmax})
    assert np.all(np.isnan(p2[256:768])) and np.all(np.isfinite(p2[:256]))
    assert np.all(np.isfinite(p2[768:]))


# -- 4. bad input ------------------------------------------------------------------------------
def _adam_arrays(n: int = 1000) -> Dict[str, Any]:
    return {"param": np.ones(n, F32), "grad": np.ones(n, F32),
            "exp_avg": np.zeros(n, np.uint8), "exp_avg_sq": np.zeros(n, np.uint8),
            "absmax": {"exp_avg": np.zeros(4, F32), "exp_avg_sq": np.zeros(4, F32)}}


@pytest.mark.parametrize("change, error, message", [
    (lambda a: a["absmax"].pop("exp_avg_sq"), TypeError,
     r"exp_avg_sq: expected float32.*got uint8 \(the uint8 codes of an 8-bit state need"),
    (lambda a: a.update(exp_avg=np.zeros(1000, F32)), TypeError,
     r"exp_avg: expected uint8 \(the codes of an 8-bit state\), got float32"),
    (lambda a: a["absmax"].update(exp_avg=np.zeros(3, F32)), ValueError,
     r"exp_avg_absmax: shape \(3,\): expected \(4,\), one absmax per block of 256"),
    (lambda a: a["absmax"].update(exp_avg=np.zeros((2, 2), F32)), ValueError,
     r"exp_avg_absmax: shape \(2, 2\): expected \(4,\)"),
    (lambda a: a["absmax"].update(exp_avg=np.zeros(4, np.float64)), TypeError,
     r"exp_avg_absmax: expected float32 \(a block absmax\), got float64"),
    (lambda a: a["absmax"].update(exp_avg=a["absmax"]["exp_avg_sq"]), ValueError,
     r"exp_avg_absmax and exp_avg_sq_absmax share memory"),
    (lambda a: a["absmax"]["exp_avg"].setflags(write=False), ValueError,
     r"exp_avg_absmax: is read-only"),
    (lambda a: a["absmax"].update(exp_avgs=np.zeros(4, F32)), ValueError,
     r"absmax: 'exp_avgs' is not a state of adam"),
    (lambda a: a.update(absmax=[1]), TypeError, r"absmax: expected a dict"),
    (lambda a: a.update(param=np.ones(1000), grad=np.ones(1000)), TypeError,
     r"exp_avg: 8-bit states are for float32, bfloat16 and float16 params; param is float64"),
    (lambda a: a.update(exp_avg=np.zeros(1000, np.int8)), TypeError,
     r"exp_avg: expected uint8 \(the codes of an 8-bit state\), got int8"),
    (lambda a: a.update(master_param=np.ones(1000, F32)), ValueError,
     r"master_param: a master copy is for a bfloat16 or float16 param; param is float32"),
])
def test_bad_input_is_named_and_nothing_is_written(change: Any, error: type,
                                                   message: str) -> None:
    arrays = _adam_arrays()
    change(arrays)
    before = {k: (v.copy() if isinstance(v, np.ndarray) else v) for k, v in arrays.items()}
    absmax_before = {k: v.copy() for k, v in arrays["absmax"].items()} if isinstance(
        arrays["absmax"], dict) else None
    with pytest.raises(error, match=message):
        gdfast.ops.adam_(arrays["param"], arrays["grad"], arrays["exp_avg"],
                         arrays["exp_avg_sq"], step=1, absmax=arrays["absmax"],
                         master_param=arrays.get("master_param"))
    for k, v in before.items():
        if isinstance(v, np.ndarray):
            np.testing.assert_array_equal(arrays[k], v)
    if absmax_before is not None:
        for k, v in absmax_before.items():
            np.testing.assert_array_equal(arrays["absmax"][k], v)
