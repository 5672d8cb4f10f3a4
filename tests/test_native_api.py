"""gdfast's native API: the C API table (gdfast/capi.h) and its Cython face
(gdfast/cython_api.pxd). Builds the examples in examples/native as a user would, plus a Cython
module generated here that calls every optimizer's wrappers, and checks that every call is
bitwise what ``gdfast.ops`` computes, from several threads at once, and that every bad call
says what is wrong and writes nothing.

Needs a C compiler, Cython and setuptools, and the source tree's examples/ (skipped where the
tests run from an installed wheel without them, e.g. cibuildwheel's test step)."""

from __future__ import annotations

import importlib.util
import re
import threading
from pathlib import Path
from typing import Any, Dict, List, Sequence, Tuple

import numpy as np
import pytest

import gdfast
from gdfast._spec import RULES, Rule

from cases import CASES, Case, Variant, gradient, initial_param
from native_build import build, build_examples, load, why_cannot_build

ROOT = Path(__file__).resolve().parent.parent
OK, ERROR_ARGUMENT, ERROR_VALUE, ERROR_ABI = 0, 1, 2, 3
DTYPE_CODES = {np.float32: 0, np.float64: 1}


# -- a Cython module calling every rule's wrappers, generated from the registry --------------
def _checker_function(rule: Rule) -> str:
    struct, roles = f"{rule.name.capitalize()}Hyper", ["param", *rule.inputs, *rule.state_names]
    lines = [f"def step_{rule.name}(dict values, int dtype, uint64_t[::1] sizes, list roles, "
             "bint single):",
             f"    cdef {struct} h = {rule.name}_defaults()"]
    for f in rule.fields:
        lines.append(f"    if {f.name!r} in values: h.{f.name} = values[{f.name!r}]")
    lines += ["    if 'step' in values: h.step = values['step']",
              "    if 'grad_scale' in values: h.grad_scale = values['grad_scale']"]
    lines += [f"    cdef uint64_t[::1] r{i} = roles[{i}]" for i in range(len(roles))]
    lines.append("    cdef int status")
    single = ", ".join(("<const void*>" if n in rule.inputs else "<void*>") + f"r{i}[0]"
                       for i, n in enumerate(roles))
    multi = ", ".join(("<const void**>" if n in rule.inputs else "<void**>") + f"&r{i}[0]"
                      for i, n in enumerate(roles))
    lines += ["    if single:",
              f"        status = {rule.name}_step(&h, dtype, sizes[0], {single})",
              "    else:",
              f"        status = {rule.name}_step_multi(&h, dtype, sizes.shape[0], "
              f"<int64_t*>&sizes[0], {multi})"]
    scalars = ", ".join(f"{f.name!r}: h.{f.name}" for f in rule.scalar_states)
    lines.append(f"    return status, last_error().decode() if status else '', {{{scalars}}}")
    return "\n".join(lines)


def _checker_source() -> str:
    header = """\
# cython: language_level=3
from libc.stdint cimport int64_t, uint64_t
from gdfast.cython_api cimport *


def raw_step(int rule, uint64_t layout, int dtype):
    cdef int64_t n = 0
    status = step_v1(rule, layout, NULL, dtype, 0, &n, NULL)
    return status, last_error().decode()
"""
    return header + "\n\n" + "\n\n\n".join(_checker_function(r) for r in RULES.values()) + "\n"


_CHECKER_SETUP = """\
from Cython.Build import cythonize
from setuptools import Extension, setup
setup(name="native_check", ext_modules=cythonize([Extension("native_check", ["native_check.pyx"])]))
"""


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Dict[str, Any]:
    """The examples (built with their setup.py) and the checker module, imported."""
    why = why_cannot_build()
    if why:
        pytest.skip(f"native API tests need to build extensions: {why}")
    cython_example, c_example = build_examples(tmp_path_factory.mktemp("examples"))
    checker = tmp_path_factory.mktemp("checker")
    (checker / "native_check.pyx").write_text(_checker_source())
    (checker / "setup.py").write_text(_CHECKER_SETUP)
    build(checker)
    return {"cython": cython_example, "c": c_example, "check": load(checker, "native_check")}


# -- generated files ----------------------------------------------------------------------------
def test_generated_files_are_what_the_registry_gives() -> None:
    """capi_rules.h and cython_api.pxd are generated from the registry and committed; a rule
    changed without regenerating them fails here (and its calls with ERROR_ABI)."""
    tool = ROOT / "tools" / "gen_native_api.py"
    if not tool.exists():
        pytest.skip("tools/ is not here (tests run from an installed wheel)")
    spec = importlib.util.spec_from_file_location("gen_native_api", tool)
    assert spec is not None and spec.loader is not None
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    assert gen.main(["--check"]) == 0, "run python tools/gen_native_api.py"


def test_get_include_holds_the_headers() -> None:
    include = Path(gdfast.get_include())
    assert (include / "gdfast" / "capi.h").is_file()
    assert (include / "gdfast" / "capi_rules.h").is_file()


def test_the_capsule_is_the_c_api_table() -> None:
    assert type(gdfast._core._C_API).__name__ == "PyCapsule"
    assert "gdfast._core._C_API" in repr(gdfast._core._C_API)


# -- every rule, bitwise as gdfast.ops ----------------------------------------------------------
def _start_arrays(case: Case, hyper: Dict[str, Any], n: int, dtype: Any,
                  seed: int) -> Dict[str, np.ndarray]:
    arrays = {"param": initial_param(n, dtype, seed)}
    for name in case.state_names(hyper):
        arrays[name] = np.full(n, case.start(name, hyper), dtype)
    return arrays


def _addresses(arrays: Sequence[np.ndarray]) -> np.ndarray:
    return np.array([a.ctypes.data if a is not None else 0 for a in arrays], np.uint64)


def _native_step(check: Any, rule: Rule, values: Dict[str, Any], dtype: Any,
                 tensors: List[Dict[str, np.ndarray]], grads: List[np.ndarray],
                 single: bool) -> Tuple[int, str, Dict[str, float]]:
    sizes = np.array([t["param"].size for t in tensors], np.uint64)
    roles = [_addresses([t["param"] for t in tensors]), _addresses(grads)]
    # (inputs after the gradient: the gradient again, for these calls)
    roles += [_addresses(grads) for _ in rule.inputs[1:]]
    roles += [_addresses([t.get(name) for t in tensors]) for name in rule.state_names]
    fn = getattr(check, f"step_{rule.name}")
    return fn(values, DTYPE_CODES[dtype], sizes, roles, single)  # type: ignore[no-any-return]


def _variant_params() -> List[Any]:
    return [pytest.param(case, variant, id=f"{case.name}-{variant.name}")
            for case in CASES for variant in case.variants]


@pytest.mark.parametrize("case, variant", _variant_params())
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("single", [True, False], ids=["single", "multi"])
def test_every_rule_steps_bitwise_as_ops(built: Dict[str, Any], case: Case, variant: Variant,
                                         dtype: Any, single: bool) -> None:
    """Three steps (state written on the first, read after; scalar states carried) through
    <name>_step on one tensor, or <name>_step_multi on tensors of 0, 17 and 33 elements (a
    SIMD tail each), against gdfast.ops.<name>_ on copies: the same kernel, so equal bits."""
    rule = RULES[case.name]
    hyper = case.hyper(variant)
    sizes = (33,) if single else (0, 17, 33)
    native = [_start_arrays(case, hyper, n, dtype, seed) for seed, n in enumerate(sizes)]
    expected = [{k: a.copy() for k, a in t.items()} for t in native]
    native_scalars: Dict[str, float] = {}
    ops_scalars: List[Dict[str, float]] = [{} for _ in sizes]
    op = getattr(gdfast.ops, case.op)
    for step in (1, 2, 3):
        grads = [gradient(n, dtype, step, seed) for seed, n in enumerate(sizes)]
        values = {**hyper, **native_scalars, "step": step}
        status, message, native_scalars = _native_step(built["check"], rule, values, dtype,
                                                       native, grads, single)
        assert status == OK, message
        for t, g, scalars in zip(expected, grads, ops_scalars):
            states = {k: a for k, a in t.items() if k != "param"}
            inputs = {name: g for name in case.extra_inputs}
            out = op(t["param"], g, **inputs, **states, **{**hyper, **scalars, "step": step})
            scalars.update(out or {})
        for t, e in zip(native, expected):
            for name in e:
                assert t[name].tobytes() == e[name].tobytes(), f"{name} after step {step}"
        if rule.scalar_states:  # one value for the whole call, as one ops call per tensor
            assert native_scalars == ops_scalars[-1]


# -- bad calls: a status, a message naming the problem, nothing written ---------------------------
def _adam_call(check: Any, values: Dict[str, Any], arrays: Dict[str, Any], dtype: Any = np.float32,
               n: Any = None, **override: Any) -> Tuple[int, str]:
    order = ("param", "grad", "exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    roles = [np.array([override.get(k, arrays[k].ctypes.data if arrays.get(k) is not None else 0)],
                      np.uint64) for k in order]
    sizes = np.array([arrays["param"].size if n is None else n], np.uint64)
    status, message, _ = check.step_adam(values, DTYPE_CODES.get(dtype, dtype), sizes, roles, True)
    return status, message


def _adam_arrays(n: int = 64) -> Dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {k: rng.standard_normal(n).astype(np.float32) ** (2 if k == "exp_avg_sq" else 1)
            for k in ("param", "grad", "exp_avg", "exp_avg_sq")}


BAD_ADAM_CALLS = [
    ("negative lr", {"lr": -1.0}, {}, ERROR_VALUE,
     r"^adam: lr: expected a finite number >= 0, got -1$"),
    ("nan eps", {"eps": float("nan")}, {}, ERROR_VALUE,
     r"^adam: eps: expected a finite number > 0, got nan$"),
    ("beta1 = 1", {"beta1": 1.0}, {}, ERROR_VALUE, r"^adam: beta1: expected .* < 1, got 1$"),
    ("step 0", {"step": 0}, {}, ERROR_VALUE, r"^adam: step: expected an int >= 1 .*, got 0$"),
    ("grad_scale 0", {"grad_scale": 0.0}, {}, ERROR_VALUE, r"^adam: grad_scale: .* > 0, got 0$"),
    ("unknown dtype", {}, {"dtype": 7}, ERROR_ARGUMENT, r"^adam: dtype: expected .*, got 7$"),
    ("null param", {}, {"param": 0}, ERROR_ARGUMENT, r"^adam: param\[0\]: null pointer$"),
    ("misaligned grad", {}, {"grad": "+1"}, ERROR_ARGUMENT,
     r"^adam: grad\[0\]: not aligned to its element size$"),
    ("state is the param", {}, {"exp_avg": "param"}, ERROR_ARGUMENT,
     r"^adam: (exp_avg\[0\] overlaps param\[0\]|param\[0\] overlaps exp_avg\[0\])"),
    ("states overlap by one element", {}, {"exp_avg_sq": "exp_avg+4"}, ERROR_ARGUMENT,
     r"overlaps"),
    ("amsgrad without its state", {"amsgrad": 1}, {}, ERROR_ARGUMENT,
     r"^adam: max_exp_avg_sq\[0\]: null pointer$"),
    ("size too large", {}, {"n": 2**62}, ERROR_ARGUMENT, r"^adam: sizes\[0\]: expected a size"),
]


@pytest.mark.parametrize("values, override, status, pattern",
                         [pytest.param(*c[1:], id=c[0]) for c in BAD_ADAM_CALLS])
def test_a_bad_call_is_named_and_writes_nothing(built: Dict[str, Any], values: Dict[str, Any],
                                                override: Dict[str, Any], status: int,
                                                pattern: str) -> None:
    arrays = _adam_arrays()
    before = {k: a.copy() for k, a in arrays.items()}
    resolved: Dict[str, Any] = {}
    for key, target in override.items():
        if key in ("dtype", "n") or isinstance(target, int):
            resolved[key] = target
        elif target == "+1":
            resolved[key] = arrays[key].ctypes.data + 1
        else:
            name, _, offset = target.partition("+")
            resolved[key] = arrays[name].ctypes.data + int(offset or 0)
    got_status, message = _adam_call(built["check"], {"step": 1, **values}, arrays, **resolved)
    assert got_status == status, message
    assert re.search(pattern, message), message
    for k in arrays:
        assert arrays[k].tobytes() == before[k].tobytes(), f"{k} was written"


def test_options_a_rule_rejects_are_named(built: Dict[str, Any]) -> None:
    """The rule's own cross-field check (SGD: nesterov needs momentum > 0, dampening 0)."""
    p, g = np.ones(8, np.float32), np.ones(8, np.float32)
    before = p.copy()
    roles = [_addresses([p]), _addresses([g]), np.zeros(1, np.uint64)]
    status, message, _ = built["check"].step_sgd({"nesterov": 1, "step": 1}, 0,
                                                 np.array([8], np.uint64), roles, True)
    assert status == ERROR_VALUE and message.startswith("sgd: ") and "nesterov" in message
    assert p.tobytes() == before.tobytes()


def test_a_bad_later_tensor_leaves_earlier_ones_unwritten(built: Dict[str, Any]) -> None:
    tensors = [_adam_arrays(40), _adam_arrays(24)]
    grads = [t.pop("grad") for t in tensors]
    tensors[1]["exp_avg_sq"] = tensors[0]["exp_avg_sq"][:24]  # shares memory with tensor 0's
    before = [{k: a.copy() for k, a in t.items()} for t in tensors]
    status, message, _ = _native_step(built["check"], RULES["adam"], {"step": 1}, np.float32,
                                      tensors, grads, single=False)
    assert status == ERROR_ARGUMENT and "exp_avg_sq[1]" in message and "exp_avg_sq[0]" in message
    for t, b in zip(tensors, before):
        assert all(t[k].tobytes() == b[k].tobytes() for k in t)


def test_a_struct_of_another_layout_or_an_unknown_rule_is_refused(built: Dict[str, Any]) -> None:
    status, message = built["check"].raw_step(RULES["adam"].id, 12345, 0)
    assert status == ERROR_ABI and "layout" in message and "rebuild" in message
    status, message = built["check"].raw_step(len(RULES) + 5, 0, 0)
    assert status == ERROR_ABI and f"no optimizer has id {len(RULES) + 5}" in message


def test_last_error_is_per_thread(built: Dict[str, Any]) -> None:
    """A failing call on one thread does not change the message another thread reads."""
    arrays = _adam_arrays()
    assert _adam_call(built["check"], {"lr": -1.0, "step": 1}, arrays)[0] == ERROR_VALUE
    seen: List[str] = []
    thread = threading.Thread(target=lambda: seen.append(
        _adam_call(built["check"], {"eps": -1.0, "step": 1}, arrays)[1]))
    thread.start()
    thread.join()
    assert "eps" in seen[0]
    assert _adam_call(built["check"], {"lr": -2.0, "step": 1}, arrays)[1].endswith("got -2")


# -- the examples ---------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [16, 100_003], ids=["small", "pool"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_cython_example_from_several_threads_at_once(built: Dict[str, Any], n: int,
                                                     dtype: Any) -> None:
    """Four Python threads each run 20 Adam steps nogil through the Cython example at the same
    time (at 100003 elements they contend for gdfast's pool, and a step that finds it busy runs
    on its own thread): each result bitwise equals gdfast.ops on the same inputs."""
    rng = np.random.default_rng(2)
    jobs = []
    for _ in range(4):
        p, g = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
        jobs.append([p, g, np.zeros(n, dtype), np.zeros(n, dtype)])
    expected = [[a.copy() for a in job] for job in jobs]
    threads = [threading.Thread(target=built["cython"].adam_steps, args=(*job, 1e-2, 1, 20))
               for job in jobs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for job, (p, g, m, v) in zip(jobs, expected):
        for step in range(1, 21):
            gdfast.ops.adam_(p, g, m, v, lr=1e-2, step=step)
        assert job[0].tobytes() == p.tobytes() and job[3].tobytes() == v.tobytes()


def test_cython_example_raises_with_the_message(built: Dict[str, Any]) -> None:
    p = np.zeros(8, np.float32)
    with pytest.raises(ValueError, match=r"^adam: lr: expected a finite number >= 0, got -1$"):
        built["cython"].adam_steps(p, p.copy(), p.copy(), p.copy(), -1.0, 1, 1)


def test_cython_training_loop_fits_a_line(built: Dict[str, Any]) -> None:
    x = np.linspace(-1.0, 1.0, 64)
    w, b, losses = built["cython"].fit_line(x, 3.0 * x + 0.5, 400)
    assert abs(w - 3.0) < 1e-3 and abs(b - 0.5) < 1e-3
    assert losses[-1] < 1e-6 * losses[0]


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["float32", "float64"])
def test_c_example_steps_bitwise_as_ops(built: Dict[str, Any], dtype: Any) -> None:
    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal(37).astype(dtype), rng.standard_normal(37).astype(dtype),
              np.zeros(37, dtype), np.zeros(37, dtype)]
    expected = [a.copy() for a in arrays]
    for step in (1, 2, 3):
        built["c"].adam_step(*arrays, 1e-2, step)
        gdfast.ops.adam_(*expected, lr=1e-2, step=step)
    assert all(a.tobytes() == e.tobytes() for a, e in zip(arrays, expected))
    with pytest.raises(ValueError, match=r"^adam: step: expected an int >= 1"):
        built["c"].adam_step(*arrays, 1e-2, 0)
