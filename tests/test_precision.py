"""bfloat16 / float16 storage, float32 master weights and stochastic rounding (issue 12), at the
level of the functional ops (``gdfast.ops.<name>_``).

The contract under test (README/CONTEXT "Storage types"): loads widen exactly, the math is
float32, every narrowed store rounds to nearest even bitwise as precision_reference's integer
rounding (checked against ml_dtypes, numpy and torch below), or, with stochastic_rounding, as
the spec's counter-based generator. Results are bitwise identical across ISA levels and thread
counts.

1. The conversion itself, on ~800k float32 bit patterns (every bfloat16 upper half with its tie
   and near-tie lower halves, every float16 value with the midpoints to its neighbours and the
   float32 values next to those, subnormals of both formats, +-0, +-Inf, NaNs, overflow), on
   the three store paths: master -> param, a state, the param; every ISA level, and tails.
2. Every optimizer variant of tests/cases.py on several storage layouts: each step bitwise
   equal to gdfast's float32 operation order (reference.SAME_ORDER) on the widened stored
   inputs, rounded as stored (exact); and within one storage ulp of the float64 reference
   (reference.STEPS) from the same inputs, a difference allowed only where the float64 value
   sits within the float32 computation's error bound of a rounding boundary, and rare.
3. Master weights: the master follows the float32 trajectory bitwise; param == RNE(master).
4. Stochastic rounding: bit-exact against the spec's generator reimplemented in NumPy,
   unbiased (a binomial test), descends where round to nearest stalls, seeded.
5. Bad input for the new keywords: a TypeError/ValueError naming the argument, nothing written.
"""

from __future__ import annotations

import functools
import math
import platform
from typing import Any, Callable, Dict, List, Mapping, NamedTuple, Optional, Tuple

import numpy as np
import pytest

import gdfast
from gdfast._spec import RULES

import cases
import reference
from cases import CASES as ALL_CASES
from cases import Case, Variant
from conftest import num_threads

# The wheel stage's test environment may lack ml_dtypes (NumPy's bfloat16): skip there.
pytest.importorskip("ml_dtypes")
import precision_reference as pr  # noqa: E402

ISAS: List[str] = gdfast.isa_info()["supported"]
BF16, FP16, F32 = pr.BFLOAT16, pr.FLOAT16, pr.FLOAT32
NARROW = [pytest.param(BF16, id="bfloat16"), pytest.param(FP16, id="float16")]
# float32's unit roundoff as tests/cases.py's Tolerance takes it (finfo.eps = 2**-23)
U32 = float(np.finfo(np.float32).eps)


def assert_bits(what: str, got: np.ndarray, expected_bits: np.ndarray) -> None:
    """Bitwise equality, reporting the first differing element with both bit patterns."""
    got_bits = pr.storage_bits(got)
    expected_bits = np.asarray(expected_bits, dtype=got_bits.dtype)
    assert got_bits.shape == expected_bits.shape, f"{what}: shape"
    bad = np.flatnonzero(got_bits.ravel() != expected_bits.ravel())
    if bad.size:
        i = bad[0]
        raise AssertionError(f"{what}: {bad.size} of {got_bits.size} elements differ; first at "
                             f"[{i}]: got {got_bits.ravel()[i]:#x}, expected "
                             f"{expected_bits.ravel()[i]:#x}")


def assert_same(what: str, got: np.ndarray, expected: np.ndarray) -> None:
    assert got.dtype == expected.dtype, f"{what}: dtype {got.dtype} != {expected.dtype}"
    assert_bits(what, got, pr.storage_bits(expected))


# ==================================================================================================
# 0. The reference helpers against ml_dtypes, numpy and torch (they are the yardstick below)
# ==================================================================================================
@functools.lru_cache(maxsize=None)
def patterns() -> np.ndarray:
    """float32 bit patterns that matter to a 16-bit store (shuffled, so that every kind lands
    on every lane position and on both sides of every thread split)."""
    rng = np.random.default_rng(12)
    upper = np.arange(1 << 16, dtype=np.uint32) << 16
    # bfloat16: every upper half (every bfloat16 value, NaN and Inf encodings included) with
    # lower halves at exact (0), just above (1), below/at/above the tie, the top, and random
    groups = [upper | low for low in (0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF)]
    groups.append(upper | rng.integers(0, 1 << 16, 1 << 16, dtype=np.uint32))
    # float16: every finite value, the midpoints between neighbours (ties; exact in float32)
    # and the float32 values next to them, on both sides of 0 and up to the overflow tie
    # 65520 (the midpoint of 65504 and the next binade's first value 65536)
    h = np.arange(1 << 16, dtype=np.uint16).view(np.float16)
    v = np.unique(h[np.isfinite(h)].astype(np.float64))
    v = np.concatenate([[-65536.0], v, [65536.0]])
    mids = ((v[:-1] + v[1:]) / 2).astype(np.float32)
    inf32 = np.float32(np.inf)
    groups += [pr.f32_bits(v.astype(np.float32)), pr.f32_bits(mids),
               pr.f32_bits(np.nextafter(mids, inf32)), pr.f32_bits(np.nextafter(mids, -inf32))]
    sign = rng.integers(0, 2, 4096, dtype=np.uint32) << 31
    groups += [
        rng.integers(1, 0x800000, 4096, dtype=np.uint32) | sign,  # float32 subnormals
        rng.integers(0x33000000, 0x38800000, 4096, dtype=np.uint32) | sign,  # float16 subnormal
        rng.integers(0, 1 << 32, 1 << 16, dtype=np.uint32),  # anything
        np.array([0x00000000, 0x80000000, 0x7F800000, 0xFF800000,  # +-0, +-Inf
                  0x7FC00000, 0xFFC00000, 0x7F800001, 0xFF800001, 0x7FBFFFFF,  # NaNs, quiet
                  0x7FC12345, 0x7FFFFFFF, 0xFFFFFFFF, 0x7F802000,  # and signalling
                  0x7F7FFFFF, 0xFF7FFFFF, 0x00000001, 0x807FFFFF, 0x00800000,  # extremes
                  0x477FEFFF, 0x477FF000, 0x477FF001, 0x47800000, 0xC77FF000],  # float16 top
                 dtype=np.uint32),
    ]
    bits = np.concatenate(groups)
    out = pr.f32_from_bits(bits[rng.permutation(bits.size)])
    out.flags.writeable = False
    return out


def torch_bits(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    torch = pytest.importorskip("torch")
    target = torch.bfloat16 if dtype == BF16 else torch.float16
    return torch.from_numpy(x.copy()).to(target).view(torch.int16).numpy().view(np.uint16)


@pytest.mark.parametrize("dtype", NARROW)
def test_reference_rounding_matches_libraries(dtype: np.dtype) -> None:
    """precision_reference's bit arithmetic equals ml_dtypes' (bfloat16) and numpy's (float16)
    casts, which are round to nearest even, and torch's .to(): on every pattern but NaNs,
    whose encoding the spec fixes itself (checked next)."""
    x = patterns()
    nan = np.isnan(x)
    mine = pr.nearest_bits(x, dtype)
    with np.errstate(invalid="ignore", over="ignore"):  # ml_dtypes warns on NaN casts
        library = x.astype(dtype).view(np.uint16)
    np.testing.assert_array_equal(mine[~nan], library[~nan])
    np.testing.assert_array_equal(mine[~nan], torch_bits(x, dtype)[~nan])


def test_reference_nan_encodings() -> None:
    """bfloat16: every NaN -> 0x7FC0 (torch's scalar c10::BFloat16 conversion; torch's
    vectorized tensor cast on AVX-512 gives 0xFFFF instead, so the spec names the scalar
    one). float16: sign | 0x7E00 | payload bits 21..13, which is numpy's cast for quiet NaNs
    and torch's .to(torch.float16) on x86-64 (F16C's conversion) for every NaN."""
    torch = pytest.importorskip("torch")
    x = patterns()
    nan = np.isnan(x)
    assert np.all(pr.bf16_nearest_bits(x[nan]) == 0x7FC0)
    scalar = torch.tensor(float("nan"), dtype=torch.bfloat16).view(torch.int16).item() & 0xFFFF
    assert scalar == 0x7FC0
    fp16 = pr.fp16_nearest_bits(x[nan])
    if platform.machine().lower() in ("x86_64", "amd64"):  # elsewhere torch may drop payloads
        np.testing.assert_array_equal(fp16, torch_bits(x[nan], FP16))
    quiet = (pr.f32_bits(x[nan]) & 0x400000) != 0
    with np.errstate(invalid="ignore"):
        np.testing.assert_array_equal(fp16[quiet], x[nan][quiet].astype(np.float16).view(np.uint16))
    assert np.all((fp16 & 0x7E00) == 0x7E00)  # quiet, so still NaN however the payload looks


@pytest.mark.parametrize("fmt", ["float32", "bfloat16", "float16"])
def test_reference_float64_rounding_is_single(fmt: str) -> None:
    """round_f64 rounds float64 once: equal to numpy's float64 -> float32 / float16 casts
    (single roundings), and for bfloat16 to ml_dtypes' cast of values already in float32
    (where its double rounding through float32 is a single one); plus a case where rounding
    through float32 would err."""
    rng = np.random.default_rng(3)
    y = rng.standard_normal(1 << 16) * 10.0 ** rng.uniform(-48, 42, 1 << 16)
    y = np.concatenate([y, [0.0, -0.0, np.inf, -np.inf, 65519.99, 65520.0, -65520.0]])
    got = pr.round_f64(y, fmt)
    with np.errstate(over="ignore"):
        if fmt == "bfloat16":
            y = y.astype(np.float32).astype(np.float64)
            got = pr.round_f64(y, fmt)
            expected = y.astype(BF16).astype(np.float64)
        else:
            expected = y.astype(fmt).astype(np.float64)
    np.testing.assert_array_equal(got, expected)
    assert np.array_equal(np.signbit(got), np.signbit(expected))
    # 1 + 2**-8 + 2**-30: above the bfloat16 tie, but float32 rounds it onto the tie first
    assert pr.round_f64(1 + 2.0**-8 + 2.0**-30, "bfloat16") == 1 + 2.0**-7


def test_reference_generator_pieces() -> None:
    """splitmix64 from state 0 gives the published first output; lowbias32 fixes 0 and is a
    bijection on a sample (no collisions); a stochastic store is the nearest value or the
    other neighbour of x (x between the two), NaN encoded as round to nearest does, and
    exact on values the format holds."""
    assert pr.splitmix64(0) == 0xE220A8397B1DCDAF
    assert pr.lowbias32(np.zeros(1, np.uint32))[0] == 0
    assert np.unique(pr.lowbias32(np.arange(1 << 18, dtype=np.uint32))).size == 1 << 18
    x = patterns()
    nan = np.isnan(x)
    h = pr.element_hashes(x.size, seed=5, step=1, param_index=0, role=0)
    for dtype in (BF16, FP16):
        near = pr.as_storage(pr.nearest_bits(x, dtype), dtype)
        sr = pr.as_storage(pr.stochastic_bits(x, h, dtype), dtype)
        np.testing.assert_array_equal(pr.storage_bits(sr)[nan], pr.storage_bits(near)[nan])
        moved = ~nan & (pr.storage_bits(sr) != pr.storage_bits(near))
        assert moved.any()
        assert np.all(pr.ulp_distance(sr[moved], near[moved]) == 1)
        a, b = sr[moved].astype(np.float64), near[moved].astype(np.float64)
        assert np.all((np.minimum(a, b) <= x[moved]) & (x[moved] <= np.maximum(a, b)))
        held = pr.round_nearest(x[~nan], dtype)
        h_held = pr.element_hashes(held.size, seed=9, step=2, param_index=1, role=1)
        again = pr.stochastic_bits(held.astype(np.float32), h_held, dtype)
        np.testing.assert_array_equal(again, pr.storage_bits(held))


# ==================================================================================================
# 1. The conversion contract: a 16-bit store of a float32 value
# ==================================================================================================
# Three paths narrow a float32 value x that the step computes exactly:
#   master: param = RNE(master) after SGD with lr = 0 (master + 0 * (-0) is master bitwise);
#   state:  SGD's momentum buffer on its first step is the gradient x (times 1);
#   param:  SGD with lr = 1 from param = -0: -0 + x * (-1) is -x exactly (zeros included).
PATHS = ("master", "state", "param")
GUARD = 64  # elements after each written array that must stay as they were


def guarded(values: Any, dtype: Any, n: int) -> np.ndarray:
    """A buffer of n + GUARD elements of ``dtype``: ``values`` (float32, broadcast), then a
    sentinel (bits 0x5A5A...)."""
    dtype = np.dtype(dtype)
    buf = np.empty(n + GUARD, dtype=dtype)
    buf[:n] = pr.round_nearest(np.broadcast_to(np.float32(values) if np.ndim(values) == 0
                                               else values, (n,)), dtype)
    buf.view(np.uint8)[n * dtype.itemsize:] = 0x5A
    return buf


def store(path: str, dtype: np.dtype, x: np.ndarray) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """Runs ``path`` on the float32 values x; returns the narrowed array and the guarded
    buffers written (name -> buffer)."""
    n = x.size
    if path == "master":
        param, master = guarded(np.nan, dtype, n), guarded(x, F32, n)
        gdfast.ops.sgd_(param[:n], np.zeros(n, np.float32), step=1, lr=0.0,
                        master_param=master[:n])
        return param[:n], {"param": param, "master_param": master}
    if path == "state":
        param, buf = guarded(0.0, F32, n), guarded(np.nan, dtype, n)
        gdfast.ops.sgd_(param[:n], x, buf[:n], step=1, lr=0.0, momentum=0.5)
        return buf[:n], {"param": param, "momentum_buffer": buf}
    param = guarded(-0.0, dtype, n)
    gdfast.ops.sgd_(param[:n], x, step=1, lr=1.0)
    return param[:n], {"param": param}


@functools.lru_cache(maxsize=None)
def stored_expectation(path: str, dtype_name: str) -> Tuple[np.ndarray, np.ndarray]:
    """(expected bits, compare bitwise?) for every pattern: RNE of x (of -x on the param
    path). NaN bits are exact where the spec fixes them whatever the arithmetic did to the
    NaN before the store: bfloat16 always (0x7FC0), float16 where no sign change can
    intervene (the master and state paths copy x; -x on the param path is a product with a
    NaN operand, whose sign IEEE leaves open): there only NaN-ness is required."""
    x = patterns()
    if path == "param":
        x = pr.f32_from_bits(pr.f32_bits(x) ^ np.uint32(0x80000000))
    bits = pr.nearest_bits(x, dtype_name)
    exact = ~np.isnan(x) | (dtype_name == "bfloat16") | (path != "param")
    bits.flags.writeable = exact.flags.writeable = False
    return bits, exact


def check_store(path: str, dtype: np.dtype, start: int, n: int) -> None:
    x = patterns()[start:start + n]
    got, written = store(path, dtype, x.copy())
    for name, buf in written.items():
        guard = buf.view(np.uint8)[n * buf.itemsize:]
        assert np.all(guard == 0x5A), f"n={n}: {name} written past its end"
    bits, exact = stored_expectation(path, dtype.name)
    bits, exact = bits[start:start + n], exact[start:start + n]
    got_bits = pr.storage_bits(got)
    where = f"{path} n={n} at {start}"
    assert_bits(where, got_bits[exact], bits[exact])
    assert np.all(np.isnan(got[~exact].astype(np.float32))), f"{where}: NaN lost"
    if path == "master":  # and the master itself: unchanged, NaN kept NaN
        master = written["master_param"][:n]
        same = ~np.isnan(x)
        assert_bits(f"{where}: master_param", master[same], pr.f32_bits(x[same]))
        assert np.all(np.isnan(master[~same]))


@pytest.mark.parametrize("dtype", NARROW)
@pytest.mark.parametrize("path", PATHS)
def test_round_to_nearest_on_every_pattern(path: str, dtype: np.dtype, isa: str) -> None:
    """All ~800k patterns in one call (two threads: the work is split)."""
    with num_threads(2):
        check_store(path, dtype, 0, patterns().size)


# 0, 1, around every lane count (4, 8, 16 floats; 32 for 16-bit data in a 512-bit register),
# around 512 and 1024 (block sizes a kernel may tile by), odd large, and past the 2 * 2**14
# elements from which a call is split across threads (split points inside the array).
TAIL_SIZES = (0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 127, 129, 511, 512,
              513, 1023, 1024, 1025, 4099, 32_769, 70_001)


@pytest.mark.parametrize("dtype", NARROW)
@pytest.mark.parametrize("path", PATHS)
def test_round_to_nearest_tails(path: str, dtype: np.dtype) -> None:
    """Every size of TAIL_SIZES on every ISA level with 1 and 2 threads, each on another
    window of the patterns, nothing written past the end."""
    total = patterns().size
    for isa in ISAS:
        with gdfast.use_isa(isa):
            for threads in (1, 2):
                with num_threads(threads):
                    for n in TAIL_SIZES:
                        check_store(path, dtype, (n * 7919 + threads) % (total - n), n)


def test_torch_tensors_store_like_numpy() -> None:
    """bfloat16 / float16 torch tensors (through DLPack) are stored bitwise as the NumPy
    arrays are: the master path, on a slice of the patterns."""
    torch = pytest.importorskip("torch")
    x = patterns()[:20_000]
    for dtype, tdtype in ((BF16, torch.bfloat16), (FP16, torch.float16)):
        param = torch.zeros(x.size, dtype=tdtype)
        master = torch.from_numpy(x.copy())
        gdfast.ops.sgd_(param, torch.zeros(x.size), step=1, lr=0.0, master_param=master)
        got = param.view(torch.int16).numpy().view(np.uint16)
        bits, _ = stored_expectation("master", dtype.name)
        np.testing.assert_array_equal(got, bits[:x.size])


# ==================================================================================================
# 2. Every optimizer on 16-bit storage: float32 math, rounded as stored
# ==================================================================================================
class Layout(NamedTuple):
    """Storage dtypes of one call: param, grad, and the states (state k of the rule's
    declaration order gets ``states[k % len(states)]``, so that a mixed layout gives
    neighbouring states different dtypes)."""

    name: str
    param: np.dtype
    grad: np.dtype
    states: Tuple[np.dtype, ...]

    def state(self, case: Case, name: str) -> np.dtype:
        return self.states[RULES[case.name].state_names.index(name) % len(self.states)]

    def __str__(self) -> str:
        return self.name


LAYOUTS: Dict[str, Layout] = {lay.name: lay for lay in (
    Layout("bf16", BF16, BF16, (BF16,)),
    Layout("bf16-f32states", BF16, BF16, (F32,)),
    Layout("f32-bf16states", F32, F32, (BF16,)),
    Layout("fp16", FP16, FP16, (FP16,)),
    Layout("fp16-f32grad-f32states", FP16, F32, (F32,)),
    Layout("f32-bf16grad", F32, BF16, (F32,)),
    Layout("bf16-fp16grad-mixedstates", BF16, FP16, (FP16, BF16, F32)),
)}
CASES = ALL_CASES


def float32_then_rounded(case: Case, states: Tuple[np.dtype, ...]) -> bool:
    """Whether a step stores its float32 result rounded, as the references of the round-to-
    nearest and stochastic-rounding tests compute it: not a two-pass rule (LAMB) with narrow
    states, whose pass 1 sums the moments as stored, rounded (tests/test_lamb.py checks that
    bitwise)."""
    return not case.per_tensor or all(s == F32 for s in states)


def crossed(case_params: List[Any], layout_params: List[Any],
            states: Optional[Callable[[Any], Tuple[np.dtype, ...]]] = None) -> List[Any]:
    """Two lists of pytest.params crossed (ids joined as stacked parametrize decorators join
    them); with `states`, without the pairs float32_then_rounded excludes."""
    return [pytest.param(*c.values, *lay.values, id=f"{c.id}-{lay.id}")
            for lay in layout_params for c in case_params
            if states is None or float32_then_rounded(c.values[0], states(lay.values))]
CASE_VARIANTS = [pytest.param(case, variant, id=f"{case.name}-{variant.name}")
                 for case in CASES for variant in case.variants]
# One variant per rule using all its states (the variant tests/cases.py runs at 1e6)
CASE_ALL = [pytest.param(case, case.variant(case.large_variants[0]), id=case.name)
            for case in CASES]

# Step 1 makes the states; 10: RAdam's rectified branch (steps 1-5 are not), bias corrections
# away from their first values; the step count is an argument, so a trajectory may jump.
STEP_SEQUENCE = (1, 2, 3, 10)
TRAJECTORY_SIZE = 2053


def start_arrays(case: Case, hyper: Mapping[str, Any], layout: Layout, n: int,
                 seed: int = 0) -> Tuple[np.ndarray, Dict[str, np.ndarray]]:
    """The param (standard normal, stored) and the states at their starts (NaN where the
    first step must overwrite them), stored as the layout says."""
    param = pr.round_nearest(cases.initial_param(n, np.float32, seed), layout.param)
    states = {}
    for name in case.state_names(hyper):
        fill = np.nan if name in case.written_first else case.start(name, hyper)
        states[name] = pr.round_nearest(np.full(n, fill, np.float32), layout.state(case, name))
    return param, states


def grad_at(n: int, t: int, dtype: np.dtype, seed: int = 0) -> np.ndarray:
    return pr.round_nearest(cases.gradient(n, np.float32, t, seed), dtype)


def widened(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32)


def op_step(case: Case, param: Any, grad: Any, states: Mapping[str, Any], t: int,
            hyper: Mapping[str, Any], scalars: Dict[str, float],
            inputs: Optional[Mapping[str, Any]] = None, **precision: Any) -> None:
    """``inputs``: the extra inputs (Sophia's hessian); by default Case.inputs_at(grad)."""
    inputs = case.inputs_at(grad, t) if inputs is None else inputs
    result = getattr(gdfast.ops, case.op)(param, grad, **inputs, **states,
                                          step=t, **hyper, **scalars, **precision)
    if result is not None:
        scalars.update(result)


def widened_inputs(case: Case, grad: Any, t: int) -> Dict[str, Any]:
    """The extra inputs the kernel reads with a stored gradient, widened to float32."""
    return {k: ([widened(x) for x in v] if isinstance(v, list) else widened(v))
            for k, v in case.inputs_at(grad, t).items()}


def float32_step(case: Case, hyper: Mapping[str, Any], t: int, p: np.ndarray, g: np.ndarray,
                 states: Mapping[str, np.ndarray], scalars: Mapping[str, float],
                 inputs: Mapping[str, np.ndarray]) -> Tuple[np.ndarray, Dict[str, np.ndarray],
                                                            Dict[str, float]]:
    """gdfast's documented float32 operation order (tests/reference.py SAME_ORDER, which
    test_rules holds bitwise to gdfast's float32 kernels) on copies of the widened inputs."""
    p = p.copy()
    s = {k: v.copy() for k, v in states.items()}
    with np.errstate(all="ignore"):
        out = reference.SAME_ORDER[case.name](p, g, s, step=t, **hyper, **scalars, **inputs)
    return p, s, dict(scalars, **(out or {}))


def float64_step(case: Case, hyper: Mapping[str, Any], t: int, p: np.ndarray, g: np.ndarray,
                 states: Mapping[str, np.ndarray], scalars: Mapping[str, float],
                 inputs: Mapping[str, np.ndarray]) -> cases.ReferenceRun:
    """The float64 reference (reference.STEPS) for step t from the given (widened, stored)
    inputs, with tests/cases.py's bound on a float32 computation of the same step: a
    ReferenceRun set to step t - 1 with these states. Its bounds then hold for one step from
    exact inputs, overestimated by the factor t they carry for t steps' roundings."""
    run = cases.ReferenceRun(case, hyper, p.astype(np.float64), U32)
    state: Dict[str, Any] = {k: v.astype(np.float64) for k, v in states.items()
                             if not (t == 1 and k in case.written_first)}
    state.update(scalars)
    if case.step == "counted":
        state["step"] = t - 1
    run.state, run.t = state, t - 1
    with np.errstate(all="ignore"):
        run.step(g.astype(np.float64), inputs)
    return run


class Tally(NamedTuple):
    compared: int  # elements of 16-bit stores compared
    undetermined: int  # ... whose window straddles a rounding boundary
    off: int  # ... stored one ulp from the float64 value's nearest
    wide: int  # ... whose window spans more than one ulp (cancellation), Lion's signs aside


def check_against_float64(what: str, got: np.ndarray, ref: np.ndarray, bound: np.ndarray,
                          exempt: np.ndarray, finite_inputs: np.ndarray) -> Tally:
    """got (as stored) is the float64 value ``ref`` rounded to got's format, up to the float32
    computation's error: got lies in [round(ref - bound), round(ref + bound)] (rounding is
    monotone, so that is every value a float32 result within the bound can round to). For
    16-bit formats that interval mostly spans at most one ulp (the bound is ~1e-6 relative
    to the operands, a bfloat16 ulp 2**-8 relative to the result): ``wide`` counts where it
    does not (a result much smaller than its operands), Lion's ambiguous signs (``exempt``)
    aside. Only elements whose inputs are all finite are compared: the bound of one with a
    NaN input is NaN (RMSprop's centered variance, v - g_avg**2, can turn negative once both
    are rounded to float16; its sqrt is NaN in every precision), and the exact check above
    covers those."""
    keep = finite_inputs
    got, ref, bound, exempt = got[keep], ref[keep], bound[keep], exempt[keep]
    dtype = got.dtype
    with np.errstate(all="ignore"):
        lo, hi = pr.round_f64(ref - bound, dtype), pr.round_f64(ref + bound, dtype)
        near = pr.round_f64(ref, dtype)
        value = got.astype(np.float64)
    nan = np.isnan(ref) | np.isnan(bound)
    ok = np.where(nan, np.isnan(value), (lo <= value) & (value <= hi))
    if not ok.all():
        i = np.flatnonzero(~ok)[0]
        raise AssertionError(f"{what}: {np.count_nonzero(~ok)} of {ok.size} elements off; "
                             f"first [{i}]: got {value[i]!r}, float64 {ref[i]!r} "
                             f"+- {bound[i]:.3g} rounds to [{lo[i]!r}, {hi[i]!r}]")
    if dtype.itemsize != 2:
        return Tally(0, 0, 0, 0)
    finite = ~nan & np.isfinite(lo) & np.isfinite(hi)
    with np.errstate(all="ignore"):
        span = pr.ulp_distance(lo[finite].astype(dtype), hi[finite].astype(dtype))
    wide = int(np.count_nonzero((span > 1) & ~exempt[finite]))
    undetermined = int(np.count_nonzero(lo[~nan] != hi[~nan]))
    off = int(np.count_nonzero((value != near) & ~nan))
    return Tally(int(np.count_nonzero(~nan)), undetermined, off, wide)


# A 16-bit store may differ from the float64 value's nearest only where that value lies
# within the float32 computation's bound (tests/cases.py's Tolerance for float32: a few
# 2**-23 of the operands per step, times the step) of a rounding boundary: the fraction of
# such elements is about bound / ulp. Measured over every variant and layout (9.7M 16-bit
# stores compared): 0.06% one ulp off in all, at most 0.52% in one test (Adamax, float16
# exp_avg); windows straddling a boundary 0.9%. 2% fails only if gdfast rounds wrongly
# (then about half the elements would be off) or the windows grow far wider than they are.
RARE_OFF = 0.02
# How often the window spans more than one ulp (the check then says less than "1 ulp"):
# measured at most 4.7% (SGD with dampening=1, where the buffer decays by 0.5 a step while
# the model's envelope keeps |g|, which no longer enters), elsewhere at most 1.2%.
RARE_WIDE = 0.10


@pytest.mark.parametrize(("case", "variant", "layout"), crossed(
    CASE_VARIANTS, [pytest.param(lay, id=name) for name, lay in LAYOUTS.items()],
    lambda values: values[0].states))
def test_steps_round_the_float32_result_to_nearest(case: Case, variant: Variant,
                                                   layout: Layout) -> None:
    """Along STEP_SEQUENCE, each step from the stored arrays:
    (a) exactly: every written array == its float32 value in gdfast's operation order, from
        the widened stored inputs, rounded to nearest even as stored;
    (b) independently: within one storage ulp of the float64 reference from the same inputs
        (see check_against_float64), and such differences rare."""
    hyper = case.hyper(variant)
    n = TRAJECTORY_SIZE
    param, states = start_arrays(case, hyper, layout, n)
    scalars: Dict[str, float] = {}
    total = [0, 0, 0, 0]
    for t in STEP_SEQUENCE:
        grad = grad_at(n, t, layout.grad)
        p_in, g_in = widened(param), widened(grad)
        s_in = {k: widened(v) for k, v in states.items()}
        sc_in = dict(scalars)
        op_step(case, param, grad, states, t, hyper, scalars)
        h_in = widened_inputs(case, grad, t)
        p32, s32, sc32 = float32_step(case, hyper, t, p_in, g_in, s_in, sc_in, h_in)
        assert_bits(f"step {t}: param", param, pr.nearest_bits(p32, layout.param))
        for name, arr in states.items():
            assert_bits(f"step {t}: {name}", arr, pr.nearest_bits(s32[name], arr.dtype))
        assert scalars == {k: v for k, v in sc32.items() if k in case.scalars}
        run = float64_step(case, hyper, t, p_in, g_in, s_in, sc_in, h_in)
        exempt = run.ambiguous > 0
        finite = np.isfinite(p_in) & np.isfinite(g_in)
        for name, value in s_in.items():
            if not (t == 1 and name in case.written_first):
                finite &= np.isfinite(value)
        tallies = [check_against_float64(f"step {t}: param", param, run.p, run.param_bound(),
                                         exempt, finite)]
        for name, arr in states.items():
            tallies.append(check_against_float64(f"step {t}: {name}", arr, run.state[name],
                                                 run.state_bound(name), exempt, finite))
        for tally in tallies:
            total = [a + b for a, b in zip(total, tally)]
    compared, undetermined, off, wide = total
    assert off <= undetermined
    assert off <= RARE_OFF * compared, f"{off} of {compared} 16-bit stores one ulp off"
    assert wide <= RARE_WIDE * compared, f"{wide} of {compared} windows wider than one ulp"


# -- bitwise the same on every ISA level and thread count ---------------------------------------
LIST_SIZES = (33, 0, 40_001, 1_000, 7)  # > 2 * 2**14 in all: split across threads mid-tensor
MODES = ("nearest", "stochastic", "master")


def mode_layouts() -> List[Any]:
    return [pytest.param(lay, mode, id=f"{name}-{mode}") for name, lay in LAYOUTS.items()
            for mode in MODES if not (mode == "master" and lay.param == F32)]


def precision_kwargs(mode: str, masters: Optional[List[np.ndarray]]) -> Dict[str, Any]:
    if mode == "stochastic":
        return {"stochastic_rounding": True, "seed": 0x0123456789ABCDEF}
    if mode == "master":
        return {"master_param": masters}
    return {}


@pytest.mark.parametrize(("case", "variant", "layout", "mode"),
                         crossed(CASE_ALL, mode_layouts()))
def test_bitwise_same_on_every_isa_and_thread_count(case: Case, variant: Variant,
                                                    layout: Layout, mode: str) -> None:
    """A list of tensors, two steps, on every ISA level with 1 and 2 threads: every written
    array bitwise equal to the first run's."""
    hyper = case.hyper(variant)
    starts = [start_arrays(case, hyper, layout, n, seed=k) for k, n in enumerate(LIST_SIZES)]
    masters0 = [cases.initial_param(n, np.float32, k) for k, n in enumerate(LIST_SIZES)]
    grads = {t: [grad_at(n, t, layout.grad, seed=k) for k, n in enumerate(LIST_SIZES)]
             for t in (1, 2)}
    first: Optional[List[np.ndarray]] = None
    for isa in ISAS:
        for threads in (1, 2):
            params = [p.copy() for p, _ in starts]
            states = {name: [s[name].copy() for _, s in starts] for name in starts[0][1]}
            masters = [m.copy() for m in masters0] if mode == "master" else None
            scalars: Dict[str, float] = {}
            with gdfast.use_isa(isa), num_threads(threads):
                for t in (1, 2):
                    op_step(case, params, grads[t], states, t, hyper, scalars,
                            **precision_kwargs(mode, masters))
            written = params + [a for v in states.values() for a in v] + (masters or [])
            if first is None:
                first = written
                continue
            for k, (a, b) in enumerate(zip(written, first)):
                assert_same(f"isa={isa} threads={threads}: array {k}", a, b)


# ==================================================================================================
# 3. float32 master weights
# ==================================================================================================
MASTER_SIZES = (1031, 17)


@pytest.mark.parametrize("dtype", NARROW)
@pytest.mark.parametrize(("case", "variant", "state_dtype"), crossed(
    CASE_ALL, [pytest.param(F32, id="f32states"), pytest.param(BF16, id="bf16states")]))
def test_master_follows_the_float32_trajectory(case: Case, variant: Variant, dtype: np.dtype,
                                               state_dtype: np.dtype) -> None:
    """A list of 16-bit params with float32 masters, stepped along STEP_SEQUENCE with 16-bit
    gradients: each master bitwise equal to a float32 param stepped by the same op with the
    widened gradients and states of the same dtypes (states and scalar states equal too);
    each param == RNE(master). The param is overwritten with NaN before some steps: the step
    reads the master, never the param."""
    hyper = case.hyper(variant)
    layout = Layout("master", dtype, dtype, (state_dtype,))
    masters = [cases.initial_param(n, np.float32, k) for k, n in enumerate(MASTER_SIZES)]
    params = [pr.round_nearest(m, dtype) for m in masters]
    f32_params = [m.copy() for m in masters]
    states = [start_arrays(case, hyper, layout, n, seed=k)[1] for k, n in enumerate(MASTER_SIZES)]
    f32_states = [{k: v.copy() for k, v in s.items()} for s in states]
    names = list(states[0])
    scalars: Dict[str, float] = {}
    f32_scalars: Dict[str, float] = {}
    for t in STEP_SEQUENCE:
        grads = [grad_at(n, t, dtype, seed=k) for k, n in enumerate(MASTER_SIZES)]
        if t % 2 == 0:
            for p in params:
                p[...] = np.nan
        op_step(case, params, grads, {n: [s[n] for s in states] for n in names}, t, hyper,
                scalars, master_param=masters)
        op_step(case, f32_params, [widened(g) for g in grads],
                {n: [s[n] for s in f32_states] for n in names}, t, hyper, f32_scalars,
                inputs=widened_inputs(case, grads, t))
        assert scalars == f32_scalars
        for k in range(len(MASTER_SIZES)):
            where = f"step {t}, tensor {k}"
            assert_same(f"{where}: master_param", masters[k], f32_params[k])
            assert_bits(f"{where}: param", params[k], pr.nearest_bits(masters[k], dtype))
            for name in names:
                assert_same(f"{where}: {name}", states[k][name], f32_states[k][name])


# ==================================================================================================
# 4. Stochastic rounding
# ==================================================================================================
SR_LAYOUTS = [pytest.param(LAYOUTS[name], id=name) for name in
              ("bf16", "fp16", "f32-bf16states", "bf16-f32states", "bf16-fp16grad-mixedstates")]
SR_SIZES = (1, 33, 0, 1031)
# Roles count every declared state, used or not: RMSprop centered without momentum writes
# grad_avg (role 3) while momentum_buffer (role 2) is unused.
SR_CASES = CASE_ALL + [pytest.param(cases.RMSPROP, cases.RMSPROP.variant("centered"),
                                    id="rmsprop-centered")]
SR_KEYS = [
    pytest.param(0, None, id="seed=0-positions"),
    pytest.param(2**64 - 1, [7, 0, 3, 12345], id="seed=max-indices"),
    pytest.param(1234567, [2**40, 1, 2, 3], id="seed=1234567-large-index"),
]


def stochastic_expectation(x: np.ndarray, dtype: np.dtype, *, seed: int, step: int,
                           param_index: int, role: int) -> np.ndarray:
    """The bits a stochastic store of float32 x writes (float32: x's own bits)."""
    if dtype == F32:
        return pr.f32_bits(x)
    h = pr.element_hashes(x.size, seed, step, param_index, role)
    return pr.stochastic_bits(x, h, dtype)


@pytest.mark.parametrize(("seed", "param_index"), SR_KEYS)
@pytest.mark.parametrize(("case", "variant", "layout"),
                         crossed(SR_CASES, SR_LAYOUTS, lambda values: values[0].states))
def test_stochastic_rounding_is_the_specified_generator(case: Case, variant: Variant,
                                                         layout: Layout, seed: int,
                                                         param_index: Optional[List[int]]) -> None:
    """A list of tensors along STEP_SEQUENCE with stochastic_rounding: every 16-bit store
    bitwise the float32 result in gdfast's operation order rounded with the spec's
    generator, keyed by seed, step (the op's argument, Lion's too), param_index (default:
    list position) and role (0: param, 1 + k: state k of the declaration); float32 arrays as
    computed."""
    hyper = case.hyper(variant)
    starts = [start_arrays(case, hyper, layout, n, seed=k) for k, n in enumerate(SR_SIZES)]
    params = [p for p, _ in starts]
    states = [s for _, s in starts]
    names = list(states[0])
    indices = param_index if param_index is not None else list(range(len(SR_SIZES)))
    keywords: Dict[str, Any] = {"stochastic_rounding": True, "seed": seed}
    if param_index is not None:
        keywords["param_index"] = param_index
    scalars: Dict[str, float] = {}
    for t in STEP_SEQUENCE:
        grads = [grad_at(n, t, layout.grad, seed=k) for k, n in enumerate(SR_SIZES)]
        inputs = [(widened(p), widened(g), {k: widened(v) for k, v in s.items()})
                  for p, g, s in zip(params, grads, states)]
        sc_in = dict(scalars)
        op_step(case, params, grads, {n: [s[n] for s in states] for n in names}, t, hyper,
                scalars, **keywords)
        for k, (p_in, g_in, s_in) in enumerate(inputs):
            p32, s32, sc32 = float32_step(case, hyper, t, p_in, g_in, s_in, sc_in,
                                          widened_inputs(case, grads[k], t))
            key = dict(seed=seed, step=t, param_index=indices[k])
            where = f"step {t}, tensor {k}"
            assert_bits(f"{where}: param", params[k],
                        stochastic_expectation(p32, layout.param, role=0, **key))
            for name in names:
                role = 1 + RULES[case.name].state_names.index(name)
                assert_bits(f"{where}: {name}", states[k][name],
                            stochastic_expectation(s32[name], states[k][name].dtype, role=role,
                                                   **key))
        assert scalars == {k: v for k, v in sc32.items() if k in case.scalars}


def sr_store(dtype: np.dtype, x: np.ndarray, *, seed: int = 1, step: int = 1,
             param_index: Any = None) -> np.ndarray:
    """x stored stochastically into a 16-bit param (SGD, lr = 1 from -0: the value -(-x))."""
    param = pr.round_nearest(np.full(x.size, -0.0, np.float32), dtype)
    extra = {} if param_index is None else {"param_index": param_index}
    gdfast.ops.sgd_(param, -x, step=step, lr=1.0, stochastic_rounding=True, seed=seed, **extra)
    return param


@pytest.mark.parametrize("dtype", NARROW)
def test_stochastic_rounding_single_tensor_key(dtype: np.dtype) -> None:
    """One array: param_index defaults to 0 and may be an int; each element is keyed by its
    flat index in the tensor wherever a thread's range starts (70_001 elements, 2 threads),
    on every ISA level."""
    x = patterns()[:70_001]
    x = np.where(np.isnan(x), np.float32(1.0), x)  # NaN: -(-x) may change its sign bit
    for index in (None, 5, 2**63):
        expected = stochastic_expectation(x, dtype, seed=77, step=3, role=0,
                                          param_index=0 if index is None else index)
        for isa in ISAS:
            with gdfast.use_isa(isa), num_threads(2):
                got = sr_store(dtype, x, seed=77, step=3, param_index=index)
            assert_bits(f"isa={isa} param_index={index}", got, expected)


# Unbiasedness. N values x strictly between two neighbours a < b of the format round up with
# probability q = (x - a) / (b - a) (exact by the spec for a uniform hash: q = low bits /
# 2**16 for bfloat16, / 2**13 for float16 normals, / 2**shift for subnormals). The count of
# round-ups K ~ Binomial(N, q); the test requires |K - Nq| <= 5.5 sqrt(Nq(1-q)): for a fair
# generator a two-sided normal tail of 3.8e-8 per check, 15 checks: false failure < 1e-6.
# (The generator is deterministic: this is a property of the seeds and hash, fixed here.)
Z_LIMIT = 5.5
UNBIASED_N = 1 << 18
UNBIASED_STEPS = 4  # each step its own key: N * 4 samples per value


def unbiased_values(dtype: np.dtype) -> List[float]:
    """float32 values between two neighbours of the format (q as a fraction of an ulp)."""
    if dtype == BF16:  # ulp of [1, 2): 2**-7, low 16 bits of the float32 set q
        return [1 + 2.0**-7 * q for q in (0.5, 21845 / 65536, 655 / 65536)] + \
               [-(3 + 2.0**-6 * 0.75), 2.0**-133 * 5.3]  # negative; a subnormal
    return [1 + 2.0**-10 * q for q in (0.5, 2731 / 8192, 82 / 8192)] + \
           [-(3 + 2.0**-9 * 0.75), 2.0**-24 * 5.3]  # negative; a float16 subnormal


@pytest.mark.parametrize("dtype", NARROW)
def test_stochastic_rounding_is_unbiased(dtype: np.dtype) -> None:
    for value in unbiased_values(dtype):
        x = np.full(UNBIASED_N, value, np.float32)
        xv = float(x[0])
        a = float(pr.round_f64(xv, dtype))
        if abs(a) > abs(xv):  # a: the neighbour towards zero
            a = float(np.nextafter(np.array(a, dtype=dtype), np.array(0, dtype=dtype)))
        ups, samples = 0, 0
        for t in range(1, UNBIASED_STEPS + 1):
            got = sr_store(dtype, x, seed=42, step=t).astype(np.float64)
            assert np.all((np.abs(got) == abs(a)) | (np.abs(got) > abs(xv))), "not a neighbour"
            b = float(np.max(np.abs(got)))
            assert np.all((np.abs(got) == abs(a)) | (np.abs(got) == b))
            ups += int(np.count_nonzero(np.abs(got) > abs(xv)))
            samples += got.size
        b_exact = float(np.nextafter(np.array(abs(a), dtype=dtype), np.array(np.inf, dtype=dtype)))
        q = (abs(xv) - abs(a)) / (b_exact - abs(a))
        z = (ups - samples * q) / math.sqrt(samples * q * (1 - q))
        assert abs(z) <= Z_LIMIT, f"x={xv!r}: {ups} of {samples} up, expected q={q:.6f}, z={z:.2f}"
        # the mean stored value is x within the same 5.5 standard errors
        mean = abs(a) + (b_exact - abs(a)) * ups / samples
        se = (b_exact - abs(a)) * math.sqrt(q * (1 - q) / samples)
        assert abs(mean - abs(xv)) <= Z_LIMIT * se


# Convergence. SGD on f(p) = |p|^2 / 2 (gradient p) from p in [1, 2) with a step lr * p below
# half an ulp everywhere on the way down (bfloat16: lr = 1e-3 < 2**-9 relative; float16:
# lr = 2e-4 < 2**-12): round to nearest never moves p; stochastic rounding moves it by lr * p
# per step in expectation, so the loss falls like (1 - lr)**(2T) as in float32: after T steps
# e**-1.2 = 0.30 of its start. The stochastic loss stays within 5% of the float32 run's (its
# rounding noise averages over the 1024 elements: relative spread ~ ulp / sqrt(N) << 5%).
CONVERGENCE = {"bfloat16": (1e-3, 600), "float16": (2e-4, 3000)}


@pytest.mark.parametrize("dtype", NARROW)
def test_stochastic_rounding_descends_where_nearest_stalls(dtype: np.dtype) -> None:
    lr, steps = CONVERGENCE[dtype.name]
    rng = np.random.default_rng(5)
    start = pr.round_nearest(rng.uniform(1.0, 2.0, 1024).astype(np.float32), dtype)
    nearest, stochastic, f32 = start.copy(), start.copy(), widened(start)
    for t in range(1, steps + 1):
        gdfast.ops.sgd_(nearest, widened(nearest), step=t, lr=lr)
        gdfast.ops.sgd_(stochastic, widened(stochastic), step=t, lr=lr, stochastic_rounding=True,
                        seed=11)
        gdfast.ops.sgd_(f32, f32.copy(), step=t, lr=lr)
    assert_same("round to nearest", nearest, start)  # stalls: not one bit moved

    def loss(p: np.ndarray) -> float:
        return 0.5 * float(np.sum(p.astype(np.float64) ** 2))

    ratio_f32 = loss(f32) / loss(start)
    ratio_sr = loss(stochastic) / loss(start)
    assert abs(ratio_f32 - math.exp(-1.2)) < 0.01
    assert abs(ratio_sr / ratio_f32 - 1) < 0.05, (ratio_sr, ratio_f32)


@pytest.mark.parametrize("dtype", NARROW)
def test_stochastic_rounding_is_seeded(dtype: np.dtype) -> None:
    """The same key gives the same bits; another seed, step or param_index other bits (a
    value half an ulp between neighbours: about half the elements differ between two keys;
    at least a third is required, a 10-sigma margin at N = 4096)."""
    x = np.full(4096, 1 + 2.0**-8 if dtype == BF16 else 1 + 2.0**-11, np.float32)
    base = sr_store(dtype, x, seed=3, step=2, param_index=1)
    assert_same("same key", sr_store(dtype, x, seed=3, step=2, param_index=1), base)
    for change in ({"seed": 4}, {"step": 3}, {"param_index": 2}):
        key = {"seed": 3, "step": 2, "param_index": 1, **change}
        differ = np.count_nonzero(pr.storage_bits(sr_store(dtype, x, **key)) !=
                                  pr.storage_bits(base))
        assert differ > x.size // 3, f"{change}: only {differ} elements differ"


@pytest.mark.parametrize("dtype", NARROW)
def test_stochastic_rounding_keeps_non_finite(dtype: np.dtype) -> None:
    """NaN stays NaN (bfloat16 0x7FC0), +-Inf stays +-Inf, representable values exactly, and
    values above the largest finite one round to it or to Inf."""
    big = 3.39e38 if dtype == BF16 else 65510.0  # above the largest finite, below 2**128/2**16
    x = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1.0, -2.5, big, -big] * 300, np.float32)
    got = sr_store(dtype, x)
    value = got.astype(np.float64)
    assert np.all(np.isnan(value[0::9]))
    if dtype == BF16:
        assert np.all(pr.storage_bits(got)[0::9] == 0x7FC0)
    np.testing.assert_array_equal(value[1::9], np.inf)
    np.testing.assert_array_equal(value[2::9], -np.inf)
    np.testing.assert_array_equal(value[3::9], 0.0)
    np.testing.assert_array_equal(np.signbit(value[4::9]), True)
    np.testing.assert_array_equal(value[5::9], 1.0)
    np.testing.assert_array_equal(value[6::9], -2.5)
    top = float(pr.FORMATS[dtype.name].max)
    assert set(np.unique(value[7::9])) == {top, np.inf}  # both occur among 300 draws
    assert set(np.unique(value[8::9])) == {-top, -np.inf}


def test_stochastic_rounding_leaves_float32_alone() -> None:
    """Only 16-bit stores round stochastically: an all-float32 call is bitwise the same with
    and without stochastic_rounding."""
    rng = np.random.default_rng(8)
    p, g = rng.standard_normal((2, 1000)).astype(np.float32)
    m, v = np.zeros((2, 1000), np.float32)
    arrays = [p.copy(), g, m.copy(), v.copy()]
    gdfast.ops.adam_(*arrays, step=1, lr=0.01)
    sr = [p.copy(), g, m.copy(), v.copy()]
    gdfast.ops.adam_(*sr, step=1, lr=0.01, stochastic_rounding=True, seed=5)
    for a, b in zip(arrays, sr):
        assert_same("float32 with stochastic_rounding", b, a)


def lion_moves() -> np.ndarray:
    """Per element, the fraction of 64 Lion steps (lr a tenth of a bfloat16 ulp, the
    gradient's sign fixed, no decay) on which the bfloat16 param moved."""
    p = np.full(2048, 1.0 + 2.0**-6, np.float32).astype(BF16)  # ulp 2**-7 in [1, 2)
    m = np.zeros(2048, BF16)
    moved = np.zeros(2048)
    for t in range(1, 65):
        before = p.copy()
        gdfast.ops.lion_(p, np.ones(2048, np.float32), m, step=t, lr=2.0**-7 / 10,
                         stochastic_rounding=True, seed=9)
        moved += pr.storage_bits(p) != pr.storage_bits(before)
    return moved / 64


def test_stochastic_rounding_draws_afresh_each_step_for_lion() -> None:
    """Lion keeps no count, but its op's step keys the rounding all the same: with fresh noise
    each step an element moves on ~1/10 of the 64 steps; it never moves with probability
    0.9**64 = 1.2e-3 and always with 1e-64. With the same draw every step (a key that does
    not change) an element either always moves or never does. At most 5% of the elements may
    look like that (expected 0.12% of 2048)."""
    frac = lion_moves()
    assert np.count_nonzero((frac == 0) | (frac == 1)) <= 0.05 * frac.size


# ==================================================================================================
# 5. Bad input: the new keywords and dtype pairs
# ==================================================================================================
N_BAD = 8


def bad_arrays() -> Dict[str, Any]:
    """Adam on a bfloat16 param with float32 master and states, bfloat16 grad (valid)."""
    rng = np.random.default_rng(0)
    master = rng.standard_normal(N_BAD).astype(np.float32)
    return {"param": master.astype(BF16), "grad": rng.standard_normal(N_BAD).astype(BF16),
            "exp_avg": np.zeros(N_BAD, np.float32), "exp_avg_sq": np.zeros(N_BAD, np.float32),
            "master_param": master}


def overlapping(kind: str) -> Dict[str, Any]:
    """bad_arrays with master_param sharing memory with another argument."""
    arrays = bad_arrays()
    if kind == "param":  # the bfloat16 param is the first half of the master's bytes
        raw = np.zeros(4 * N_BAD, np.uint8)
        arrays["master_param"] = raw.view(np.float32)
        arrays["param"] = raw[:2 * N_BAD].view(BF16)
    elif kind == "exp_avg":
        arrays["master_param"] = arrays["exp_avg"]
    else:  # the grad, as float32 (a valid dtype for it)
        arrays["grad"] = arrays["master_param"]
    return arrays


def changed(**change: Any) -> Callable[[], Dict[str, Any]]:
    """A builder of bad_arrays with some arguments replaced (None: left out)."""
    def build() -> Dict[str, Any]:
        arrays = bad_arrays()
        arrays.update({k: (v() if callable(v) else v) for k, v in change.items()})
        return arrays
    return build


def read_only() -> np.ndarray:
    out = np.zeros(N_BAD, np.float32)
    out.flags.writeable = False
    return out


def float64_arrays(**change: Any) -> Callable[[], Dict[str, Any]]:
    def build() -> Dict[str, Any]:
        arrays = {k: np.zeros(N_BAD) for k in ("param", "grad", "exp_avg", "exp_avg_sq")}
        arrays.update({k: v() for k, v in change.items()})
        return arrays
    return build


def zeros(dtype: Any, n: int = N_BAD) -> Callable[[], np.ndarray]:
    return lambda: np.zeros(n, dtype)


NO_MASTER: Dict[str, Any] = {"master_param": None}
SR: Dict[str, Any] = {"stochastic_rounding": True}
# (id, builder of the arrays, other keywords, error, message pattern). Every gdfast message
# names the argument first (README "Bad input"); the patterns ask for that name, and for the
# other argument where the error is about a pair.
BAD_CALLS: List[Tuple[str, Callable[[], Dict[str, Any]], Dict[str, Any], Any, str]] = [
    ("master with a float32 param", changed(param=zeros(np.float32)), {}, ValueError,
     r"^master_param: .*for a bfloat16 or float16 param"),
    ("master with a float64 param", float64_arrays(master_param=zeros(np.float32)), {},
     (TypeError, ValueError), r"^master_param"),
    ("bfloat16 master", changed(master_param=zeros(BF16)), {}, TypeError,
     r"^master_param: .*float32"),
    ("float64 master", changed(master_param=zeros(np.float64)), {}, TypeError,
     r"^master_param: .*float32"),
    ("master of another shape", changed(master_param=zeros(np.float32, N_BAD + 1)), {},
     ValueError, r"^master_param: .*shape"),
    ("read-only master", changed(master_param=read_only), {}, ValueError,
     r"^master_param: .*read-only"),
    ("strided master", changed(master_param=lambda: np.zeros(2 * N_BAD, np.float32)[::2]), {},
     ValueError, r"^master_param: .*contiguous"),
    ("master list for a single param",
     changed(master_param=lambda: [np.zeros(N_BAD, np.float32)]), {}, TypeError,
     r"^master_param"),
    ("master overlaps param", lambda: overlapping("param"), {}, ValueError,
     r"^(param and master_param|master_param and param)"),
    ("master overlaps a state", lambda: overlapping("exp_avg"), {}, ValueError,
     r"master_param.*exp_avg|exp_avg.*master_param"),
    ("master overlaps grad", lambda: overlapping("grad"), {}, ValueError,
     r"master_param.*grad|grad.*master_param"),
    ("stochastic rounding with master", changed(), SR, ValueError,
     r"stochastic_rounding.*master_param|master_param.*stochastic_rounding"),
    ("stochastic_rounding not a bool", changed(**NO_MASTER), {"stochastic_rounding": "yes"},
     TypeError, r"^stochastic_rounding"),
    ("seed -1", changed(**NO_MASTER), {**SR, "seed": -1}, ValueError, r"^seed"),
    ("seed 2**64", changed(**NO_MASTER), {**SR, "seed": 2**64}, ValueError, r"^seed"),
    ("seed a float", changed(**NO_MASTER), {**SR, "seed": 1.5}, TypeError, r"^seed"),
    ("seed a str", changed(**NO_MASTER), {**SR, "seed": "1"}, TypeError, r"^seed"),
    ("param_index a float", changed(**NO_MASTER), {**SR, "param_index": 1.5}, TypeError,
     r"^param_index"),
    ("param_index list for one tensor", changed(**NO_MASTER), {**SR, "param_index": [1, 2]},
     ValueError, r"^param_index"),
    ("param_index -1", changed(**NO_MASTER), {**SR, "param_index": -1}, ValueError,
     r"^param_index"),
    ("param_index a bool", changed(**NO_MASTER), {**SR, "param_index": True}, TypeError,
     r"^param_index"),
    ("float64 grad", changed(grad=zeros(np.float64)), {}, TypeError, r"^grad"),
    ("float64 grad, no master", changed(grad=zeros(np.float64), **NO_MASTER), {}, TypeError,
     r"^grad"),
    ("float64 state", changed(exp_avg=zeros(np.float64), **NO_MASTER), {}, TypeError,
     r"^exp_avg"),
    ("bfloat16 grad, float64 param", float64_arrays(grad=zeros(BF16)), {}, TypeError, r"^grad"),
    ("bfloat16 state, float64 param", float64_arrays(exp_avg=zeros(BF16)), {}, TypeError,
     r"^exp_avg"),
    ("int16 param", changed(param=zeros(np.int16), **NO_MASTER), {}, TypeError, r"^param"),
]


@pytest.mark.parametrize("build, extra, error, pattern",
                         [pytest.param(*c[1:], id=c[0]) for c in BAD_CALLS])
def test_bad_precision_arguments_are_named(build: Callable[[], Dict[str, Any]],
                                           extra: Dict[str, Any], error: Any,
                                           pattern: str) -> None:
    arrays = {k: v for k, v in build().items() if v is not None}
    flat = [a for v in arrays.values() for a in (v if isinstance(v, list) else [v])]
    before = [a.tobytes() for a in flat]
    with pytest.raises(error, match=pattern):
        gdfast.ops.adam_(**arrays, step=1, lr=0.1, **extra)
    for k, (a, b) in enumerate(zip(flat, before)):
        assert a.tobytes() == b, f"array {k} written by a rejected call"


def test_stochastic_rounding_needs_a_step_for_lion() -> None:
    """Lion keeps no count, so its op's step is optional, except that it keys stochastic
    rounding: required then."""
    p, g, m = np.ones(4, BF16), np.ones(4, np.float32), np.zeros(4, BF16)
    with pytest.raises(ValueError, match=r"^step"):
        gdfast.ops.lion_(p, g, m, stochastic_rounding=True)
    assert np.all(p == 1) and not m.any()
    gdfast.ops.lion_(p, g, m, lr=0.5)  # without it: no step needed


def test_list_arguments_of_mixed_dtypes_are_named() -> None:
    """One argument's arrays share a dtype; param_index matches the list's length; a master
    list matches the param list."""
    p = [np.zeros(4, BF16), np.zeros(4, BF16)]
    g32 = [np.zeros(4, np.float32), np.zeros(4, np.float32)]
    m = [np.zeros(4, np.float32), np.zeros(4, np.float32)]
    with pytest.raises(TypeError, match=r"^grad\[1\]"):
        gdfast.ops.sgd_(p, [np.zeros(4, np.float32), np.zeros(4, BF16)], step=1)
    with pytest.raises(TypeError, match=r"^param\[1\]"):
        gdfast.ops.sgd_([np.zeros(4, BF16), np.zeros(4, np.float16)], g32, step=1)
    with pytest.raises(ValueError, match=r"^param_index"):
        gdfast.ops.sgd_(p, g32, step=1, stochastic_rounding=True, param_index=[0, 1, 2])
    with pytest.raises(TypeError, match=r"^param_index\[1\]"):
        gdfast.ops.sgd_(p, g32, step=1, stochastic_rounding=True, param_index=[0, "1"])
    with pytest.raises(ValueError, match=r"^param_index\[0\]"):
        gdfast.ops.sgd_(p, g32, step=1, stochastic_rounding=True, param_index=[2**64, 0])
    with pytest.raises(ValueError, match=r"^master_param"):
        gdfast.ops.sgd_(p, g32, step=1, master_param=m[:1])
    with pytest.raises(TypeError, match=r"^master_param"):
        gdfast.ops.sgd_(p, g32, step=1, master_param=m[0])
    assert all(not a.any() for a in p + m)
