"""Bad input to a call (README "Bad input"): each raises a TypeError (wrong type) or ValueError
(wrong value) whose message starts with the argument's name, and leaves every array untouched.
Categories of issue 15 covered here: a found_inf step (2), huge or inexact integers (3),
DLPack producers that misbehave (4), and the pair arguments the functional ops take."""

from __future__ import annotations

from typing import Any, Callable, Dict, List

import numpy as np
import pytest

import gdfast
from gdfast import ops

from dlpack_producers import Handmade


def adam_arrays(n: int = 8) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    return {"param": rng.standard_normal(n).astype(np.float32),
            "grad": rng.standard_normal(n).astype(np.float32),
            "exp_avg": np.zeros(n, np.float32), "exp_avg_sq": np.zeros(n, np.float32)}


def rejected(call: Callable[[], Any], arrays: Dict[str, np.ndarray], error: type,
             pattern: str) -> None:
    """`call` raises `error` matching `pattern` and writes none of `arrays`."""
    before = {k: a.copy() for k, a in arrays.items()}
    with pytest.raises(error, match=pattern):
        call()
    for k, a in arrays.items():
        assert a.tobytes() == before[k].tobytes(), f"{k} was written by a rejected call"


# -- 2: found_inf ----------------------------------------------------------------------------------
# A step that found_inf skips accepts exactly what a taken step would: a bad argument is an error
# whatever found_inf says (before, a nonzero found_inf skipped every check).
SKIPPED_BUT_CHECKED = [
    ("negative lr", {"lr": -1.0}, ValueError, r"^lr: expected a finite number >= 0"),
    ("step 0", {"step": 0}, ValueError, r"^step: expected an int >= 1"),
    ("grad_scale 0", {"grad_scale": 0.0}, ValueError, r"^grad_scale: expected .* > 0"),
    ("grad of another shape", {"grad": np.ones(3, np.float32)}, ValueError,
     r"^grad: shape \(3,\) does not match param shape \(8,\)"),
    ("float64 state", {"exp_avg": np.zeros(8)}, TypeError, r"^exp_avg: expected float32"),
    ("state is the param", {"exp_avg": "param"}, ValueError, r"^param and exp_avg share memory"),
]


@pytest.mark.parametrize("found_inf", [1.0, 0.0, np.ones(1, np.float32)], ids=["1", "0", "array"])
@pytest.mark.parametrize("change, error, pattern",
                         [pytest.param(*c[1:], id=c[0]) for c in SKIPPED_BUT_CHECKED])
def test_found_inf_does_not_skip_the_checks(found_inf: Any, change: Dict[str, Any], error: type,
                                            pattern: str) -> None:
    arrays = adam_arrays()
    kw: Dict[str, Any] = {"step": 1, **arrays, **change}
    if isinstance(kw["exp_avg"], str):
        kw["exp_avg"] = arrays[kw["exp_avg"]]
    rejected(lambda: ops.adam_(found_inf=found_inf, **kw), arrays, error, pattern)


@pytest.mark.parametrize("found_inf, error, pattern", [
    ("x", TypeError, r"^found_inf: expected None, a number or a 1-element tensor, got str$"),
    ([1, 2], TypeError, r"^found_inf: .* got list$"),
    (object(), TypeError, r"^found_inf: .* got object$"),
    (np.ones(2, np.float32), ValueError, r"^found_inf: expected a 1-element tensor, got shape"),
], ids=["str", "list", "object", "2-element array"])
def test_a_malformed_found_inf_is_named(found_inf: Any, error: type, pattern: str) -> None:
    arrays = adam_arrays()
    rejected(lambda: ops.adam_(step=1, found_inf=found_inf, **arrays), arrays, error, pattern)


def test_found_inf_skips_a_valid_step_and_returns_the_scalar_states() -> None:
    arrays = adam_arrays()
    before = {k: a.copy() for k, a in arrays.items()}
    assert ops.adam_(step=1, found_inf=1.0, **arrays) is None
    assert all(arrays[k].tobytes() == before[k].tobytes() for k in arrays)
    nadam = {k: v for k, v in adam_arrays().items()}
    assert ops.nadam_(step=3, mu_product=0.5, found_inf=True, **nadam) == {"mu_product": 0.5}


def test_a_huge_found_inf_skips() -> None:
    arrays = adam_arrays()
    before = {k: a.copy() for k, a in arrays.items()}
    ops.adam_(step=1, found_inf=10**400, **arrays)
    assert all(arrays[k].tobytes() == before[k].tobytes() for k in arrays)


def test_found_inf_tensor_with_torch() -> None:
    torch = pytest.importorskip("torch")
    p, g = torch.ones(4), torch.ones(4)
    m, v = torch.zeros(4), torch.zeros(4)
    ops.adam_(p, g, m, v, step=1, found_inf=torch.ones(1))
    assert torch.equal(p, torch.ones(4))
    with pytest.raises(ValueError, match=r"^found_inf: expected a 1-element tensor"):
        ops.adam_(p, g, m, v, step=1, found_inf=torch.ones(2))
    ops.adam_(p, g, m, v, step=1, found_inf=torch.zeros(1))
    assert not torch.equal(p, torch.ones(4))


def test_a_torch_step_found_inf_skips_is_checked_all_the_same() -> None:
    """GradScaler hands gdfast.torch its found_inf: a skipped step changes nothing, and still
    refuses what a taken one would (here a negative lr set in the second group)."""
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    params = [torch.ones(4, requires_grad=True), torch.ones(4, requires_grad=True)]
    for p in params:
        p.grad = torch.ones(4)
    opt = gt.Adam([{"params": params[:1]}, {"params": params[1:]}], lr=0.1)
    opt.grad_scale, opt.found_inf = torch.ones(()), torch.ones(())
    opt.step()
    assert all(torch.equal(p, torch.ones(4)) for p in params) and not opt.state
    opt.param_groups[1]["lr"] = -1.0
    with pytest.raises(ValueError, match=r"^param_groups\[1\]: lr: expected a finite number"):
        opt.step()
    opt.param_groups[1]["lr"] = 0.1
    opt.found_inf = torch.zeros(())
    opt.step()
    assert not any(torch.equal(p, torch.ones(4)) for p in params)


# -- 3: huge and inexact integers ------------------------------------------------------------------
@pytest.mark.parametrize("name", ["lr", "beta1", "eps", "weight_decay", "grad_scale"])
def test_a_huge_integer_hyperparameter_is_a_named_value_error(name: str) -> None:
    arrays = adam_arrays()
    rejected(lambda: ops.adam_(step=1, **{name: 10**400}, **arrays), arrays, ValueError,
             rf"^{name}: ")


@pytest.mark.parametrize("step, pattern", [
    (10**400, r"^step: expected an int >= 1 and <= 2\*\*53, got an int of 401 digits"),
    (2**53 + 1, r"^step: expected an int >= 1 and <= 2\*\*53, got 9007199254740993$"),
    (1.5, r"^step: expected an int"),
], ids=["10**400", "2**53+1", "1.5"])
def test_a_step_beyond_2_53_or_fractional_is_refused(step: Any, pattern: str) -> None:
    arrays = adam_arrays()
    error = TypeError if isinstance(step, float) else ValueError
    rejected(lambda: ops.adam_(step=step, **arrays), arrays, error, pattern)


def test_2_53_itself_is_a_valid_step() -> None:
    ops.adam_(step=2**53, **adam_arrays())


@pytest.mark.parametrize("make", [np.array, "torch"], ids=["numpy", "torch"])
def test_a_fractional_step_array_is_refused_not_truncated(make: Any) -> None:
    """SGD takes its step from an array or tensor too (a 1-element one): 1.5 is not 1."""
    if make == "torch":
        make = pytest.importorskip("torch").tensor
    p, g = np.ones(4, np.float32), np.ones(4, np.float32)
    rejected(lambda: ops.sgd_(p, g, step=make(1.5), lr=0.1), {"p": p}, ValueError,
             r"^step: expected an integer, got 1.5$")
    rejected(lambda: ops.sgd_(p, g, step=make([1, 2]), lr=0.1), {"p": p}, ValueError,
             r"^step: expected a 1-element tensor")
    ops.sgd_(p, g, step=make(2.0), lr=0.1)  # an integral value is fine
    assert np.all(p == 0.9)


@pytest.mark.parametrize("n, error, pattern", [
    (10**400, ValueError, r"^n: expected an int >= 1 and <= 4096, got an int of 401 digits"),
    (0, ValueError, r"^n: expected an int >= 1"),
    (1.5, TypeError, r"^n: expected an int, got float$"),
    ("2", TypeError, r"^n: expected an int, got str$"),
    (True, TypeError, r"^n: expected an int, got bool$"),
], ids=["10**400", "0", "1.5", "str", "bool"])
def test_set_num_threads_names_a_bad_count(n: Any, error: type, pattern: str) -> None:
    before = gdfast.get_num_threads()
    with pytest.raises(error, match=pattern):
        gdfast.set_num_threads(n)
    assert gdfast.get_num_threads() == before


@pytest.mark.parametrize("name", [5, None, 10**400])
def test_set_isa_names_a_level_that_is_not_a_name(name: Any) -> None:
    before = gdfast.isa_info()["active"]
    with pytest.raises(TypeError, match=r"^name: expected a level name such as"):
        gdfast.set_isa(name)
    with pytest.raises(TypeError, match=r"^name: "):
        with gdfast.use_isa(name):
            pass
    assert gdfast.isa_info()["active"] == before


# -- the pair arguments of the classes, in the ops -------------------------------------------------
def test_ops_take_betas_as_the_classes_do() -> None:
    a, b = adam_arrays(), adam_arrays()
    ops.adam_(step=1, betas=(0.8, 0.99), **a)
    ops.adam_(step=1, beta1=0.8, beta2=0.99, **b)
    assert all(a[k].tobytes() == b[k].tobytes() for k in a)
    p, g = np.ones(4, np.float32), -np.ones(4, np.float32)
    prev, size = np.zeros(4, np.float32), np.full(4, 0.1, np.float32)
    ops.rprop_(p, g, prev, size, step=1, etas=(0.4, 1.3), step_sizes=(1e-5, 2.0))


@pytest.mark.parametrize("betas, extra, error, pattern", [
    (0.9, {}, TypeError, r"^betas: expected a pair \(beta1, beta2\), got 0.9$"),
    ((0.9,), {}, ValueError, r"^betas: expected a pair"),
    (("a", 0.999), {}, TypeError, r"^betas\[0\]: expected a finite number"),
    ((0.9, 1.5), {}, ValueError, r"^betas\[1\]: expected a finite number .* < 1, got 1.5$"),
    ((True, 0.999), {}, TypeError, r"^betas\[0\]: "),
    ((0.8, 0.9), {"beta1": 0.7}, ValueError, r"^betas: pass either betas or beta1/beta2"),
], ids=["number", "1-tuple", "str", "out of range", "bool", "both"])
def test_a_bad_betas_is_named(betas: Any, extra: Dict[str, Any], error: type,
                              pattern: str) -> None:
    arrays = adam_arrays()
    rejected(lambda: ops.adam_(step=1, betas=betas, **extra, **arrays), arrays, error, pattern)


# -- 4: DLPack producers that misbehave ------------------------------------------------------------
class Producer:
    """A DLPack producer wrapping a NumPy array, with a __dlpack_device__ of our choosing."""

    def __init__(self, array: np.ndarray, device: Callable[[], Any]) -> None:
        self.array, self.device = array, device

    def __dlpack__(self, **kwargs: Any) -> Any:
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self) -> Any:
        return self.device()


def _raise() -> Any:
    raise RuntimeError("device lookup failed")


LYING_DEVICES = [
    ("raises", _raise, ValueError, r"^param: __dlpack_device__\(\) raised RuntimeError: device"),
    ("a string", lambda: "cpu", TypeError,
     r"^param: __dlpack_device__\(\) returned 'cpu', expected"),
    ("a 1-tuple", lambda: (1,), TypeError, r"^param: __dlpack_device__\(\) returned \(1,\)"),
    ("None", lambda: None, TypeError, r"^param: __dlpack_device__\(\) returned None"),
    ("a huge id", lambda: (1, 2**40), ValueError, r"device id is out of range"),
    ("a negative type", lambda: (-1, 0), ValueError, r"device type is out of range"),
    ("a fractional id", lambda: (1, 0.5), TypeError, r"expected a \(device_type, device_id\)"),
    ("an unknown device", lambda: (99, 0), ValueError, r"^param: is on DLPack device type 99"),
]


@pytest.mark.parametrize("device, error, pattern",
                         [pytest.param(*c[1:], id=c[0]) for c in LYING_DEVICES])
def test_a_lying_dlpack_device_is_named(device: Callable[[], Any], error: type,
                                        pattern: str) -> None:
    arrays = adam_arrays()
    param = Producer(arrays["param"], device)
    rejected(lambda: ops.adam_(param, arrays["grad"], arrays["exp_avg"], arrays["exp_avg_sq"],
                               step=1), arrays, error, pattern)


@pytest.mark.parametrize("shape, ndim, pattern", [
    ([8], None, None),
    ([-8], None, r"^param: its DLPack tensor claims extent -8 in dimension 0$"),
    ([2, -4], None, r"claims extent -4 in dimension 1"),
    ([8], -1, r"^param: its DLPack tensor claims -1 dimensions$"),
    ([2**40, 2**40], None, r"^param: shape \(1099511627776, 1099511627776\) has more elements"),
], ids=["honest", "negative extent", "negative second extent", "negative ndim", "huge"])
def test_a_capsule_claiming_an_impossible_shape_is_refused(shape: List[int], ndim: Any,
                                                           pattern: Any) -> None:
    buffer = np.zeros(8, np.float32)
    producer = Handmade(buffer, shape=shape, ndim=ndim)
    if pattern is None:  # the hand-made capsule itself is good: it steps
        ops.sgd_(producer, np.ones(8, np.float32), step=1, lr=0.5)
        assert np.all(buffer == -0.5)
        return
    with pytest.raises(ValueError, match=pattern):
        ops.sgd_(producer, np.ones(tuple(abs(s) % 9 for s in shape), np.float32), step=1, lr=0.5)
    assert np.all(buffer == 0)


def test_torch_meta_tensors_are_named() -> None:
    torch = pytest.importorskip("torch")
    p = torch.ones(3, device="meta")
    with pytest.raises(ValueError, match=r"^param: __dlpack_device__\(\) raised .*meta"):
        ops.sgd_(p, torch.ones(3), step=1, lr=0.1)


def test_a_negative_bit_view_is_refused_not_stepped_without_its_sign() -> None:
    torch = pytest.importorskip("torch")
    base, g = torch.ones(3), torch.ones(3)
    with pytest.raises(ValueError, match=r"^param: is a negative-bit view .*resolve_neg"):
        ops.sgd_(torch._neg_view(base), g, step=1, lr=0.1)
    with pytest.raises(ValueError, match=r"^grad: is a negative-bit view"):
        ops.sgd_(base, torch._neg_view(g), step=1, lr=0.1)
    assert torch.equal(base, torch.ones(3))
    ops.sgd_(base, torch._neg_view(g).resolve_neg(), step=1, lr=0.1)  # resolved: fine
    assert torch.allclose(base, torch.full((3,), 1.1))


def test_an_inference_tensor_is_written_only_in_inference_mode() -> None:
    """As torch: an inference tensor may not be updated in place outside inference mode; a
    gradient that is one is only read, which torch allows."""
    torch = pytest.importorskip("torch")
    with torch.inference_mode():
        p, g = torch.ones(3), torch.ones(3)
    with pytest.raises(ValueError, match=r"^param: is an inference tensor.*inference_mode"):
        ops.sgd_(p, torch.ones(3), step=1, lr=0.1)
    assert torch.equal(p, torch.ones(3))
    q = torch.ones(3)
    ops.sgd_(q, g, step=1, lr=0.1)
    with torch.inference_mode():
        ops.sgd_(p, g, step=1, lr=0.1)
    assert torch.equal(p, q)



def test_an_optimizer_of_inference_tensors_steps_only_in_inference_mode() -> None:
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    with torch.inference_mode():
        w = torch.ones(3)
    w.grad = torch.ones(3)
    opt = gt.SGD([w], lr=0.1)
    with pytest.raises(RuntimeError, match=r"^params: some are inference tensors"):
        opt.step()
    assert torch.equal(w, torch.ones(3))
    with torch.inference_mode():
        opt.step()
    assert torch.allclose(w, torch.full((3,), 0.9))
