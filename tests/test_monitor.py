"""Monitoring (monitor=True): the L2 norms of the gradients, the updates (new param - old) and
the new params, summed inside the step's own pass.

The step itself must not change (bitwise, every rule, every ISA level). The norms are checked
against NumPy's float64 norms of the same values: the kernel squares float32 values exactly in
double and sums fixed chunks in double, so the only difference is the order of the double
additions, a relative error below n * 2**-53 (n <= 1e5 here: < 1.2e-11); RTOL = 1e-10 allows
that with a margin. For float64 arrays the squares round too (one more 2**-53 each). Across ISA
levels and thread counts the norms are compared bitwise.
"""

from __future__ import annotations

from typing import Any, Dict, List, Mapping, Tuple

import numpy as np
import pytest

import gdfast

import cases
from cases import CASES, Case

SIZES = (17, 1000, 33, 40_000)  # vector tails; two chunks of 16384 in the last; 2 threads split
RTOL = 1e-10
NAMES = ("grad_norm", "update_norm", "param_norm")


def _norm(arrays: List[np.ndarray]) -> float:
    return float(np.sqrt(sum(np.sum(np.square(a.astype(np.float64))) for a in arrays)))


def _run(case: Case, hyper: Mapping[str, Any], dtype, monitor: bool, steps: int = 3,
         sizes: Tuple[int, ...] = SIZES, **given: Any) -> Tuple[Dict[str, List[np.ndarray]],
                                                                 List[Dict[str, Any]]]:
    """The arrays after `steps` steps of the case's op on one list, and each step's norms
    with the values NumPy computes for them (``expected``)."""
    params = [cases.initial_param(n, dtype, seed=k) for k, n in enumerate(sizes)]
    names = case.state_names(hyper)
    states = {s: [np.full_like(p, case.start(s, hyper)) for p in params] for s in names}
    scalars: Dict[str, Any] = {}
    op = getattr(gdfast.ops, case.op)
    seen = []
    for t in range(1, steps + 1):
        grads = [cases.gradient(n, np.dtype(dtype).name, t, seed=k) for k, n in enumerate(sizes)]
        extra = case.inputs_at(grads, t)
        before = [p.copy() for p in params]
        result = op(params, grads, **extra, **states, step=t, **hyper, **scalars, **given,
                    monitor=monitor)
        if monitor:
            seen.append({"got": {n: result.pop(n) for n in NAMES},
                         "expected": {"grad_norm": _norm(grads),
                                      "update_norm": _norm([p - b for p, b in zip(params, before)]),
                                      "param_norm": _norm(params)}})
        if result:
            scalars.update(result)
    return {"param": params, **states}, seen


def _assert_same(a: Dict[str, List[np.ndarray]], b: Dict[str, List[np.ndarray]]) -> None:
    for name in a:
        for k, (x, y) in enumerate(zip(a[name], b[name])):
            np.testing.assert_array_equal(x, y, err_msg=f"{name}[{k}]", strict=True)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_every_rule_steps_the_same_and_reports_its_norms(case: Case, dtype, isa) -> None:
    hyper = case.hyper(case.variants[-1])
    monitored, seen = _run(case, hyper, dtype, True)
    plain, _ = _run(case, hyper, dtype, False)
    _assert_same(monitored, plain)
    for t, step in enumerate(seen, 1):
        for name in NAMES:
            assert step["got"][name] == pytest.approx(step["expected"][name], rel=RTOL,
                                                      abs=0.0), f"step {t}: {name}"
    assert seen[-1]["got"]["update_norm"] > 0  # (the check above is not of zeros)


@pytest.mark.parametrize("case", [cases.ADAM, cases.LAMB], ids=str)  # (one pass; two passes)
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_norms_are_bitwise_the_same_on_every_level_and_thread_count(case: Case, dtype) -> None:
    sizes = (0, 5, 3 * 16384 + 7, 100, 300_000)  # an empty tensor; chunks; a parallel split
    runs = set()
    threads = gdfast.get_num_threads()
    try:
        for level in gdfast.isa_info()["supported"]:
            for n in (1, 2, 3):
                gdfast.set_num_threads(n)
                with gdfast.use_isa(level):
                    _, seen = _run(case, case.hyper(case.variants[-1]), dtype, True, steps=1,
                                   sizes=sizes)
                runs.add(tuple(seen[0]["got"].values()))
    finally:
        gdfast.set_num_threads(threads)
    assert len(runs) == 1, runs


def test_grad_norm_is_of_the_unscaled_clamped_gradients_before_clipping_by_norm() -> None:
    hyper = cases.ADAM.hyper(cases.ADAM.variants[0])
    _, plain = _run(cases.ADAM, hyper, np.float32, True, steps=1)
    expected = plain[0]["expected"]["grad_norm"]
    # AMP: gradients 1024 times too large, unscaled in the step (a power of two: exact).
    params = [cases.initial_param(n, np.float32, seed=k) for k, n in enumerate(SIZES)]
    grads = [cases.gradient(n, "float32", 1, seed=k) * np.float32(1024)
             for k, n in enumerate(SIZES)]
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    out = gdfast.ops.adam_(params, grads, m, v, step=1, grad_scale=1024.0, monitor=True)
    assert out["grad_norm"] == pytest.approx(expected, rel=RTOL)
    # Clipped by norm: the norm before clipping (what clip_grad_norm_ returns).
    opt = gdfast.AdamW([cases.initial_param(n, np.float32, seed=k) for k, n in enumerate(SIZES)],
                       max_grad_norm=1.0, monitor=True)
    opt.step([cases.gradient(n, "float32", 1, seed=k) for k, n in enumerate(SIZES)])
    assert opt.last_norms is not None and opt.last_grad_norm is not None
    assert opt.last_norms["grad_norm"] == pytest.approx(opt.last_grad_norm, rel=RTOL)
    assert expected > 1.0  # (so the clip acted)
    # Clamped by value: the norm of the clamped gradients.
    grads = [cases.gradient(n, "float32", 1, seed=k) for k, n in enumerate(SIZES)]
    params = [cases.initial_param(n, np.float32, seed=k) for k, n in enumerate(SIZES)]
    m, v = [np.zeros_like(p) for p in params], [np.zeros_like(p) for p in params]
    out = gdfast.ops.adam_(params, grads, m, v, step=1, max_grad_value=0.01, monitor=True)
    assert out["grad_norm"] == pytest.approx(
        _norm([np.clip(g, np.float32(-0.01), np.float32(0.01)) for g in grads]), rel=RTOL)


def test_master_weights_norms_are_of_the_float32_master() -> None:
    ml_dtypes = pytest.importorskip("ml_dtypes")
    master = [cases.initial_param(n, np.float32, seed=k) for k, n in enumerate(SIZES)]
    params = [x.astype(ml_dtypes.bfloat16) for x in master]
    grads = [cases.gradient(n, "float32", 1, seed=k).astype(ml_dtypes.bfloat16)
             for k, n in enumerate(SIZES)]
    m, v = [np.zeros_like(x) for x in master], [np.zeros_like(x) for x in master]
    before = [x.copy() for x in master]
    out = gdfast.ops.adam_(params, grads, m, v, step=1, lr=1e-2, master_param=master,
                           monitor=True)
    assert out["grad_norm"] == pytest.approx(_norm(grads), rel=RTOL)
    assert out["update_norm"] == pytest.approx(_norm([a - b for a, b in zip(master, before)]),
                                               rel=RTOL)
    assert out["param_norm"] == pytest.approx(_norm(master), rel=RTOL)


def test_eight_bit_states_norms() -> None:
    n = 10_000
    p = cases.initial_param(n, np.float32, seed=0)
    g = cases.gradient(n, "float32", 1, seed=0)
    m, v = np.zeros(n, np.uint8), np.zeros(n, np.uint8)
    absmax = {"exp_avg": np.zeros(40, np.float32), "exp_avg_sq": np.zeros(40, np.float32)}
    before = p.copy()
    out = gdfast.ops.adam_(p, g, m, v, step=1, lr=1e-3, absmax=absmax, monitor=True)
    assert out["update_norm"] == pytest.approx(_norm([p - before]), rel=RTOL)
    assert out["param_norm"] == pytest.approx(_norm([p]), rel=RTOL)
    assert out["grad_norm"] == pytest.approx(_norm([g]), rel=RTOL)


def test_scalar_states_come_with_the_norms_and_a_skipped_step_has_none() -> None:
    p, g = np.ones(100, np.float32), np.full(100, 0.5, np.float32)
    out = gdfast.ops.nadam_(p, g, np.zeros_like(p), np.zeros_like(p), step=1, monitor=True)
    assert set(out) == {"mu_product", *NAMES}
    before = p.copy()
    skipped = gdfast.ops.sgd_(p, g, step=1, lr=1.0, found_inf=1.0, monitor=True)
    assert skipped == dict.fromkeys(NAMES)
    np.testing.assert_array_equal(p, before)


def test_bad_monitor_is_named_and_changes_nothing() -> None:
    p, g = np.ones(10, np.float32), np.ones(10, np.float32)
    for bad in (1, "yes", None):
        with pytest.raises(TypeError, match="monitor: expected True or False"):
            gdfast.ops.sgd_(p, g, step=1, lr=1.0, monitor=bad)
    np.testing.assert_array_equal(p, np.ones(10, np.float32))
    with pytest.raises(TypeError, match=r"monitor: expected True or False"):
        gdfast.SGD([p], lr=1.0, monitor=2).step([g])
    np.testing.assert_array_equal(p, np.ones(10, np.float32))


def test_classes_keep_the_norms_of_their_monitored_groups() -> None:
    params = [cases.initial_param(n, np.float32, seed=k) for k, n in enumerate(SIZES)]
    grads = [cases.gradient(n, "float32", 1, seed=k) for k, n in enumerate(SIZES)]
    opt = gdfast.AdamW([{"params": params[:2], "monitor": True}, {"params": params[2:]}],
                       lr=1e-2)
    before = [p.copy() for p in params]
    opt.step(grads)
    assert opt.last_norms is not None
    assert opt.last_norms["grad_norm"] == pytest.approx(_norm(grads[:2]), rel=RTOL)
    assert opt.last_norms["update_norm"] == pytest.approx(
        _norm([a - b for a, b in zip(params[:2], before[:2])]), rel=RTOL)
    assert opt.last_norms["param_norm"] == pytest.approx(_norm(params[:2]), rel=RTOL)
    opt.param_groups[0]["monitor"] = False
    opt.step(grads)
    assert opt.last_norms is None


def test_torch_classes_and_the_step_in_backward() -> None:
    torch = pytest.importorskip("torch")
    import gdfast.torch as gt

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.Tanh(), torch.nn.Linear(30, 4))
    twin = torch.nn.Sequential(torch.nn.Linear(20, 30), torch.nn.Tanh(), torch.nn.Linear(30, 4))
    twin.load_state_dict(model.state_dict())
    x = torch.randn(16, 20)
    opt = gt.AdamW(model.parameters(), lr=1e-2, monitor=True)
    model(x).square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()
    got = opt.last_norms
    assert got is not None

    def norm(tensors):
        return float(torch.linalg.vector_norm(torch.cat([t.detach().flatten().double()
                                                         for t in tensors])))

    assert got["grad_norm"] == pytest.approx(norm(grads), rel=RTOL)
    updates = [p.detach() - b for p, b in zip(model.parameters(), before)]
    assert got["update_norm"] == pytest.approx(norm(updates), rel=RTOL)
    assert got["param_norm"] == pytest.approx(norm(model.parameters()), rel=RTOL)
    # The step in backward: the norms over the pass's parts, as one step's.
    in_backward = gt.AdamW(twin.parameters(), lr=1e-2, monitor=True)
    hooks = gt.step_in_backward(in_backward)
    twin(x).square().sum().backward()
    hooks.remove()
    assert in_backward.last_norms is not None
    for name in NAMES:
        assert in_backward.last_norms[name] == pytest.approx(got[name], rel=RTOL)
