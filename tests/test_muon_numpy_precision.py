"""gdfast.Muon's (NumPy) lower precision (README "Muon", "Lower precision"): bfloat16 and float16
params, whose iteration runs in float32 on NumPy's matrix product, and the precision options
state_dtype, master_weights, stochastic_rounding with seed, optim_bits with min_8bit_size.

Each layout is checked bitwise against gdfast.Muon on float32 params with the storage's
rounding applied by hand between steps: the kernels widen what they load, compute in float32
and round what they store, and the iteration reads the same float32 input either way, so no
tolerance is needed."""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional

import numpy as np
import pytest
import quant8_reference as q8

import gdfast

ml_dtypes = pytest.importorskip("ml_dtypes")
BF16 = np.dtype(ml_dtypes.bfloat16)
SHAPES = [(64, 96), (96, 64), (8, 8)]  # (the 8 x 8 matrix stays under min_8bit_size)
STEPS = 3


def _start(dtype: Any, seed: int = 0) -> List[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(np.float32).astype(dtype) for s in SHAPES]


def _grads(dtype: Any, seed: int = 1, steps: int = STEPS) -> List[List[np.ndarray]]:
    """Per step, a float32 gradient per param holding values of ``dtype`` (so that the narrow
    and the float32 runs read the same numbers)."""
    rng = np.random.default_rng(seed)
    return [[rng.standard_normal(s).astype(np.float32).astype(dtype).astype(np.float32)
             for s in SHAPES] for _ in range(steps)]


def _run(params: List[np.ndarray], grads: List[List[np.ndarray]],
         between: Optional[Callable[[Any], None]] = None, opt: Any = None,
         **options: Any) -> Any:
    opt = opt or gdfast.Muon(params, lr=0.02, weight_decay=0.1, **options)
    for step_grads in grads:
        opt.step([g.astype(p.dtype) for p, g in zip(params, step_grads)])
        if between is not None:
            between(opt)
    return opt


def _rounder(dtype: Any, buffers: bool = False) -> Callable[[Any], None]:
    """Rounds a float32 run's params (and buffers) to ``dtype`` to nearest, in place."""
    def round_all(opt: Any) -> None:
        for k, p in enumerate(opt.param_groups[0]["params"]):
            for a in (p, opt.state[k]["momentum_buffer"]) if buffers else (p,):
                a[...] = a.astype(dtype).astype(np.float32)
    return round_all


def test_float32_buffers_of_bfloat16_params() -> None:
    ours = _start(BF16)
    theirs = [p.astype(np.float32) for p in ours]
    grads = _grads(BF16)
    opt = _run(ours, grads, state_dtype=np.float32)
    ref = _run(theirs, grads, _rounder(BF16))
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype == BF16 and np.array_equal(a.astype(np.float32), b), k
        assert opt.state[k]["momentum_buffer"].dtype == np.float32
        assert np.array_equal(opt.state[k]["momentum_buffer"], ref.state[k]["momentum_buffer"])


@pytest.mark.parametrize("dtype", [np.dtype(np.float16), BF16], ids=["float16", "bfloat16"])
def test_narrow_params_keep_buffers_of_their_dtype(dtype: Any) -> None:
    """With no option, a narrow param's buffer has its dtype, as torch keeps it."""
    ours = _start(dtype)
    theirs = [p.astype(np.float32) for p in ours]
    grads = _grads(dtype)
    opt = _run(ours, grads)
    ref = _run(theirs, grads, _rounder(dtype, buffers=True))
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert a.dtype == dtype and np.array_equal(a.astype(np.float32), b), k
        buffer = opt.state[k]["momentum_buffer"]
        assert buffer.dtype == dtype
        assert np.array_equal(buffer.astype(np.float32), ref.state[k]["momentum_buffer"])


def test_master_weights_follow_the_float32_run() -> None:
    ours = _start(BF16)
    theirs = [p.astype(np.float32) for p in ours]
    grads = _grads(BF16)
    opt = _run(ours, grads, master_weights=True)
    _run(theirs, grads)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        master = opt.state[k]["master_param"]
        assert master.dtype == np.float32 and np.array_equal(master, b), k
        assert np.array_equal(a, b.astype(BF16)), k  # (the master rounded to nearest)
        assert opt.state[k]["momentum_buffer"].dtype == np.float32


def test_8bit_buffers_are_the_float32_run_requantized() -> None:
    ours, theirs = _start(np.float32), _start(np.float32)
    grads = _grads(BF16)
    stored: Dict[int, Any] = {}  # (codes, absmax) of each big param's buffer, latest step

    def requantize(ref: Any) -> None:
        for k in range(2):
            buffer = ref.state[k]["momentum_buffer"]
            stored[k] = q8.requantize(buffer.ravel(), True)
            buffer[...] = q8.decode(*stored[k], True).reshape(buffer.shape)

    opt = _run(ours, grads, optim_bits=8)
    _run(theirs, grads, requantize)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert np.array_equal(a, b), k
        state = opt.state[k]
        if k < 2:
            codes, absmax = stored[k]
            assert state["momentum_buffer"].dtype == np.uint8
            assert np.array_equal(state["momentum_buffer"].ravel(), codes)
            assert np.array_equal(state["momentum_buffer_absmax"], absmax)
        else:  # (64 elements < min_8bit_size: float32)
            assert state["momentum_buffer"].dtype == np.float32


def test_stochastic_rounding_is_reproducible_and_moves_small_updates() -> None:
    """The same seed gives the same bits, another seed other bits; an update far below half a
    bfloat16 ulp, which rounding to nearest loses, moves the params on average (the mean
    change has the update's sign)."""
    grads = _grads(BF16)
    runs = [_start(BF16) for _ in range(3)]
    for params, seed in zip(runs, (7, 7, 8)):
        _run(params, grads, stochastic_rounding=True, seed=seed)
    assert all(np.array_equal(a, b) for a, b in zip(runs[0], runs[1]))
    assert not all(np.array_equal(a, b) for a, b in zip(runs[0], runs[2]))

    moved = []
    for options in ({}, {"stochastic_rounding": True, "seed": 3}):
        p = np.ones((64, 96), BF16)
        opt = gdfast.Muon([p], lr=1e-4, weight_decay=0.0, **options)  # (an ulp of 1: 2**-7)
        for _ in range(20):
            opt.step([np.ones_like(p)])
        moved.append(float((p.astype(np.float32) - 1.0).mean()))
    assert moved[0] == 0.0 and moved[1] < 0.0
    assert opt.param_groups[0]["rounding_step"] == 20


def test_adamw_groups_take_the_options_too() -> None:
    """A use_muon=False group of bfloat16 params with master weights: the master follows the
    float32 AdamW group's params bitwise; 8-bit moments for a big 1-D param."""
    rng = np.random.default_rng(4)
    start = [rng.standard_normal(n).astype(np.float32).astype(BF16) for n in (5000, 30)]
    ours = [p.copy() for p in start]
    theirs = [p.astype(np.float32) for p in start]
    eight = [p.astype(np.float32) for p in start]
    opt = gdfast.Muon([dict(params=ours, use_muon=False, master_weights=True)])
    ref = gdfast.Muon([dict(params=theirs, use_muon=False)])
    opt8 = gdfast.Muon([dict(params=eight, use_muon=False, optim_bits=8)])
    for _ in range(STEPS):
        grads = [rng.standard_normal(p.shape).astype(np.float32).astype(BF16) for p in start]
        opt.step(grads)
        ref.step([g.astype(np.float32) for g in grads])
        opt8.step([g.astype(np.float32) for g in grads])
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert np.array_equal(opt.state[k]["master_param"], b)
        assert np.array_equal(a, b.astype(BF16))
    assert opt8.state[0]["exp_avg"].dtype == np.uint8
    assert opt8.state[0]["exp_avg_sq_absmax"].shape == (20,)
    assert opt8.state[1]["exp_avg"].dtype == np.float32


@pytest.mark.parametrize("options", [{"master_weights": True}, {"optim_bits": 8},
                                     {"stochastic_rounding": True, "seed": 5}])
def test_state_dict_round_trip_continues_bitwise(options: Dict[str, Any]) -> None:
    """The master copy, 8-bit codes, the seed and the rounding count survive state_dict and
    load_state_dict with their dtypes: a resumed run continues bit for bit."""
    dtype = np.float32 if "optim_bits" in options else BF16
    grads = _grads(BF16, steps=2 * STEPS)
    straight = _start(dtype)
    _run(straight, grads, **options)
    first = _start(dtype)
    saved = _run(first, grads[:STEPS], **options).state_dict()
    resumed = [p.copy() for p in first]
    opt = gdfast.Muon(resumed, lr=0.02, weight_decay=0.1)  # (the options come with the groups)
    opt.load_state_dict(saved)
    for k in range(len(resumed)):
        for name, value in saved["state"][k].items():
            assert opt.state[k][name].dtype == value.dtype, name
    _run(resumed, grads[STEPS:], opt=opt)
    assert all(np.array_equal(a, b) for a, b in zip(straight, resumed))


def test_a_kept_master_copy_needs_master_weights() -> None:
    p = _start(BF16)[0]
    opt = gdfast.Muon([p], master_weights=True)
    opt.step([np.ones_like(p)])
    opt.param_groups[0]["master_weights"] = False
    kept, state = p.copy(), {k: v.copy() for k, v in opt.state[0].items()}
    with pytest.raises(ValueError, match=r"^grads\[0\]: its param: state\['master_param'\]"):
        opt.step([np.ones_like(p)])
    assert np.array_equal(p, kept)
    assert all(np.array_equal(opt.state[0][k], v) for k, v in state.items())


def test_the_op_on_bfloat16_arrays_is_the_class() -> None:
    """gdfast.ops.muon_ on bfloat16 NumPy arrays with master_param: the class's bits."""
    grads = _grads(BF16)
    params = _start(BF16)
    mine = [p.copy() for p in params]
    opt = _run(params, grads, master_weights=True)
    masters = [p.astype(np.float32) for p in mine]
    buffers = [np.zeros(p.shape, np.float32) for p in mine]
    for step_grads in grads:
        gdfast.ops.muon_(mine, [g.astype(BF16) for g in step_grads], buffers, lr=0.02,
                         weight_decay=0.1, master_param=masters)
    for k, (a, b) in enumerate(zip(params, mine)):
        assert np.array_equal(a, b) and np.array_equal(opt.state[k]["master_param"], masters[k])


@pytest.mark.parametrize("make, error, message", [
    (lambda: gdfast.Muon([np.zeros((4, 4), np.float32)], master_weights=True), ValueError,
     r"^param_groups\[0\]\['params'\]\[0\]: master_weights=True is for bfloat16 and float16"),
    (lambda: gdfast.Muon([np.zeros((4, 4), np.float32)], optim_bits=16), ValueError,
     r"^optim_bits: expected 32 or 8"),
    (lambda: gdfast.Muon([np.zeros((4, 4), np.float32)], state_dtype=np.int8), TypeError,
     r"^state_dtype: expected None or float32"),
    (lambda: gdfast.Muon([np.zeros((100, 100))], optim_bits=8), ValueError,
     r"^param_groups\[0\]\['params'\]\[0\]: optim_bits=8 is for float32, bfloat16 and float16"),
    (lambda: gdfast.Muon([np.zeros((4, 4), BF16)], master_weights=True,
                         stochastic_rounding=True), ValueError, r"choose one"),
    (lambda: gdfast.Muon([dict(params=[np.zeros(4, BF16)], use_muon=False, seed=-1,
                               stochastic_rounding=True)]), ValueError,
     r"^param_groups\[0\]\.seed: expected None or an int"),
])
def test_bad_precision_options_are_named(make: Any, error: Any, message: str) -> None:
    with pytest.raises(error, match=message):
        make()


@pytest.mark.parametrize("options", [{"master_weights": True, "state_dtype": "bfloat16"},
                                     {"optim_bits": 8}])
def test_a_torch_muon_state_dict_loads_as_it_is_kept(options: Dict[str, Any]) -> None:
    """gdfast.torch.Muon's state_dict (torch tensors, torch dtypes among the options) loads
    into gdfast.Muon with the master copy, the buffer's dtype and the 8-bit codes and maxima
    kept bit for bit, and the loaded optimizer steps."""
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    dtype = np.float32 if "optim_bits" in options else BF16
    start = _start(dtype)
    tensors = [torch.from_numpy(p.astype(np.float32)).to(
        torch.float32 if dtype == np.float32 else torch.bfloat16).requires_grad_() for p in start]
    torch_options = {**options, "state_dtype": torch.bfloat16} if "state_dtype" in options \
        else options
    opt = gt.Muon(tensors, lr=0.02, **torch_options)
    for p in tensors:
        p.grad = torch.ones_like(p)
    opt.step()
    saved = opt.state_dict()
    arrays = [t.detach().float().numpy().astype(dtype) for t in tensors]
    mine = gdfast.Muon(arrays, lr=0.02, **options)
    mine.load_state_dict(saved)
    for k, p in enumerate(tensors):
        for name, value in opt.state[p].items():
            loaded = mine.state[k][name]
            assert str(loaded.dtype) == str(value.dtype).removeprefix("torch."), name
            assert np.array_equal(loaded.astype(np.float32), value.float().numpy()), name
    before = [a.copy() for a in arrays]
    mine.step([np.ones_like(a) for a in arrays])
    assert all(not np.array_equal(a, b) for a, b in zip(arrays, before))


def test_options_changed_after_construction_are_checked_at_each_step() -> None:
    """An option set in a group after construction (or loaded with a state_dict) that its
    params cannot take raises by name at the next step (or load), and nothing changes."""
    p = _start(BF16)[0]
    opt = gdfast.Muon([p])
    opt.step([np.ones_like(p)])
    kept, buffer = p.copy(), opt.state[0]["momentum_buffer"].copy()
    opt.param_groups[0]["state_dtype"] = np.dtype(np.float16)
    with pytest.raises(ValueError, match=r"^grads\[0\]: its param: state_dtype=float16 is for"):
        opt.step([np.ones_like(p)])
    assert np.array_equal(p, kept) and np.array_equal(opt.state[0]["momentum_buffer"], buffer)

    q = _start(np.float32)[0]
    opt32 = gdfast.Muon([q])
    saved = opt32.state_dict()
    saved["param_groups"][0]["master_weights"] = True
    with pytest.raises(ValueError, match=r"^state_dict\['param_groups'\]\[0\]\.params\[0\]: "
                                         r"master_weights=True is for bfloat16"):
        opt32.load_state_dict(saved)
    assert opt32.param_groups[0]["master_weights"] is False
