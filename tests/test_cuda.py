"""CUDA kernels. Without a GPU (or in a CPU-only build) only the availability contract runs;
the `cuda` tests need gdfast built with GDFAST_ENABLE_CUDA=ON, torch with CUDA and a device.
The kernels use the CPU's rule headers and never contract into FMAs (--fmad=false), so GPU
results must equal the CPU kernels bit for bit."""

from __future__ import annotations

import math

import numpy as np
import pytest

import gdfast
from gdfast._spec import RULES

import cases
from conftest import run_python


def test_availability_never_raises():
    assert isinstance(gdfast.cuda.compiled, bool)
    assert isinstance(gdfast.cuda.is_available(), bool)
    assert gdfast.cuda.device_count() >= 0
    if not gdfast.cuda.compiled:
        assert not gdfast.cuda.is_available() and gdfast.cuda.device_count() == 0


def test_import_without_driver_does_not_touch_cuda():
    out = run_python("import gdfast; print(gdfast.cuda.compiled, gdfast.cuda.device_count())",
                     CUDA_VISIBLE_DEVICES="")
    assert out.returncode == 0, out.stderr
    assert out.stdout.split()[1] == "0"


torch = pytest.importorskip("torch") if gdfast.cuda.is_available() else None
needs_gpu = pytest.mark.skipif(
    not (gdfast.cuda.is_available() and torch is not None and torch.cuda.is_available()),
    reason="needs gdfast's CUDA kernels, torch with CUDA and a GPU")
pytestmark = [pytest.mark.cuda]

SIZES = [0, 1, 3, 4, 5, 7, 8, 9, 1023, 1024, 1025, 4096 * 3 + 5, 1_000_003]
# Every rule of the registry, with each of its cases' large variants (their widest options).
CONFIGS = {f"{case.name}-{name}": (case.name, case.hyper(case.variant(name)))
           for case in cases.CASES for name in case.large_variants}
# The two-pass rules (LAMB) take host scalars only on CUDA (test_two_pass_rules_on_cuda).
PER_TENSOR = {case.name for case in cases.CASES if case.per_tensor}


def _steps(rule_name, arrays, hyper, steps):
    """``steps`` calls of gdfast.ops.<rule>_ on (param, grad, *used states), scalar states
    carried from one call to the next."""
    rule = RULES[rule_name]
    op = getattr(gdfast.ops, rule_name + "_")
    p, g, *rest = arrays
    named = dict(zip(_extra_inputs(rule_name) + rule.used_states(hyper), rest))
    scalars = {}
    for step in range(1, steps + 1):
        scalars = op(p, g, **named, step=step, **hyper, **scalars) or {}


def _extra_inputs(rule_name):
    """The rule's read-only inputs beside the gradient (Sophia's hessian)."""
    return RULES[rule_name].inputs[1:]


def _used_states(rule_name, hyper):
    return len(RULES[rule_name].used_states(hyper))


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("n", SIZES, ids=lambda n: f"n={n}")
def test_gpu_bitwise_equals_cpu(config, n, dtype):
    rule_name, hyper = CONFIGS[config]
    rng = np.random.default_rng(n)
    # param, grad, the other inputs and the states, all nonnegative states (second moments,
    # step sizes)
    host = [rng.standard_normal(n).astype(dtype)
            for _ in range(2 + len(_extra_inputs(rule_name)))]
    host += [np.abs(rng.standard_normal(n)).astype(dtype)
             for _ in range(_used_states(rule_name, hyper))]
    device = [torch.from_numpy(a.copy()).cuda() for a in host]
    _steps(rule_name, host, hyper, 3)
    _steps(rule_name, device, hyper, 3)
    torch.cuda.synchronize()
    for h, d in zip(host, device):
        _assert_same_bits(torch.from_numpy(h), d.cpu())


def _assert_same_bits(expected, actual, name=""):
    """Bitwise equal, except that a NaN need only be a NaN: its sign and payload are the
    hardware's (x86 makes 0xFFC00000 of sqrt(-1), CUDA 0x7FFFFFFF)."""
    nan = torch.isnan(expected.float())
    assert torch.equal(nan, torch.isnan(actual.float())), f"{name}: NaN in different places"
    width = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[
        expected.element_size()]
    same = expected.view(width) == actual.view(width)
    assert bool((same | nan).all()), f"{name}: {int((~same & ~nan).sum())} elements differ"


# Storage layouts of issue 12: (param, grad, states, master copy). The CUDA loop narrows with
# the very functions of core/rounding.h the CPU kernels match, so results are bitwise the CPU's.
LAYOUTS = {
    "all-bf16": ("bfloat16", "bfloat16", "bfloat16", False),
    "bf16-float32-states": ("bfloat16", "bfloat16", "float32", False),
    "bf16-master": ("bfloat16", "bfloat16", "float32", True),
    "all-f16": ("float16", "float16", "float16", False),
    "float32-bf16-states": ("float32", "float32", "bfloat16", False),
    "float32-bf16-grad": ("float32", "bfloat16", "float32", False),
}


@needs_gpu
@pytest.mark.parametrize("rounding", ["nearest", "stochastic"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("n", [1, 1025, 1_000_003], ids=lambda n: f"n={n}")
def test_gpu_narrow_storage_bitwise_equals_cpu(config, layout, rounding, n):
    rule_name, hyper = CONFIGS[config]
    param_t, grad_t, state_t, master = LAYOUTS[layout]
    if master and rounding == "stochastic":
        pytest.skip("a param written from its master copy rounds to nearest")
    gen = torch.Generator().manual_seed(n)
    rule = RULES[rule_name]
    used = rule.used_states(hyper)
    p32 = torch.randn(n, generator=gen)
    host = {"param": p32.to(getattr(torch, param_t)),
            "grad": torch.randn(n, generator=gen).to(getattr(torch, grad_t))}
    host.update({name: torch.randn(n, generator=gen).to(getattr(torch, grad_t))
                 for name in _extra_inputs(rule_name)})
    host.update({name: torch.randn(n, generator=gen).abs().to(getattr(torch, state_t))
                 for name in used})
    if master:
        host["master_param"] = p32.clone()
    device = {k: v.cuda() for k, v in host.items()}
    op = getattr(gdfast.ops, rule_name + "_")
    options = {"stochastic_rounding": rounding == "stochastic", "seed": 11}
    for arrays in (host, device):
        scalars = {}
        for step in range(1, 4):
            named = {k: arrays[k] for k in _extra_inputs(rule_name) + used}
            scalars = op(arrays["param"], arrays["grad"], **named,
                         step=step, **hyper, **scalars, **options,
                         master_param=arrays.get("master_param")) or {}
    torch.cuda.synchronize()
    for name, h in host.items():
        _assert_same_bits(h, device[name].cpu(), name)


@needs_gpu
def test_unaligned_views_and_lists_of_mixed_sizes():
    sizes = [0, 1, 5, 4097, 70_001]
    rng = np.random.default_rng(0)
    host = [[rng.standard_normal(n + 1).astype(np.float32)[1:] for n in sizes] for _ in range(4)]
    device = [[torch.from_numpy(np.concatenate([[0.0], a]).astype(np.float32)).cuda()[1:]
               for a in arrays] for arrays in host]
    for arrays in (host, device):
        for x in arrays[3]:
            x.abs_() if torch.is_tensor(x) else np.abs(x, out=x)
        gdfast.ops.adam_(*arrays, step=1, lr=1e-2)
    torch.cuda.synchronize()
    for hs, ds in zip(host, device):
        for h, d in zip(hs, ds):
            np.testing.assert_array_equal(d.cpu().numpy(), h)


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_chunk_size_changes_no_result(dtype):
    """How many elements each block takes (tuned by set_cuda_chunk_unroll) moves the
    boundaries between blocks, never a result: bitwise the CPU's at every size."""
    from gdfast import _core

    sizes = [1, 1023, 1024, 4097, 65_537, 300_001]
    gen = torch.Generator().manual_seed(3)
    start = [[torch.randn(n, generator=gen).to(getattr(torch, dtype)) for n in sizes]
             for _ in range(4)]
    start[3] = [x.abs() for x in start[3]]
    host = [[x.clone() for x in arrays] for arrays in start]
    gdfast.ops.adam_(*host, step=1, lr=1e-2)
    stored = dtype != "float32"  # (the narrow-storage loop has its own chunk size)
    default = _core.set_cuda_chunk_unroll(1, stored)  # (returns the value it replaces)
    try:
        for unroll in (1, 3, 64):
            _core.set_cuda_chunk_unroll(unroll, stored)
            device = [[x.cuda() for x in arrays] for arrays in start]
            gdfast.ops.adam_(*device, step=1, lr=1e-2)
            torch.cuda.synchronize()
            for hs, ds in zip(host, device):
                for h, d in zip(hs, ds):
                    _assert_same_bits(h, d.cpu(), f"unroll {unroll}")
    finally:
        _core.set_cuda_chunk_unroll(default, stored)
    with pytest.raises(ValueError, match="unroll: expected 1 to 64, got 0"):
        _core.set_cuda_chunk_unroll(0, stored)


@needs_gpu
@pytest.mark.parametrize("offset", [0, 1, 2, 3])
def test_narrow_storage_views_at_any_offset(offset):
    """bf16 arrays starting off the 8-byte boundary of the four-element loads: element by
    element there, bitwise as on the CPU."""
    gen = torch.Generator().manual_seed(offset)
    host = [torch.randn(70_001 + offset, generator=gen).to(torch.bfloat16)[offset:]
            for _ in range(4)]
    host[3] = host[3].abs()
    device = [torch.cat([torch.zeros(offset, dtype=torch.bfloat16), h]).cuda()[offset:]
              for h in host]
    for arrays in (host, device):
        gdfast.ops.adam_(*arrays, step=1, lr=1e-2)
    torch.cuda.synchronize()
    for h, d in zip(host, device):
        _assert_same_bits(h, d.cpu())


@needs_gpu
@pytest.mark.parametrize("amsgrad", [False, True])
def test_trajectory_matches_torch_fused_cuda(amsgrad):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(),
                                torch.nn.Linear(128, 10)).cuda()
    twin = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.GELU(),
                               torch.nn.Linear(128, 10)).cuda()
    twin.load_state_dict(model.state_dict())
    import gdfast.torch as gt

    ours = gt.AdamW(model.parameters(), lr=1e-3, amsgrad=amsgrad)
    theirs = torch.optim.AdamW(twin.parameters(), lr=1e-3, amsgrad=amsgrad, fused=True)
    x = torch.randn(256, 64, device="cuda")
    y = torch.randint(0, 10, (256,), device="cuda")
    for _ in range(50):
        for m, opt in ((model, ours), (twin, theirs)):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(m(x), y).backward()
            opt.step()
    # Both fp32; torch's fused kernel contracts FMAs, ours does not: a few ulps per step.
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@needs_gpu
def test_runs_on_the_callers_stream():
    n = 1 << 22
    p = torch.randn(n, device="cuda")
    g = torch.randn(n, device="cuda")
    expected_p, expected_g = p.clone(), g.clone()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # ~50 ms: a step launched elsewhere would run first
        g.mul_(2.0)  # queued on the side stream: the step must see it (stream order)
        gdfast.ops.sgd_(p, g, step=1, lr=0.5)
    side.synchronize()
    torch.testing.assert_close(p, expected_p - 0.5 * (2.0 * expected_g), rtol=0, atol=0)


@needs_gpu
def test_cuda_graph_capture_and_replay():
    import gdfast.torch as gt

    torch.manual_seed(0)
    params = [torch.randn(1000, device="cuda", requires_grad=True) for _ in range(3)]
    twins = [p.detach().clone().requires_grad_(True) for p in params]
    ours = gt.Adam(params, lr=torch.tensor(1e-2, device="cuda"), capturable=True)
    theirs = torch.optim.Adam(twins, lr=1e-2, capturable=True, foreach=False)
    grads = [torch.randn(1000, device="cuda") for _ in params]
    for p, t, g in zip(params, twins, grads):
        p.grad, t.grad = g.clone(), g.clone()
    ours.step()  # warm-up creates the state outside the graph
    theirs.step()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ours.step()
    for _ in range(5):
        graph.replay()
        theirs.step()
    torch.cuda.synchronize()
    for p, t in zip(params, twins):
        torch.testing.assert_close(p, t, rtol=1e-5, atol=1e-6)
    assert int(ours.state[params[0]]["step"]) == 6  # the warm-up and 5 replays


@needs_gpu
def test_amp_found_inf_skips_on_device():
    p = torch.ones(100, device="cuda")
    g = torch.ones(100, device="cuda")
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    found = torch.ones(1, device="cuda")
    gdfast.ops.adam_(p, g, m, v, step=1, found_inf=found,
                     grad_scale=torch.full((1,), 2.0, device="cuda"))
    assert torch.equal(p, torch.ones_like(p)) and not m.any()
    found.zero_()
    gdfast.ops.adam_(p, g, m, v, step=1, found_inf=found,
                     grad_scale=torch.full((1,), 2.0, device="cuda"))
    torch.testing.assert_close(m, torch.full_like(m, 0.05))  # (1 - beta1) * g / 2


@needs_gpu
def test_cupy_arrays_bitwise_equal_cpu():
    cupy = pytest.importorskip("cupy")
    rng = np.random.default_rng(5)
    host = [rng.standard_normal(70_001).astype(np.float32) for _ in range(4)]
    host[3] = np.abs(host[3])
    device = [cupy.asarray(a) for a in host]
    for step in range(1, 4):
        for arrays in (host, device):
            gdfast.ops.adam_(*arrays, step=step, lr=1e-2, weight_decay=0.1,
                             decoupled_weight_decay=True)
    cupy.cuda.get_current_stream().synchronize()
    for h, d in zip(host, device):
        np.testing.assert_array_equal(cupy.asnumpy(d).view(np.uint32), h.view(np.uint32))


@needs_gpu
def test_cupy_runs_on_the_callers_stream():
    cupy = pytest.importorskip("cupy")
    n = 1 << 22
    p = cupy.random.standard_normal(n, dtype=cupy.float32)
    g = cupy.random.standard_normal(n, dtype=cupy.float32)
    expected = cupy.asnumpy(p) - np.float32(0.5) * (np.float32(2.0) * cupy.asnumpy(g))
    side = cupy.cuda.Stream(non_blocking=True)
    with side, torch.cuda.stream(torch.cuda.ExternalStream(side.ptr)):
        torch.cuda._sleep(100_000_000)  # ~50 ms: a step launched elsewhere would run first
        g *= 2.0  # queued on the side stream: the step must see it (stream order)
        gdfast.ops.sgd_(p, g, step=1, lr=0.5)
    side.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(p), expected)


@needs_gpu
def test_cupy_param_with_torch_states():
    """A call whose first array is CuPy's runs on CuPy's stream and takes torch tensors through
    DLPack (which orders torch's stream before it)."""
    cupy = pytest.importorskip("cupy")
    host = [np.random.default_rng(6).standard_normal(4099).astype(np.float32) for _ in range(4)]
    host[3] = np.abs(host[3])
    device = [cupy.asarray(host[0])] + [torch.from_numpy(a.copy()).cuda() for a in host[1:]]
    for arrays in (host, device):
        gdfast.ops.adam_(*arrays, step=1, lr=1e-2)
    torch.cuda.synchronize()
    np.testing.assert_array_equal(cupy.asnumpy(device[0]), host[0])
    for h, d in zip(host[1:], device[1:]):
        np.testing.assert_array_equal(d.cpu().numpy(), h)


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_pass_rules_on_cuda(dtype):
    """LAMB over a list of tensors (chunk edges, an empty one, a partial last chunk), clipped
    by the global norm, through the op and the torch class (with AMP's device grad_scale and
    found_inf): bitwise the CPU's. Device scalars are refused by name, with nothing
    written."""
    import gdfast.torch as gt

    dt = getattr(torch, dtype)
    gen = torch.Generator().manual_seed(2)
    sizes = [16_385, 0, 1, 16_384, 200_003]
    host = [[torch.randn(n, generator=gen, dtype=dt) for n in sizes] for _ in range(2)]
    host += [[torch.zeros(n, dtype=dt) for n in sizes] for _ in range(2)]
    device = [[x.cuda() for x in arrays] for arrays in host]
    for p, g, m, v in (host, device):
        for step in range(1, 4):
            gdfast.ops.lamb_(p, g, m, v, step=step, lr=1e-2, weight_decay=0.1,
                             max_grad_norm=1.0)
    torch.cuda.synchronize()
    for name, h, d in zip(("param", "grad", "exp_avg", "exp_avg_sq"), host, device):
        for t, (a, b) in enumerate(zip(h, d)):
            _assert_same_bits(a, b.cpu(), f"{name}[{t}]")
    runs = []
    for where in ("cpu", "cuda"):
        params = [torch.nn.Parameter(x.clone().to(where)) for x in host[0]]
        opt = gt.Lamb(params, lr=1e-2, weight_decay=0.01, pre_norm=True, max_grad_norm=0.5)
        for step in range(3):
            for p, g in zip(params, host[1]):
                p.grad = (g * (step + 1) * 4.0).to(where)
            opt.grad_scale = torch.full((1,), 4.0, device=where)  # (as GradScaler sets them:
            opt.found_inf = torch.zeros(1, device=where)  # read back for LAMB on CUDA)
            opt.step()
        runs.append((params, opt))
    (cpu_params, cpu_opt), (gpu_params, gpu_opt) = runs
    for k, (a, b) in enumerate(zip(cpu_params, gpu_params)):
        _assert_same_bits(a.detach(), b.detach().cpu(), f"class param[{k}]")
        _assert_same_bits(cpu_opt.state[a]["exp_avg_sq"], gpu_opt.state[b]["exp_avg_sq"].cpu())
    assert cpu_opt.last_grad_norm == gpu_opt.last_grad_norm

    p, g, m, v = (torch.ones(8, device="cuda") for _ in range(4))
    with pytest.raises(ValueError, match=r"lamb: on CUDA, grad_scale, found_inf, lr and step"):
        gdfast.ops.lamb_(p, g, m, v, step=1, found_inf=torch.zeros(1, device="cuda"))
    assert torch.equal(p, torch.ones(8, device="cuda")) and torch.equal(m, p)


@needs_gpu
@pytest.mark.parametrize("layout", ["all-bf16", "all-bf16-sr", "bf16-master",
                                    "float32-bf16-states", "float32-8bit", "bf16-master-8bit"])
def test_lamb_narrow_monitored_and_clipped_bitwise_equals_cpu(layout):
    """LAMB with narrow arrays, a master copy or 8-bit states over a list (chunk edges, a
    block's edge, an empty tensor; each tensor its own rounding key), monitored and clipped by
    value: arrays (codes and blocks' maxima too) and norms bitwise the CPU's (pass 1 sums the
    states as stored, on both devices)."""
    stochastic = layout.endswith("-sr")
    eight = layout.endswith("-8bit")
    layout = {"float32-8bit": "float32-bf16-states"}.get(layout, layout)
    layout = layout.removesuffix("-sr").removesuffix("-8bit")
    param_t, grad_t, state_t, master = LAYOUTS[layout]
    gen = torch.Generator().manual_seed(4)
    sizes = [16_385, 0, 1, 200_003]
    p32 = [torch.randn(n, generator=gen) for n in sizes]
    state = torch.uint8 if eight else getattr(torch, state_t)
    host = {"param": [p.to(getattr(torch, param_t)) for p in p32],
            "grad": [torch.randn(n, generator=gen).to(getattr(torch, grad_t)) for n in sizes],
            "exp_avg": [torch.zeros(n, dtype=state) for n in sizes],
            "exp_avg_sq": [torch.zeros(n, dtype=state) for n in sizes]}
    if eight:
        for name in ("exp_avg", "exp_avg_sq"):
            host[name + "_absmax"] = [torch.zeros(-(-n // 256)) for n in sizes]
    if master:
        host["master_param"] = [p.clone() for p in p32]
    device = {k: [x.cuda() for x in v] for k, v in host.items()}
    norms = []
    for arrays in (host, device):
        absmax = {name: arrays[name + "_absmax"] for name in ("exp_avg", "exp_avg_sq")} \
            if eight else None
        for step in range(1, 4):
            norms.append(gdfast.ops.lamb_(
                arrays["param"], arrays["grad"], arrays["exp_avg"], arrays["exp_avg_sq"],
                step=step, lr=1e-2, weight_decay=0.1, max_grad_value=1.0, monitor=True,
                master_param=arrays.get("master_param"), stochastic_rounding=stochastic,
                seed=3, param_index=[7, 2, 9, 4], absmax=absmax))
    torch.cuda.synchronize()
    assert norms[:3] == norms[3:]
    for name, hs in host.items():
        for t, h in enumerate(hs):
            _assert_same_bits(h, device[name][t].cpu(), f"{name}[{t}]")


@needs_gpu
@pytest.mark.parametrize("defect, message", [
    ("requires_grad", r"exp_avg: could not be exported through DLPack"),
    ("strided", r"exp_avg: must be C-contiguous"),
    ("neg_view", r"exp_avg: is a negative-bit view"),
    ("inference", r"exp_avg: is an inference tensor"),
    ("int32", r"exp_avg: expected float32, float64, bfloat16 or float16"),
    ("shape", r"exp_avg: shape \(9,\) does not match param shape \(8,\)"),
])
def test_torch_cuda_tensors_checked_as_through_dlpack(defect, message):
    """Plain torch CUDA tensors are read from their attributes, not exported through DLPack;
    whatever that reading does not take goes through DLPack, whose checks name the problem."""
    p, g, v = (torch.zeros(8, device="cuda") for _ in range(3))
    m = {"requires_grad": lambda: torch.zeros(8, device="cuda", requires_grad=True),
         "strided": lambda: torch.zeros(16, device="cuda")[::2],
         "neg_view": lambda: torch._neg_view(torch.zeros(8, device="cuda")),
         "inference": lambda: _inference_zeros(8),
         "int32": lambda: torch.zeros(8, device="cuda", dtype=torch.int32),
         "shape": lambda: torch.zeros(9, device="cuda")}[defect]()
    before = [t.clone() for t in (p, g, v)]
    with pytest.raises((TypeError, ValueError), match=message):
        gdfast.ops.adam_(p, g, m, v, step=1, lr=0.1)
    for t, b in zip((p, g, v), before):
        assert torch.equal(t, b)


def _inference_zeros(n):
    with torch.inference_mode():
        return torch.zeros(n, device="cuda")


@needs_gpu
def test_mixed_devices_rejected():
    p = torch.zeros(4, device="cuda")
    with pytest.raises(ValueError, match=r"grad: is on cpu but param is on cuda:0"):
        gdfast.ops.sgd_(p, torch.zeros(4), step=1, lr=0.1)


@needs_gpu
def test_torch_grads_off_the_one_pass_read():
    """gdfast.torch reads a CUDA batch's plain grads in one C++ pass; a transposed grad and
    one that requires grad take the Python path and step as contiguous, detached copies would;
    a grad on another device is named, nothing written."""
    import gdfast.torch as gt

    def stepped(grad):
        p = torch.nn.Parameter(torch.linspace(-1, 1, 8, device="cuda").view(4, 2))
        q = torch.nn.Parameter(torch.ones(3, device="cuda"))  # (a plain grad beside it)
        opt = gt.SGD([q, p], lr=0.5)  # (the update is the grad itself: its order shows)
        p.grad, q.grad = grad, torch.ones(3, device="cuda")
        opt.step()
        return p.detach()

    base = torch.arange(8.0, device="cuda").view(2, 4)
    expected = stepped(base.t().contiguous())
    assert not torch.equal(expected, stepped(base.view(4, 2)))  # (the order matters)
    assert torch.equal(stepped(base.t()), expected)
    assert torch.equal(stepped(base.t().contiguous().requires_grad_()), expected)
    p = torch.nn.Parameter(torch.ones(4, device="cuda"))
    opt = gt.SGD([p], lr=0.1)
    with torch.no_grad():  # (torch's .grad setter refuses another device; .data does not)
        p.grad = torch.ones(4, device="cuda")
        p.grad.data = torch.ones(4)
    with pytest.raises(ValueError, match=r"grad.*is on cpu but param.*is on cuda:0"):
        opt.step()
    assert torch.equal(p.detach(), torch.ones(4, device="cuda"))


# The deterministic reduction (issue 13): on the device as on the CPU, chunks of 16384 summed
# in the order csrc/cpu/kernels/reduce.h fixes and added in index order, so norms and clipping
# are bitwise the CPU's.
REDUCE_SIZES = [0, 1, 15, 63, 64, 65, 16_383, 16_384, 16_385, 3 * 16_384 + 17, 1_000_003]


@needs_gpu
@pytest.mark.parametrize("dtype", ["float32", "float64", "bfloat16", "float16"])
def test_sum_squares_bitwise_equals_cpu(dtype):
    gen = torch.Generator().manual_seed(3)
    host = [(torch.randn(n, generator=gen, dtype=torch.float64) * (1 + t)).to(getattr(torch, dtype))
            for t, n in enumerate(REDUCE_SIZES)]
    device = [h.cuda() for h in host]
    expected = gdfast._core.sum_squares(host, "grad")
    assert gdfast._core.sum_squares(device, "grad", 1) == expected
    assert gdfast.norms(device) == gdfast.norms(host)
    assert gdfast.global_norm(device) == gdfast.global_norm(host)
    assert gdfast.global_norm(device[-1]) == gdfast.global_norm(host[-1])


@needs_gpu
def test_sum_squares_of_cupy_and_on_the_callers_stream():
    cupy = pytest.importorskip("cupy")
    host = np.random.default_rng(4).standard_normal(1 << 22).astype(np.float32)
    expected = gdfast.global_norm(2.0 * host)
    assert gdfast.global_norm(cupy.asarray(2.0 * host)) == expected
    g = torch.from_numpy(host).cuda()
    side = torch.cuda.Stream()
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)  # ~50 ms: a sum read elsewhere would miss the write
        g.mul_(2.0)
        assert gdfast.global_norm(g) == expected


def _clip_arrays(dtype=None):
    dtype = dtype or torch.float32
    gen = torch.Generator().manual_seed(9)
    sizes = [5, 16_385, 70_001]
    return [[(torch.randn(n, generator=gen) * 3).to(dtype) for n in sizes] for _ in range(4)]


@needs_gpu
@pytest.mark.parametrize("amp", ["none", "host", "device"])
def test_clipping_by_norm_bitwise_equals_cpu(amp):
    """gdfast.ops.adam_ (AdamW) with max_grad_norm on CUDA tensors: the same norm, factor and
    step as on the CPU, with AMP's grad_scale as a number or a device tensor (read back)."""
    host = _clip_arrays()
    host[3] = [v.abs() for v in host[3]]  # (exp_avg_sq)
    device = [[x.cuda() for x in arrays] for arrays in host]
    for arrays in (host, device):
        p, g, m, v = arrays
        on_cuda = p[0].is_cuda
        kw = {"none": {}, "host": {"grad_scale": 512.0}}.get(amp)
        if kw is None:  # (a device grad_scale comes with a device found_inf, as from GradScaler)
            kw = {"grad_scale": torch.full((1,), 512.0, device=p[0].device)}
            if on_cuda:
                kw["found_inf"] = torch.zeros(1, device="cuda")
        factor = 1.0 if amp == "none" else 512.0
        for step in (1, 2):
            gdfast.ops.adam_(p, [x * (step * factor) for x in g], m, v, step=step, lr=1e-2,
                             weight_decay=0.1, decoupled_weight_decay=True, max_grad_norm=0.5,
                             **kw)
    torch.cuda.synchronize()
    for name, h, d in zip(("param", "grad", "exp_avg", "exp_avg_sq"), host, device):
        for t, (a, b) in enumerate(zip(h, d)):
            _assert_same_bits(a, b.cpu(), f"{name}[{t}]")


@needs_gpu
@pytest.mark.parametrize("per_group", [False, True])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_torch_class_clipping_on_cuda(per_group, dtype):
    """gdfast.torch.AdamW(max_grad_norm=...) on CUDA params: bitwise its CPU run (norm,
    last_grad_norm, params, states), with a GradScaler-style device grad_scale and found_inf;
    and torch's clip_grad_norm_ then fused AdamW within the tolerance tests/test_clip.py states."""
    import gdfast.torch as gt

    dt = getattr(torch, dtype)
    host_p, grads_1, grads_2, _ = _clip_arrays(dt)
    runs = {}
    for device in ("cpu", "cuda"):
        params = [torch.nn.Parameter(p.clone().to(device)) for p in host_p]
        groups = [{"params": params[:1], "max_grad_norm": 0.25, "clip_per_group": per_group},
                  {"params": params[1:], "max_grad_norm": 0.5, "clip_per_group": per_group}]
        opt = gt.AdamW(groups, lr=1e-2, weight_decay=0.1)
        norms = []
        for grads in (grads_1, grads_2):
            for p, g in zip(params, grads):
                p.grad = (g * 256.0).to(device)
            opt.grad_scale = torch.full((1,), 256.0, device=device)
            opt.found_inf = torch.zeros(1, device=device)
            opt.step()
            norms.append(opt.last_grad_norm)
        runs[device] = params, opt, norms
    (cpu_p, cpu_opt, cpu_norms), (gpu_p, gpu_opt, gpu_norms) = runs["cpu"], runs["cuda"]
    assert gpu_norms == cpu_norms and (cpu_norms[0] is None) == per_group
    for k, (a, b) in enumerate(zip(cpu_p, gpu_p)):
        _assert_same_bits(a.detach(), b.detach().cpu(), f"param[{k}]")
        for key in ("exp_avg", "exp_avg_sq"):
            _assert_same_bits(cpu_opt.state[a][key], gpu_opt.state[b][key].cpu(), key)
    if dtype == "float32" and not per_group:
        twins = [torch.nn.Parameter(p.clone().cuda()) for p in host_p]
        ref = torch.optim.AdamW([{"params": twins[:1]}, {"params": twins[1:]}], lr=1e-2,
                                weight_decay=0.1, fused=True)
        for grads in (grads_1, grads_2):
            for p, g in zip(twins, grads):
                p.grad = g.cuda()
            total = torch.nn.utils.get_total_norm([p.grad for p in twins])  # (shared, as ours)
            torch.nn.utils.clip_grads_with_norm_(twins[:1], 0.25, total)
            torch.nn.utils.clip_grads_with_norm_(twins[1:], 0.5, total)
            ref.step()
        for a, b in zip(twins, gpu_p):
            torch.testing.assert_close(a.detach(), b.detach(), rtol=1e-5, atol=1e-6)


MONITOR_NAMES = ("grad_norm", "update_norm", "param_norm")


def _monitored_steps(rule_name, arrays, hyper, steps):
    """``steps`` monitored calls of gdfast.ops.<rule>_ on lists (param, grad, *inputs,
    *states), scalar states carried; the norms of each call."""
    rule = RULES[rule_name]
    op = getattr(gdfast.ops, rule_name + "_")
    p, g, *rest = arrays
    named = dict(zip(_extra_inputs(rule_name) + rule.used_states(hyper), rest))
    scalars, norms = {}, []
    for step in range(1, steps + 1):
        out = op(p, g, **named, step=step, **hyper, **scalars, monitor=True)
        norms.append({k: out[k] for k in MONITOR_NAMES})
        scalars = {k: v for k, v in out.items() if k not in MONITOR_NAMES}
    return norms


@needs_gpu
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_monitoring_bitwise_equals_cpu(config, dtype):
    """monitor=True on CUDA: every rule (LAMB's two passes too), the norms bitwise the CPU's
    (the same chunked sums) and the arrays as unmonitored steps leave them."""
    rule_name, hyper = CONFIGS[config]
    rng = np.random.default_rng(8)
    sizes = [16_385, 0, 1, 40_001]
    inputs = 2 + len(_extra_inputs(rule_name))
    host = [[rng.standard_normal(n).astype(dtype) for n in sizes] for _ in range(inputs)]
    host += [[np.abs(rng.standard_normal(n)).astype(dtype) for n in sizes]
             for _ in range(_used_states(rule_name, hyper))]
    device = [[torch.from_numpy(a.copy()).cuda() for a in arrays] for arrays in host]
    plain = [[torch.from_numpy(a.copy()).cuda() for a in arrays] for arrays in host]
    expected = _monitored_steps(rule_name, host, hyper, 2)
    for ours, theirs in zip(_monitored_steps(rule_name, device, hyper, 2), expected):
        for name in MONITOR_NAMES:  # (a NaN need only be a NaN)
            both_nan = math.isnan(ours[name]) and math.isnan(theirs[name])
            assert ours[name] == theirs[name] or both_nan, name
    for t in range(len(sizes)):  # (unmonitored, a tensor a call: the same arrays)
        _steps(rule_name, [arrays[t] for arrays in plain], hyper, 2)
    torch.cuda.synchronize()
    for k, (h, d, q) in enumerate(zip(host, device, plain)):
        for t in range(len(sizes)):
            _assert_same_bits(torch.from_numpy(h[t]), d[t].cpu(), f"array {k}[{t}]")
            _assert_same_bits(q[t].cpu(), d[t].cpu(), f"unmonitored {k}[{t}]")


@needs_gpu
def test_monitoring_on_cuda_with_amp_and_in_the_classes():
    """A device found_inf that skips the step: nothing written, the norms of what was read
    (update 0). A device grad_scale unscales the gradients' norm. The torch classes'
    last_norms bitwise their CPU run's. Narrow arrays are refused by name."""
    import gdfast.torch as gt

    gen = torch.Generator().manual_seed(6)
    p = torch.randn(50_000, generator=gen).cuda()
    g = torch.randn(50_000, generator=gen).cuda() * 64.0
    m, v = torch.zeros_like(p), torch.zeros_like(p)
    before = p.clone()
    scale = torch.full((1,), 64.0, device="cuda")
    out = gdfast.ops.adam_(p, g, m, v, step=1, grad_scale=scale, monitor=True,
                           found_inf=torch.ones(1, device="cuda"))
    assert torch.equal(p, before) and not m.any()
    # (global_norm sums in another fixed order than the step's: the last bits may differ)
    assert out["update_norm"] == 0.0
    assert math.isclose(out["grad_norm"], gdfast.global_norm(g) / 64.0, rel_tol=1e-12)
    assert math.isclose(out["param_norm"], gdfast.global_norm(p), rel_tol=1e-12)
    out = gdfast.ops.adam_(p, g, m, v, step=1, grad_scale=scale, monitor=True,
                           found_inf=torch.zeros(1, device="cuda"))
    host = [x.cpu() for x in (before, g, torch.zeros_like(m), torch.zeros_like(v))]
    assert gdfast.ops.adam_(*host, step=1, grad_scale=64.0, monitor=True) == out
    _assert_same_bits(host[0], p.cpu())

    last = []
    for where in ("cpu", "cuda"):
        params = [torch.nn.Parameter(x.clone().to(where)) for x in _clip_arrays()[0]]
        opt = gt.AdamW(params, lr=1e-2, monitor=True)
        for step in range(2):
            for q, grad in zip(params, _clip_arrays()[1]):
                q.grad = (grad * 8.0).to(where)
            opt.grad_scale = torch.full((1,), 8.0, device=where)
            opt.found_inf = torch.zeros(1, device=where)
            opt.step()
        last.append(opt.last_norms)
    assert last[0] == last[1] and last[0]["update_norm"] > 0

    q, gq = torch.ones(8, device="cuda", dtype=torch.bfloat16), torch.ones(8, device="cuda")
    with pytest.raises(ValueError, match=r"monitor: on CUDA, float32 or float64 arrays only"):
        gdfast.ops.sgd_(q, gq.bfloat16(), step=1, lr=0.1, monitor=True)
    assert torch.equal(q, torch.ones(8, device="cuda", dtype=torch.bfloat16))


def _clamped_steps(rule_name, arrays, hyper, grad_scale, monitor):
    """Two calls of gdfast.ops.<rule>_ with max_grad_value=0.5 on (param, grad, *inputs,
    *states), scalar states carried; the norms of each call when monitored."""
    rule = RULES[rule_name]
    op = getattr(gdfast.ops, rule_name + "_")
    p, g, *rest = arrays
    named = dict(zip(_extra_inputs(rule_name) + rule.used_states(hyper), rest))
    scalars, norms = {}, []
    for step in (1, 2):
        out = op(p, g, **named, step=step, **hyper, **scalars, max_grad_value=0.5,
                 grad_scale=grad_scale, monitor=monitor) or {}
        norms.append({k: out.get(k) for k in MONITOR_NAMES})
        scalars = {k: v for k, v in out.items() if k not in MONITOR_NAMES}
    return norms


@needs_gpu
@pytest.mark.parametrize("path", ["float32", "float64", "monitored", "bfloat16",
                                  "device-grad-scale"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_clipping_by_value_bitwise_equals_cpu(config, path):
    """max_grad_value on CUDA, in each loop that steps (float32/float64, monitored, narrow
    storage, LAMB's first pass) and with a device grad_scale (the bound of the gradients as
    stored: times the loss scale): bitwise the CPU's step, the norms too, and the gradients
    unchanged. N(0, 1) gradients: about 60% of them clamped."""
    rule_name, hyper = CONFIGS[config]
    if rule_name in PER_TENSOR and path == "device-grad-scale":
        pytest.skip("two-pass rules take host scalars on CUDA")
    dtype = torch.float64 if path == "float64" else torch.float32
    gen = torch.Generator().manual_seed(9)
    n = 40_001
    host = [torch.randn(n, generator=gen, dtype=dtype)
            for _ in range(2 + len(_extra_inputs(rule_name)))]
    host += [torch.randn(n, generator=gen, dtype=dtype).abs()
             for _ in range(_used_states(rule_name, hyper))]
    if path == "bfloat16":
        host = [a.bfloat16() for a in host]
    if path == "device-grad-scale":
        host[1] *= 4.0  # (scaled gradients, as AMP's)
    device = [a.cuda() for a in host]
    grads = host[1].clone()
    scale = 4.0 if path == "device-grad-scale" else 1.0
    device_scale = torch.full((1,), 4.0, device="cuda") if path == "device-grad-scale" else 1.0
    monitor = path == "monitored"
    expected = _clamped_steps(rule_name, host, hyper, scale, monitor)
    for ours, theirs in zip(_clamped_steps(rule_name, device, hyper, device_scale, monitor),
                            expected):
        for name in MONITOR_NAMES:  # (a NaN need only be a NaN)
            same = ours[name] == theirs[name]
            assert same or (math.isnan(ours[name]) and math.isnan(theirs[name])), name
    torch.cuda.synchronize()
    for k, (h, d) in enumerate(zip(host, device)):
        _assert_same_bits(h, d.cpu(), f"array[{k}]")
    assert torch.equal(device[1].cpu(), grads)


# 8-bit blockwise states (core/quant8.h): a thread per element of a block, the block's new
# absmax one reduction; codes and absmax bitwise the CPU's, with every storage of the param.
QUANT8_CONFIGS = {
    "adamw": ("adam", {"lr": 1e-2, "weight_decay": 0.1, "decoupled_weight_decay": True}),
    "adam-amsgrad": ("adam", {"lr": 1e-2, "amsgrad": True}),
    "lion": ("lion", {"lr": 1e-3, "weight_decay": 0.1}),
    "sgd-nesterov": ("sgd", {"lr": 1e-2, "momentum": 0.9, "nesterov": True}),
    "rmsprop-centered": ("rmsprop", {"lr": 1e-2, "momentum": 0.5, "centered": True}),
    "lamb": ("lamb", {"lr": 1e-2, "weight_decay": 0.1}),
}


@needs_gpu
@pytest.mark.parametrize("max_grad_value", [None, 5e-3], ids=["unclipped", "clipped"])
@pytest.mark.parametrize("layout", ["float32", "bfloat16", "bfloat16-sr", "bfloat16-master"])
@pytest.mark.parametrize("config", sorted(QUANT8_CONFIGS))
def test_gpu_8bit_states_bitwise_equal_cpu(config, layout, max_grad_value):
    rule_name, hyper = QUANT8_CONFIGS[config]
    sizes = [1, 255, 256, 257, 16_384 + 300, 1_000_003]
    used = RULES[rule_name].used_states(hyper)
    gen = torch.Generator().manual_seed(7)
    dtype = torch.float32 if layout == "float32" else torch.bfloat16
    p32 = [torch.randn(n, generator=gen) for n in sizes]
    host = {"param": [p.to(dtype) for p in p32],
            "grad": [(torch.randn(n, generator=gen) * 1e-2).to(dtype) for n in sizes]}
    for name in used:
        host[name] = [torch.zeros(n, dtype=torch.uint8) for n in sizes]
        host[name + "_absmax"] = [torch.zeros(-(-n // 256)) for n in sizes]
    if layout == "bfloat16-master":
        host["master_param"] = [p.clone() for p in p32]
    device = {k: [x.cuda() for x in v] for k, v in host.items()}
    op = getattr(gdfast.ops, rule_name + "_")
    options = {"stochastic_rounding": layout == "bfloat16-sr", "seed": 5}
    for arrays in (host, device):
        for step in range(1, 4):
            op(arrays["param"], arrays["grad"], **{k: arrays[k] for k in used}, step=step,
               absmax={k: arrays[k + "_absmax"] for k in used},
               master_param=arrays.get("master_param"), max_grad_value=max_grad_value,
               **hyper, **options)
    torch.cuda.synchronize()
    for name, hs in host.items():
        for t, h in enumerate(hs):
            _assert_same_bits(h, device[name][t].cpu(), f"{name}[{t}]")


# Muon on CUDA: its two fused passes are the registry's partial rule (csrc/optim/muon.h), so
# they give the CPU's bits; the Newton-Schulz iteration between them is torch's matrix product
# on the device, whose bfloat16 results may differ from the CPU's in the last bits.
MUON_LAYOUTS = ["float32", "float64", "bfloat16", "bfloat16-master", "float32-8bit",
                "bfloat16-sr"]


def _muon_arrays(layout, gen):
    """(param, grad, buffer, iteration output, extras) of one 2-D param in ``layout``."""
    from gdfast import _muon

    shape = (300, 40)
    dtype = {"float32": torch.float32, "float64": torch.float64,
             "float32-8bit": torch.float32}.get(layout, torch.bfloat16)
    p32 = torch.randn(shape, generator=gen)
    param = p32.to(dtype)
    grad = torch.randn(shape, generator=gen).to(dtype)
    update = torch.randn(shape, generator=gen).to(
        torch.float64 if dtype == torch.float64 else torch.bfloat16)
    absmax = ()
    if layout == "float32-8bit":
        buffer = torch.zeros(shape, dtype=torch.uint8)
        absmax = (torch.zeros(-(-p32.numel() // 256)),)
    else:
        buffer = torch.zeros(shape, dtype=torch.float32 if layout == "bfloat16-master" else dtype)
    master = p32.clone() if layout == "bfloat16-master" else None
    rounding = (5, 3, 1) if layout == "bfloat16-sr" else None
    return [param, grad, buffer, update, master, *absmax], _muon.Extras(master, absmax, rounding)


@needs_gpu
@pytest.mark.parametrize("layout", MUON_LAYOUTS)
def test_muon_phases_bitwise_equal_cpu(layout):
    """Phase 1 (momentum, the iteration's input) and phase 2 (decay, step) on CUDA tensors:
    bitwise the CPU's, in every storage layout Muon's options make, over 3 steps."""
    from gdfast import _muon
    from gdfast._muon_torch import new_input

    group = dict(_muon.DEFAULTS, lr=0.02, max_grad_value=1.5)
    runs = []
    for device in ("cpu", "cuda"):
        host, extras = _muon_arrays(layout, torch.Generator().manual_seed(3))
        arrays = [None if a is None else a.to(device) for a in host]
        param, grad, buffer, update, master, *absmax = arrays
        extras = extras._replace(master=master, absmax=tuple(absmax))
        inputs = []
        for step in range(1, 4):
            extras = extras._replace(rounding=None if extras.rounding is None
                                     else (5, 3, step))
            x = new_input(param, extras.rounding is not None)
            _muon.momentum_phase(x, grad, buffer, group, 1.0, None, extras)
            _muon.apply_phase(param, update, group, None, extras)
            inputs.append(x)
        runs.append([a for a in arrays if a is not None] + inputs)
    torch.cuda.synchronize()
    for k, (h, d) in enumerate(zip(*runs)):
        _assert_same_bits(h, d.cpu(), f"array {k}")


def _muon_groups(params):
    return [{"params": params[:2], "max_grad_norm": 1.0},
            {"params": params[2:], "use_muon": False, "lr": 1e-3, "monitor": True}]


@needs_gpu
@pytest.mark.parametrize("options", [{}, {"master_weights": True}, {"optim_bits": 8},
                                     {"stochastic_rounding": True, "seed": 4}])
def test_torch_muon_on_cuda_follows_its_cpu_run(options):
    """gdfast.torch.Muon on CUDA params (a Muon group clipped by norm, a monitored AdamW
    group): the AdamW group, its norms and the norm the Muon group clips by are bitwise the
    CPU run's (no matrix product reaches them); the Muon params within 2^-4 of the largest
    step per step taken, as tests/test_muon.py bounds two bfloat16 iterations apart."""
    import gdfast.torch as gt

    dtype = torch.float32 if "optim_bits" in options else torch.bfloat16
    gen = torch.Generator().manual_seed(8)
    start = [torch.randn(s, generator=gen).to(dtype) for s in ((96, 64), (64, 300), (5000,))]
    grads = [[torch.randn(p.shape, generator=gen).to(dtype) for p in start] for _ in range(3)]
    runs = []
    for device in ("cpu", "cuda"):
        params = [torch.nn.Parameter(p.clone().to(device)) for p in start]
        opt = gt.Muon(_muon_groups(params), lr=0.02, **options)
        norms, moves = [], []
        for step_grads in grads:
            before = [p.detach().clone() for p in params]
            for p, g in zip(params, step_grads):
                p.grad = g.to(device)
            opt.step()
            norms.append((opt.last_grad_norm, opt.last_norms))
            moves.append(max((p.detach() - b).abs().max().item()
                             for p, b in zip(params[:2], before)))
        runs.append((params, opt, norms, moves))
    (cpu_p, cpu_opt, cpu_norms, moves), (gpu_p, gpu_opt, gpu_norms, _) = runs
    assert gpu_norms == cpu_norms
    _assert_same_bits(cpu_p[2].detach(), gpu_p[2].detach().cpu(), "AdamW group's param")
    for name in ("exp_avg", "exp_avg_sq"):
        _assert_same_bits(cpu_opt.state[cpu_p[2]][name], gpu_opt.state[gpu_p[2]][name].cpu(), name)
    bound = 2.0**-4 * max(moves) * len(grads)
    for a, b in zip(cpu_p[:2], gpu_p[:2]):
        assert (a.detach().float() - b.detach().cpu().float()).abs().max().item() <= bound
        kept = (o.state[p]["momentum_buffer"].dtype for o, p in ((cpu_opt, a), (gpu_opt, b)))
        assert len(set(kept)) == 1


@needs_gpu
def test_torch_muon_monitoring_on_cuda_is_refused_by_name():
    """Monitoring on CUDA takes float32/float64 arrays, and Muon's passes read and write the
    iteration's bfloat16 arrays: a monitored Muon group of float32 CUDA params is refused
    before anything changes (the AdamW group before it included)."""
    import gdfast.torch as gt

    params = [torch.nn.Parameter(torch.ones(5000, device="cuda")),
              torch.nn.Parameter(torch.ones(64, 32, device="cuda"))]
    opt = gt.Muon([{"params": params[:1], "use_muon": False},
                   {"params": params[1:], "monitor": True}])
    for p in params:
        p.grad = torch.ones_like(p)
    with pytest.raises(ValueError, match=r"monitor: on CUDA, Muon's passes"):
        opt.step()
    assert all(torch.equal(p, torch.ones_like(p)) for p in params) and not opt.state


@needs_gpu
def test_torch_muon_on_cuda_follows_torch_optim_muon():
    """gdfast.torch.Muon and torch.optim.Muon on the same CUDA params, 5 steps: within 2^-4
    of the largest step per step taken (tests/test_muon.py's bound: the two iterations'
    bfloat16 inputs may differ in a last bit of phase 1's float32 lerp)."""
    import gdfast.torch as gt

    gen = torch.Generator().manual_seed(9)
    p0 = torch.randn(128, 96, generator=gen)
    ours, theirs = (torch.nn.Parameter(p0.clone().cuda()) for _ in range(2))
    opt, ref = gt.Muon([ours], lr=0.02), torch.optim.Muon([theirs], lr=0.02)
    largest = 0.0
    for k in range(5):
        g = torch.randn(128, 96, generator=gen).cuda()
        ours.grad, theirs.grad = g.clone(), g.clone()
        before = theirs.detach().clone()
        opt.step()
        ref.step()
        largest = max(largest, (theirs.detach() - before).abs().max().item())
        assert (ours - theirs).abs().max().item() <= 2.0**-4 * largest * (k + 1)


@needs_gpu
def test_torch_muon_runs_on_the_callers_stream():
    """A Muon step inside torch.cuda.stream(side) queues its fused passes on that stream,
    after a gradient change queued there behind a 50 ms sleep: the same result as on the
    default stream with the change made first."""
    import gdfast.torch as gt

    p0 = torch.randn(256, 128, generator=torch.Generator().manual_seed(10)).cuda()
    g0 = torch.randn(256, 128, generator=torch.Generator().manual_seed(11)).cuda()
    expected = torch.nn.Parameter(p0.clone())
    expected.grad = 2.0 * g0
    gt.Muon([expected], lr=0.02).step()
    param = torch.nn.Parameter(p0.clone())
    param.grad = g0.clone()
    opt = gt.Muon([param], lr=0.02)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        torch.cuda._sleep(100_000_000)
        param.grad.mul_(2.0)
        opt.step()
    side.synchronize()
    _assert_same_bits(expected.detach().cpu(), param.detach().cpu(), "param")
