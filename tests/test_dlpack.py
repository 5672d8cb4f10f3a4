"""gdfast.ops consuming DLPack tensors: torch tensors, NumPy arrays forced through the protocol,
legacy (pre-1.0) producers and a hand-made ctypes producer that controls every field of the
capsule (read-only flag, strides, byte offset, device, dtype, version) and counts deleter calls.

Ownership rules checked (DLPack's Python specification): the consumer renames the capsule to
``used_dltensor`` / ``used_dltensor_versioned`` and calls the deleter exactly once, also when
the call is rejected; nothing leaks (refcounts of the exported NumPy array stay constant).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest

from gdfast import ops

from dlpack_producers import (
    DL_BFLOAT,
    DL_CPU,
    DL_CUDA,
    DL_CUDA_HOST,
    DL_FLOAT,
    DL_INT,
    DL_VULKAN,
    Handmade,
    capsule_name,
    handmade_view,
)

# ---------------------------------------------------------------------------------------------
# Producers


class Protocol:
    """Shows gdfast only the DLPack protocol of ``array`` (NumPy or torch), never the array
    itself, so a NumPy array goes through __dlpack__ instead of the buffer fast path. Records
    the keyword arguments of each __dlpack__ call."""

    def __init__(self, array):
        self.array = array
        self.requests = []

    def __dlpack__(self, **kwargs):
        self.requests.append(kwargs)
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


class KeepCapsule(Protocol):
    """As Protocol, and keeps every capsule it returned, to inspect it after the call."""

    def __init__(self, array):
        super().__init__(array)
        self.capsules = []

    def __dlpack__(self, **kwargs):
        capsule = super().__dlpack__(**kwargs)
        self.capsules.append(capsule)
        return capsule


class Legacy:
    """A producer that predates DLPack 1.0: ``__dlpack__`` takes no ``max_version`` and
    returns a legacy ``dltensor`` capsule."""

    def __init__(self, array):
        self.array = array
        self.calls = 0

    def __dlpack__(self, stream=None):
        self.calls += 1
        return self.array.__dlpack__()  # no max_version: NumPy and torch return "dltensor"

    def __dlpack_device__(self):
        return self.array.__dlpack_device__()


@pytest.fixture
def torch():
    return pytest.importorskip("torch")


def _numpy_exports_versioned() -> bool:
    try:
        np.zeros(1).__dlpack__(max_version=(1, 0))
    except TypeError:
        return False
    return True


# NumPy >= 2.1 exports DLPack 1.x (with the read-only flag); older NumPy only legacy capsules,
# and refuses to export read-only arrays at all.
needs_numpy_dlpack_1 = pytest.mark.skipif(not _numpy_exports_versioned(),
                                          reason="this NumPy predates DLPack 1.0 export")


# ---------------------------------------------------------------------------------------------
# Results: the DLPack path is the NumPy path, bitwise, and in place


def _arrays(n=37, seed=0, dtype=np.float32, count=4):
    rng = np.random.default_rng(seed)
    out = [rng.standard_normal(n).astype(dtype) for _ in range(count)]
    np.abs(out[3], out=out[3])  # exp_avg_sq >= 0
    return out


def _run(kind, wrap, p, g, m, v, steps=3):
    for s in range(1, steps + 1):
        if kind == "adam":
            ops.adam_(wrap(p), wrap(g), wrap(m), wrap(v), step=s, lr=1e-2, weight_decay=0.1,
                      decoupled_weight_decay=True, amsgrad=False)
        elif kind == "sgd":
            ops.sgd_(wrap(p), wrap(g), wrap(m), step=s, lr=0.1, momentum=0.9, nesterov=True,
                     weight_decay=1e-3)
        else:
            ops.lion_(wrap(p), wrap(g), wrap(m), lr=1e-2, weight_decay=0.1)


def _wrappers(torch_module):
    w = {
        "numpy-protocol": Protocol,
        "legacy": Legacy,
        "handmade": lambda a: Handmade(a),
        "handmade-legacy": lambda a: Handmade(a, versioned=False),
    }
    if torch_module is not None:
        w["torch"] = torch_module.from_numpy
        w["torch-legacy"] = lambda a: Legacy(torch_module.from_numpy(a))
    return w


try:
    import torch as _torch_or_none
except ImportError:  # pragma: no cover - torch is an optional dependency
    _torch_or_none = None

WRAPPERS = _wrappers(_torch_or_none)


@pytest.mark.parametrize("kind", ["sgd", "adam", "lion"])
@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_single_equals_numpy_path_bitwise(kind, wrapper, dtype):
    expected = _arrays(dtype=dtype)
    _run(kind, lambda a: a, *expected)
    got = _arrays(dtype=dtype)
    # Every wrapper shares the NumPy memory: results land in `got` only if the update was
    # done in place, zero copy.
    _run(kind, WRAPPERS[wrapper], *got)
    for e, r in zip(expected, got):
        np.testing.assert_array_equal(r.view(np.uint8), e.view(np.uint8))


@pytest.mark.parametrize("wrapper", sorted(WRAPPERS))
def test_list_equals_numpy_path_bitwise(wrapper):
    sizes = [5, 1, 64, 3, 1000]  # zero-size tensors: test_zero_size_with_any_strides
    expected = [_arrays(n, seed=i) for i, n in enumerate(sizes)]
    got = [_arrays(n, seed=i) for i, n in enumerate(sizes)]
    wrap = WRAPPERS[wrapper]
    for s in (1, 2):
        ops.adam_(*[[t[k] for t in expected] for k in range(4)], step=s, lr=1e-2, amsgrad=False)
        ops.adam_(*[[wrap(t[k]) for t in got] for k in range(4)], step=s, lr=1e-2)
    for e, r in zip(expected, got):
        for x, y in zip(e, r):
            np.testing.assert_array_equal(y.view(np.uint8), x.view(np.uint8))


def test_torch_tensors_updated_in_place(torch):
    p = torch.linspace(-1, 1, 9)
    data_ptr = p.data_ptr()
    g = torch.ones(9)
    m, v = torch.zeros(9), torch.zeros(9)
    expected = p.numpy().copy(), g.numpy().copy(), np.zeros(9, np.float32), np.zeros(9, np.float32)
    ops.adam_(p, g, m, v, step=1, lr=0.1)
    ops.adam_(*expected, step=1, lr=0.1)
    assert p.data_ptr() == data_ptr
    np.testing.assert_array_equal(p.numpy(), expected[0])
    np.testing.assert_array_equal(m.numpy(), expected[2])
    np.testing.assert_array_equal(v.numpy(), expected[3])


def test_mixing_numpy_and_torch_in_one_call(torch):
    arrays = _arrays(count=4)
    expected = [a.copy() for a in arrays]
    second = [a.copy() for a in _arrays(seed=1)]
    second_expected = [a.copy() for a in second]
    ops.adam_([expected[0], second_expected[0]], [expected[1], second_expected[1]],
              [expected[2], second_expected[2]], [expected[3], second_expected[3]], step=1)
    # param: torch + NumPy-by-protocol; grad: NumPy + torch; states: every kind in turn.
    ops.adam_([torch.from_numpy(arrays[0]), Protocol(second[0])],
              [arrays[1], torch.from_numpy(second[1])],
              [Legacy(arrays[2]), Handmade(second[2])],
              (torch.from_numpy(arrays[3]), second[3]), step=1)
    for e, r in zip(expected + second_expected, arrays + second):
        np.testing.assert_array_equal(r, e)


def test_grad_scale_with_torch_tensors(torch):
    """grad_scale divides the gradient inside the pass: a power-of-two scale is exact."""
    a = _arrays()
    b = [x.copy() for x in a]
    b[1] *= 1024.0
    ops.adam_(*a, step=1, lr=1e-2)
    ops.adam_(*[torch.from_numpy(x) for x in b], step=1, lr=1e-2, grad_scale=1024.0)
    for x, y in zip(a[:1] + a[2:], b[:1] + b[2:]):
        np.testing.assert_array_equal(y, x)


# ---------------------------------------------------------------------------------------------
# The protocol: versioned request, legacy fallback, capsule names


def test_requests_versioned_protocol_without_stream():
    producer = Protocol(Handmade(np.zeros(4, np.float32)))
    ops.sgd_(producer, np.ones(4, np.float32), step=1, lr=0.1)
    assert len(producer.requests) == 1
    request = producer.requests[0]
    assert tuple(request["max_version"]) >= (1, 0)
    assert request.get("stream") is None  # CPU: no stream (the spec's value for kDLCPU)
    assert capsule_name(producer.array.capsules[0]) == b"used_dltensor_versioned"
    np.testing.assert_array_equal(producer.array.base, -0.1 * np.ones(4, np.float32))


def test_legacy_producer_without_max_version():
    arr = np.zeros(4, np.float32)
    legacy = Legacy(arr)
    ops.sgd_(legacy, np.ones(4, np.float32), step=1, lr=0.5)
    assert legacy.calls == 1  # the versioned call failed at the signature, before the body
    np.testing.assert_array_equal(arr, np.full(4, -0.5, np.float32))


def test_producer_may_answer_a_versioned_request_with_a_legacy_capsule():
    producer = Handmade(np.zeros(4, np.float32), versioned=False)
    ops.sgd_(producer, np.ones(4, np.float32), step=1, lr=0.5)
    assert producer.requests[0] is not None
    assert capsule_name(producer.capsules[0]) == b"used_dltensor"
    producer.check_released()
    np.testing.assert_array_equal(producer.base, np.full(4, -0.5, np.float32))


@pytest.mark.parametrize("legacy", [False, True], ids=["versioned", "legacy"])
@pytest.mark.parametrize("source", ["numpy", "torch"])
def test_capsule_renamed_to_used(source, legacy, request):
    arr = np.zeros(6, np.float32)
    if source == "torch":
        arr = request.getfixturevalue("torch").from_numpy(arr)
    elif not legacy and not _numpy_exports_versioned():
        pytest.skip("this NumPy predates DLPack 1.0 export")
    producer = KeepCapsule(arr)
    if legacy:
        original = producer.__dlpack__
        producer.__dlpack__ = lambda **kw: original()  # drop max_version: a legacy capsule
    ops.sgd_(producer, np.ones(6, np.float32), step=1, lr=0.1)
    assert len(producer.capsules) == 1
    expected = b"used_dltensor" if legacy else b"used_dltensor_versioned"
    assert capsule_name(producer.capsules[0]) == expected


def test_minor_version_above_zero_accepted():
    producer, view = handmade_view(8, version=(1, 3))
    ops.sgd_(producer, np.ones(8, np.float32), step=1, lr=1.0)
    np.testing.assert_array_equal(view, -np.ones(8, np.float32))
    producer.check_released()


def test_major_version_two_rejected_and_released():
    producer, view = handmade_view(8, version=(2, 0))
    with pytest.raises(TypeError, match=r"param: DLPack major version 2"):
        ops.sgd_(producer, np.ones(8, np.float32), step=1, lr=1.0)
    np.testing.assert_array_equal(view, np.zeros(8, np.float32))
    producer.check_released()


def test_dlpack_raising_is_reported_with_the_argument_name():
    class Broken:
        def __dlpack__(self, **kwargs):
            raise BufferError("no export today")

        def __dlpack_device__(self):
            return (DL_CPU, 0)

    with pytest.raises(ValueError, match=r"grad: could not be exported.*no export today"):
        ops.sgd_(np.zeros(3, np.float32), Broken(), step=1, lr=0.1)


def test_dlpack_returning_a_non_capsule():
    class NotACapsule:
        def __dlpack__(self, **kwargs):
            return 42

        def __dlpack_device__(self):
            return (DL_CPU, 0)

    with pytest.raises(TypeError, match=r"param: __dlpack__ returned something other"):
        ops.sgd_(NotACapsule(), np.zeros(3, np.float32), step=1, lr=0.1)


def test_object_without_protocol_rejected():
    with pytest.raises(TypeError, match=r"param: expected a numpy.ndarray or a DLPack tensor"):
        ops.sgd_(object(), np.zeros(2, np.float32), step=1, lr=0.1)
    with pytest.raises(TypeError, match=r"grad\[1\]: expected a numpy.ndarray or a DLPack"):
        ops.sgd_([np.zeros(2, np.float32)] * 2, [np.zeros(2, np.float32), 3.0], step=1, lr=0.1)
    # A list of numbers as param is the caller's mistake with param, not with grad.
    with pytest.raises(TypeError, match=r"param\[0\]: expected a numpy.ndarray or a DLPack"):
        ops.sgd_([1.0, 2.0], np.zeros(2, np.float32), step=1, lr=0.1)


# ---------------------------------------------------------------------------------------------
# Tensor fields: read-only flag, strides, byte offset, dtype, device


@needs_numpy_dlpack_1
def test_read_only_numpy_through_protocol_rejected_as_param():
    arr = np.zeros(5, np.float32)
    arr.flags.writeable = False
    with pytest.raises(ValueError, match=r"param: is read-only"):
        ops.sgd_(Protocol(arr), np.ones(5, np.float32), step=1, lr=0.1)
    with pytest.raises(ValueError, match=r"exp_avg\[1\]: is read-only"):
        p = [np.zeros(5, np.float32), np.zeros(5, np.float32)]
        ops.lion_(p, [np.ones(5, np.float32)] * 2,
                  [np.zeros(5, np.float32), Protocol(arr)], lr=0.1)
    assert not p[0].any()  # a rejected call writes nothing, not even the valid first tensor


def test_read_only_flag_of_the_capsule_honoured():
    producer, view = handmade_view(5, read_only=True)
    with pytest.raises(ValueError, match=r"param: is read-only"):
        ops.sgd_(producer, np.ones(5, np.float32), step=1, lr=0.1)
    producer.check_released()
    # Read-only is fine for the gradient, which is only read.
    grad, gview = handmade_view(5, read_only=True, fill=1.0)
    p = np.zeros(5, np.float32)
    ops.sgd_(p, grad, step=1, lr=0.5)
    np.testing.assert_array_equal(p, np.full(5, -0.5, np.float32))
    np.testing.assert_array_equal(gview, np.ones(5, np.float32))
    grad.check_released()


@needs_numpy_dlpack_1
def test_read_only_numpy_as_grad_accepted():
    g = np.ones(5, np.float32)
    g.flags.writeable = False
    p = np.zeros(5, np.float32)
    ops.sgd_(Protocol(p), Protocol(g), step=1, lr=0.25)
    np.testing.assert_array_equal(p, np.full(5, -0.25, np.float32))


def test_non_contiguous_torch_tensor_rejected(torch):
    base = torch.zeros(6, 4)
    for bad in (base[:, 1], base.t(), base[::2]):
        with pytest.raises(ValueError, match=r"param: must be C-contiguous"):
            ops.sgd_(bad, torch.ones(bad.shape), step=1, lr=0.1)
    assert not base.any()
    with pytest.raises(ValueError, match=r"grad\[1\]: must be C-contiguous"):
        ops.sgd_([torch.zeros(6), torch.zeros(4)], [torch.ones(6), torch.ones(4, 2)[:, 0]],
                 step=1, lr=0.1)


def test_negative_strides_rejected():
    arr = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match=r"param: must be C-contiguous"):
        ops.sgd_(Protocol(arr[::-1]), np.ones(8, np.float32), step=1, lr=0.1)
    assert not arr.any()


def test_size_one_dims_with_odd_strides_accepted(torch):
    # Strides of extent-1 dimensions are meaningless; producers export anything there.
    base = torch.zeros(12)
    odd = base.as_strided((3, 1, 4, 1), (4, 99, 1, 0))
    ops.sgd_(odd, torch.ones(3, 1, 4, 1), step=1, lr=0.5)
    np.testing.assert_array_equal(base.numpy(), np.full(12, -0.5, np.float32))
    # Same through the hand-made producer, with explicit strides.
    producer = Handmade(np.zeros(6, np.float32), shape=(2, 1, 3), strides=(3, 1234, 1))
    ops.sgd_(producer, np.ones((2, 1, 3), np.float32), step=1, lr=0.5)
    np.testing.assert_array_equal(producer.base, np.full(6, -0.5, np.float32))
    producer.check_released()


def test_explicit_compact_strides_accepted_and_other_strides_rejected():
    ok = Handmade(np.zeros(6, np.float32), shape=(2, 3), strides=(3, 1))
    ops.sgd_(ok, np.ones((2, 3), np.float32), step=1, lr=1.0)
    np.testing.assert_array_equal(ok.base, -np.ones(6, np.float32))
    bad = Handmade(np.zeros(6, np.float32), shape=(3, 2), strides=(1, 3))  # column-major
    with pytest.raises(ValueError, match=r"param: must be C-contiguous"):
        ops.sgd_(bad, np.ones((3, 2), np.float32), step=1, lr=1.0)
    ok.check_released()
    bad.check_released()


def test_torch_view_with_storage_offset(torch):
    base = torch.zeros(13)
    view = base[3:]
    ops.sgd_(view, torch.ones(10), step=1, lr=0.5)
    np.testing.assert_array_equal(base[:3].numpy(), np.zeros(3, np.float32))
    np.testing.assert_array_equal(base[3:].numpy(), np.full(10, -0.5, np.float32))
    # A storage offset in a list, for every state.
    bases = [torch.zeros(20) for _ in range(4)]
    ops.adam_([b[4:] for b in bases[:1]], [torch.ones(16)], [bases[2][4:]], [bases[3][4:]],
              step=1, lr=0.1)
    assert not bases[0][:4].any() and bases[0][4:].ne(0).all()
    assert not bases[2][:4].any() and bases[2][4:].ne(0).all()


@pytest.mark.parametrize("versioned", [True, False], ids=["versioned", "legacy"])
def test_byte_offset_honoured(versioned):
    producer, view = handmade_view(10, byte_offset=12, versioned=versioned)
    ops.sgd_(producer, np.ones(10, np.float32), step=1, lr=0.5)
    np.testing.assert_array_equal(view, np.full(10, -0.5, np.float32))
    assert producer.base[0] == -7.0 and producer.base[-1] == -7.0  # outside: untouched
    assert producer.base.tolist().count(-7.0) == 4  # 3 before (12 bytes), 1 after
    producer.check_released()


def test_byte_offset_that_misaligns_rejected():
    producer, _ = handmade_view(10, byte_offset=2)
    with pytest.raises(ValueError, match=r"param: must be (C-contiguous and )?aligned"):
        ops.sgd_(producer, np.ones(10, np.float32), step=1, lr=0.5)
    producer.check_released()


# The storage types' message for a dtype that is none of them.
ANY_FLOAT = "{who}: expected float32, float64, bfloat16 or float16.*got {got}"


@pytest.mark.parametrize("dtype, text", [("int16", "int16"),
                                         ("int32", "int32"), ("int64", "int64"),
                                         ("complex64", "complex64"), ("bool", "bool")])
def test_torch_dtypes_rejected_naming_dtype(torch, dtype, text):
    t = torch.zeros(4, dtype=getattr(torch, dtype))
    with pytest.raises(TypeError, match=ANY_FLOAT.format(who="param", got=text)):
        ops.sgd_(t, t.clone(), step=1, lr=0.1)
    with pytest.raises(TypeError, match=ANY_FLOAT.format(who=r"grad\[0\]", got=text)):
        ops.sgd_([torch.zeros(4)], [t], step=1, lr=0.1)


@pytest.mark.parametrize("dtype, text", [((DL_BFLOAT, 32, 1), "bfloat32"),
                                         ((DL_INT, 8, 1), "int8"),
                                         ((DL_FLOAT, 32, 4), "float32x4")])
def test_dlpack_dtypes_rejected_naming_dtype(dtype, text):
    producer = Handmade(np.zeros(4, np.float32), dtype=dtype)
    with pytest.raises(TypeError, match=ANY_FLOAT.format(who="param", got=text)):
        ops.sgd_(producer, np.ones(4, np.float32), step=1, lr=0.1)
    producer.check_released()


def test_int16_numpy_through_protocol_rejected():
    with pytest.raises(TypeError, match=r"param: expected float32, float64, bfloat16 or float16"
                                        r".*got int16"):
        ops.sgd_(Protocol(np.zeros(4, np.int16)), np.ones(4, np.int16), step=1, lr=0.1)


def test_mixed_float_dtypes_rejected(torch):
    with pytest.raises(TypeError, match=r"grad: expected float64 like param, got float32"):
        ops.sgd_(torch.zeros(3, dtype=torch.float64), torch.ones(3), step=1, lr=0.1)


def test_requires_grad_tensor_rejected_clearly(torch):
    p = torch.zeros(4, requires_grad=True)
    with pytest.raises(ValueError, match=r"param: could not be exported through DLPack.*"
                                         r"require.*grad.*detach"):
        ops.sgd_(p, torch.ones(4), step=1, lr=0.1)
    ops.sgd_(p.detach(), torch.ones(4), step=1, lr=0.1)  # the documented way
    np.testing.assert_array_equal(p.detach().numpy(), np.full(4, -0.1, np.float32))


@pytest.mark.parametrize("which", ["param", "grad"])
@pytest.mark.parametrize("layout", ["sparse_csr", "mkldnn"])
def test_torch_layouts_without_strides_rejected_naming_the_argument(torch, which, layout):
    """Reading such a tensor's attributes raises in torch (is_contiguous, data_ptr): named
    here as the argument's problem, nothing written."""
    import warnings

    if layout == "mkldnn" and not torch.backends.mkldnn.is_available():
        pytest.skip("this torch has no MKL-DNN")
    with warnings.catch_warnings():  # (sparse CSR is in beta)
        warnings.simplefilter("ignore", UserWarning)
        odd = torch.ones(2, 2).to_sparse_csr() if layout == "sparse_csr" else \
            torch.ones(2, 2).to_mkldnn()
    p, g = torch.ones(2, 2), torch.ones(2, 2)
    with pytest.raises(ValueError, match=rf"^{which}: "):
        ops.sgd_(odd if which == "param" else p, odd if which == "grad" else g, step=1, lr=0.1)
    assert torch.equal(p, torch.ones(2, 2))


def test_aliasing_through_dlpack_detected(torch):
    t = torch.zeros(8)
    with pytest.raises(ValueError, match=r"param and grad share memory"):
        ops.sgd_(t, t, step=1, lr=0.1)
    with pytest.raises(ValueError, match=r"share memory"):
        ops.sgd_(t, torch.ones(8), t[0:8].view(8), step=2, lr=0.1, momentum=0.9)
    arr = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match=r"share memory"):
        ops.sgd_(torch.from_numpy(arr), np.ones(8, np.float32), Protocol(arr), step=2, lr=0.1,
                 momentum=0.9)
    assert not t.any() and not arr.any()


def test_zero_size_and_zero_dim(torch):
    ops.adam_(torch.zeros(0), torch.zeros(0), torch.zeros(0), torch.zeros(0), step=1)
    ops.adam_([torch.zeros(0), torch.ones(2)], [torch.zeros(0), torch.ones(2)],
              [torch.zeros(0), torch.zeros(2)], [torch.zeros(0), torch.zeros(2)], step=1)
    p = torch.zeros(())
    ops.sgd_(p, torch.ones(()), step=1, lr=0.5)
    assert float(p) == -0.5


def test_zero_size_with_any_strides(torch):
    """A tensor with no elements is contiguous whatever its strides (torch.Tensor.is_contiguous
    and NumPy's C_CONTIGUOUS flag both say so), and producers export odd ones: NumPy gives an
    empty array stride 0, torch gives torch.zeros(3, 0) strides (1, 1)."""
    empty = np.zeros(0, np.float32)
    assert empty.flags.c_contiguous and torch.zeros(3, 0).is_contiguous()
    ops.sgd_(Protocol(empty), np.zeros(0, np.float32), step=1, lr=0.1)
    ops.sgd_(Legacy(empty), np.zeros(0, np.float32), step=1, lr=0.1)
    ops.sgd_(torch.zeros(3, 0), torch.zeros(3, 0), step=1, lr=0.1)
    producer = Handmade(np.zeros(1, np.float32), shape=(0, 3), strides=(0, 0))
    ops.sgd_(producer, np.zeros((0, 3), np.float32), step=1, lr=0.1)
    producer.check_released()


def test_fake_cuda_capsule_rejected_with_clear_error():
    """A CUDA tensor (device in the capsule and in __dlpack_device__ is kDLCUDA) beside CPU
    arrays: a CPU-only build says it has no CUDA kernels, a CUDA build that the devices are
    mixed; either way naming the argument, and the capsule is still released."""
    import gdfast

    cuda_build = gdfast.cuda.compiled
    producer = Handmade(np.zeros(4, np.float32), device=(DL_CUDA, 1))
    first = (r"grad: is on cpu but param is on cuda:1" if cuda_build
             else r"param: is on CUDA device 1.*no CUDA kernels")
    with pytest.raises(ValueError, match=first):
        ops.sgd_(producer, np.ones(4, np.float32), step=1, lr=0.1)
    producer.check_released()
    assert not producer.base.any()
    mixed = Handmade(np.zeros(4, np.float32), device=(DL_CUDA, 0))
    second = (r"exp_avg\[1\]: is on cuda:0 but param\[0\] is on cpu" if cuda_build
              else r"exp_avg\[1\]: is on CUDA device 0")
    with pytest.raises(ValueError, match=second):
        ops.lion_([np.zeros(4, np.float32)] * 2, [np.ones(4, np.float32)] * 2,
                  [np.zeros(4, np.float32), mixed], lr=0.1)
    mixed.check_released()


def test_fake_cuda_producer_by_dlpack_device_rejected():
    """A producer whose __dlpack_device__ says CUDA (2, 0). A consumer must ask
    __dlpack_device__ first (it decides the ``stream`` argument of __dlpack__ for CUDA), so
    gdfast must treat it as a CUDA tensor, whatever its capsule then says: a CPU-only build
    refuses it as such, a CUDA build asks it for a CUDA stream, which this producer refuses."""

    class FakeCuda(Protocol):
        def __dlpack_device__(self):
            return (DL_CUDA, 0)

    arr = np.zeros(4, np.float32)
    with pytest.raises(ValueError, match=r"param: (.*CUDA|could not be exported.*stream)"):
        ops.sgd_(FakeCuda(arr), np.ones(4, np.float32), step=1, lr=0.1)
    assert not arr.any()


def test_pinned_host_memory_accepted_and_unknown_device_rejected():
    pinned, view = handmade_view(4, device=(DL_CUDA_HOST, 0))  # CPU-addressable
    ops.sgd_(pinned, np.ones(4, np.float32), step=1, lr=1.0)
    np.testing.assert_array_equal(view, -np.ones(4, np.float32))
    pinned.check_released()
    vulkan = Handmade(np.zeros(4, np.float32), device=(DL_VULKAN, 0))
    with pytest.raises(ValueError, match=r"param: is on DLPack device type 7"):
        ops.sgd_(vulkan, np.ones(4, np.float32), step=1, lr=1.0)
    vulkan.check_released()


# ---------------------------------------------------------------------------------------------
# Ownership: deleters exactly once, no leak, also for rejected calls


def test_deleters_called_once_for_every_consumed_capsule_of_a_rejected_call():
    # param[0..1], grad[0..1] are consumed before exp_avg[1] fails: all four released.
    producers = [Handmade(np.zeros(4, np.float32)) for _ in range(4)]
    bad = Handmade(np.zeros(4, np.float64))
    like = r"exp_avg\[1\]: expected float32, bfloat16 or float16 like param\[0\]"
    with pytest.raises(TypeError, match=like):
        ops.lion_(producers[:2], producers[2:], [np.zeros(4, np.float32), bad], lr=0.1)
    for producer in producers + [bad]:
        producer.check_released()
    # ... and when the failure comes after every array was gathered (overlap check).
    shared = np.zeros(4, np.float32)
    first, second = Handmade(shared), Handmade(shared)
    with pytest.raises(ValueError, match=r"share memory"):
        ops.sgd_(first, second, step=1, lr=0.1)
    first.check_released()
    second.check_released()


def test_deleters_called_once_on_success_for_lists():
    producers = [Handmade(np.zeros(3, np.float32), versioned=i % 2 == 0) for i in range(6)]
    ops.sgd_(producers[:3], [np.ones(3, np.float32)] * 3, producers[3:], step=1, lr=0.1,
             momentum=0.9)
    for producer in producers:
        producer.check_released()
        assert len(producer.made) == 1


def test_no_refcount_leak_over_many_calls_including_rejected_ones():
    param = np.zeros(64, np.float32)
    grad = np.ones(64, np.float32)
    frozen = np.zeros(64, np.float32)
    frozen.flags.writeable = False
    wide = np.zeros(64, np.float64)
    wrapped = Protocol(param)
    legacy_grad = Legacy(grad)
    counts = [sys.getrefcount(x) for x in (param, grad, frozen, wide)]
    for _ in range(1000):
        ops.sgd_(wrapped, legacy_grad, step=1, lr=0.0)
        for args, error in (((wrapped, Protocol(wide)), TypeError),  # dtype, 2nd arg
                            ((Protocol(frozen), grad), ValueError),  # read-only
                            ((wrapped, wrapped), ValueError)):  # shared memory
            try:
                ops.sgd_(*args, step=1, lr=0.0)
            except error:
                pass
            else:  # pragma: no cover
                raise AssertionError(f"{args} accepted")
    assert [sys.getrefcount(x) for x in (param, grad, frozen, wide)] == counts


def test_no_leak_of_torch_tensors(torch):
    """Each export holds a reference to the tensor until its deleter runs: the tensor's
    use count is back to one after every call, accepted or rejected."""
    t = torch.zeros(16)
    g = torch.ones(16)
    assert t._use_count() == 1 and g._use_count() == 1
    for _ in range(200):
        ops.sgd_(t, g, step=1, lr=0.0)
        with pytest.raises(TypeError):
            ops.sgd_(t, torch.ones(16, dtype=torch.float64), step=1, lr=0.0)
        with pytest.raises(ValueError):
            ops.sgd_(t, t, step=1, lr=0.0)
    assert t._use_count() == 1 and g._use_count() == 1


@pytest.mark.parametrize("kind", ["sgd", "adam", "lion"])
def test_found_inf_and_tensor_grad_scale_on_cpu(torch, kind):
    """AMP scalars as torch tensors (what GradScaler holds): a nonzero found_inf skips the
    step, leaving every array bitwise unchanged; a zero one steps with grad / grad_scale."""
    def call(arrays, **amp):
        p, g, m, v = arrays
        if kind == "adam":
            ops.adam_(p, g, m, v, step=1, lr=1e-2, **amp)
        elif kind == "sgd":
            ops.sgd_(p, g, m, step=2, lr=0.1, momentum=0.9, **amp)
        else:
            ops.lion_(p, g, m, lr=1e-2, **amp)

    start = _arrays()
    skipped = [torch.from_numpy(a.copy()) for a in start]
    call(skipped, grad_scale=torch.tensor([1024.0]), found_inf=torch.tensor([1.0]))
    for a, b in zip(start, skipped):
        np.testing.assert_array_equal(b.numpy(), a)
    expected = [a.copy() for a in start]
    call(expected)
    scaled = [torch.from_numpy(a.copy()) for a in start]
    scaled[1] *= 1024.0
    call(scaled, grad_scale=torch.tensor([1024.0]), found_inf=torch.tensor([0.0]))
    for k in (0, 2, 3):
        np.testing.assert_array_equal(scaled[k].numpy(), expected[k])
