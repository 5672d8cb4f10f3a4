"""gdfast-bench: argument handling, the JSON schema, the --compare regression logic, the
correctness gate, the cases derived from gdfast's registry and their competitors. Tiny sizes
and batches; no timing is asserted."""

from __future__ import annotations

import argparse
import ast
import copy
import dataclasses
import importlib.util
import io
import json
import math
import os
import pathlib
import re
import shlex
import subprocess
import sys
import tempfile
import types
from typing import Any, Dict, List, Optional, Tuple

import numpy as np
import pytest

import gdfast
from gdfast._stepping import CONSTRUCTORS
from gdfast.bench import cli, compare, eta, gate, impls, progress, report
from gdfast.bench.cases import CASES, DEFAULT, TORCH_PATHS, Case, parse_optimizers
from gdfast.bench.gate import GATE_STEPS, Gate, rtol
from gdfast.bench.impls import (
    ARITH_BLOCK,
    ARITH_ELEMENTS_PER_CALL,
    ARITH_STEP,
    ArithBound,
    DeepSpeed,
    GdfastRunner,
    Implementation,
    NumpyRunner,
    Runner,
    TorchOptim,
    registry,
    state_starts,
)
from gdfast.bench.precision import PRECISIONS, as_precision, parse_precisions, storage_dtype
from gdfast.bench.suite import derive
from gdfast.bench.workloads import make_data, many_small, parse_sizes, single

# What each case's step reads and writes besides param and grad: the state arrays its options
# use, written down from torch's (and pytorch_optimizer's) documentation, not from the registry
# the bench derives them from.
STATES = {"sgd": 0, "momentum": 1, "adam": 2, "adamw": 2, "lion": 1, "rmsprop": 1,
          "adagrad": 1, "adadelta": 2, "adamax": 2, "nadam": 2, "radam": 2, "asgd": 1,
          "rprop": 2, "adan": 4, "ademamix": 3, "schedulefree_adamw": 2, "sophia": 2, "lamb": 2}

# One 1000-element tensor, one batch of >= 1 ms: each run takes a fraction of a second.
TINY = ["--sizes", "1000", "--lists", "none", "--batches", "1", "--batch-time", "0.001",
        "--no-machine-bandwidth", "--progress", "none"]


def run(argv: List[str], capsys: pytest.CaptureFixture[str],
        implementations: Optional[List[Implementation]] = None) -> tuple:
    code = cli.main(argv, implementations=implementations)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_json(argv: List[str], tmp_path: Any, capsys: pytest.CaptureFixture[str],
             implementations: Optional[List[Implementation]] = None) -> tuple:
    path = str(tmp_path / "run.json")
    code, out, err = run(argv + ["--json", path], capsys, implementations)
    with open(path) as f:
        return code, json.load(f), out


def rows_of(doc: Dict[str, Any], **match: Any) -> List[Dict[str, Any]]:
    return [r for r in doc["rows"] if all(r.get(k) == v for k, v in match.items())]


# ---------------------------------------------------------------------------------------------
# Arguments


@pytest.mark.parametrize("argv, needle", [
    (["--optimizers", "adamx"], "adamx"),
    (["--sizes", "abc"], "abc"),
    (["--sizes", "0"], "'0'"),
    (["--sizes", "1.5"], "whole number"),
    (["--lists", "resnet"], "resnet"),
    (["--sizes", "none", "--lists", "none"], "nothing to run"),
    (["--threads", "0"], "--threads"),
    (["--threads", "two"], "--threads"),
    (["--isa", "avx9000"], "avx9000"),
    (["--impls", "tensorflow"], "tensorflow"),
    (["--quick", "--full"], "not allowed with"),
    (["--tolerance", "-0.1"], "--tolerance"),
    (["--batch-time", "0"], "--batch-time"),
    (["--dtype", "float16"], "--dtype"),
    (["--compare", "a.json", "b.json", "c.json"], "--compare"),
    (["--compare", "/nonexistent/old.json"], "old.json"),
], ids=lambda x: " ".join(x) if isinstance(x, list) else None)
def test_bad_arguments_exit_2_with_a_message(argv: List[str], needle: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(argv + ["--progress", "none"])
    assert info.value.code == cli.EXIT_USAGE
    assert needle in capsys.readouterr().err


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    for option in ("--optimizers", "--sizes", "--dtype", "--threads", "--isa", "--json",
                   "--plot", "--compare", "--tolerance", "--quick", "--full"):
        assert option in out


def test_parse_sizes() -> None:
    assert parse_sizes("1e3, 2000,1e3,2.5e4") == [1000, 2000, 25000]
    assert parse_sizes("none") == []


def test_modes_presets() -> None:
    assert cli.MODES["quick"]["sizes"] == [10**4, 10**6]
    assert cli.MODES["default"]["sizes"][0] == 10**3 and cli.MODES["default"]["sizes"][-1] == 10**8
    assert set(cli.MODES["default"]["lists"]) == {"gpt2-small", "1000x1024"}
    # a plain run keeps its duration: the first five cases; --full and "all" step every one
    for mode, expected in (("quick", list(DEFAULT)), ("default", list(DEFAULT)),
                           ("full", list(CASES))):
        config = cli._config(cli.build_parser(), cli.build_parser().parse_args(
            [f"--{mode}"] if mode != "default" else []), [], registry())
        assert [c.name for c in config.cases] == expected


def test_parse_optimizers() -> None:
    assert [c.name for c in parse_optimizers("all")] == list(STATES)
    assert [c.name for c in parse_optimizers("default")] == [
        "sgd", "momentum", "adam", "adamw", "lion"]
    assert [c.name for c in parse_optimizers(" nadam,asgd , nadam")] == ["nadam", "asgd"]
    with pytest.raises(ValueError, match="adamx"):
        parse_optimizers("adam,adamx")


def test_list_names_every_implementation(capsys: pytest.CaptureFixture[str]) -> None:
    impls = [i for i in registry() if i.name in ("gdfast", "numpy")]
    code, out, _ = run(["--list"], capsys, impls)
    assert code == 0
    assert "gdfast" in out and "numpy" in out and "bound" in out


def test_python_dash_m_runs() -> None:
    proc = _python("import runpy, sys; sys.argv = ['gdfast-bench', '--help'];"
                   "runpy.run_module('gdfast.bench', run_name='__main__')")
    assert proc.returncode == 0, proc.stderr
    assert "gdfast-bench" in proc.stdout


# ---------------------------------------------------------------------------------------------
# A run and its JSON


def test_json_schema_and_contents(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    argv = TINY + ["--sizes", "1000,3000", "--optimizers", "all", "--impls", "gdfast,numpy"]
    code, doc, out = run_json(argv, tmp_path, capsys)
    assert code == 0
    report.validate(doc)
    assert doc["schema"] == "gdfast-bench/1"
    assert doc["command"][0] == "gdfast-bench" and "--impls" in doc["command"]
    assert doc["config"]["sizes"] == [1000, 3000]
    assert doc["config"]["dtype"] == "float32"
    assert doc["config"]["optimizers"] == list(STATES)
    assert set(doc["implementations"]) == {"gdfast", "numpy", "bound", "arith"}
    # fp32: 4 bytes per state element kept; read p, g, states and write p, states back (LAMB's
    # second pass reads p and the states once more)
    state_bytes = {name: 4 * k for name, k in STATES.items()}
    move_bytes = {name: 4 * (3 + 2 * k + (1 + k) * (name == "lamb")) for name, k in STATES.items()}
    for name in state_bytes:
        assert doc["cases"][name]["bytes_per_elem"] == move_bytes[name]
        assert len(doc["cases"][name]["states"]) == STATES[name]
        for workload in ("1e3", "3e3"):
            group = rows_of(doc, optimizer=name, workload=workload)
            assert [r["implementation"] for r in group] == ["gdfast", "numpy", "bound", "arith"]
            for r in group:
                assert r["status"] == "ok", r["message"]
                assert r["bytes_per_elem"] == move_bytes[name]
                assert r["time_s"]["min"] <= r["time_s"]["median"] <= r["time_s"]["max"]
                assert r["gb_s"] == pytest.approx(r["gelem_s"] * r["bytes_per_elem"])
            gd, npy, bound, arith = group
            assert gd["pct_bound"] > 0 and npy["pct_bound"] > 0
            assert arith["pct_bound"] is None  # a bound of its own, not a share of the stream's
            assert gd["state_bytes_per_param"] == state_bytes[name]
            # NumPy runs reference.py, which keeps the states it needs itself: the same bytes
            assert npy["state_bytes_per_param"] == state_bytes[name]
            assert bound["pct_bound"] == pytest.approx(100.0)
            assert gd["best_ref"] == "numpy"
            assert gd["speedup_vs_best_ref"] == pytest.approx(
                npy["time_s"]["median"] / gd["time_s"]["median"])
            assert 0 <= gd["gate_worst"] <= 1
    # the table
    for column in ("implementation", "time/step", "Gelem/s", "GB/s", "% bound", "vs best ref",
                   "state B/param", "bound (stream)"):
        assert column in out


def test_schema_rejects_malformed_reports(tmp_path: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _, doc, _ = run_json(TINY + ["--optimizers", "sgd", "--impls", "gdfast"], tmp_path, capsys)
    report.validate(doc)
    for breakage in (
        lambda d: d.pop("schema"),
        lambda d: d.update(schema="gdfast-bench/0"),
        lambda d: d.pop("rows"),
        lambda d: d["rows"][0].pop("implementation"),
        lambda d: d["rows"][0].update(status="great"),
        lambda d: d["rows"][0].update(time_s=None),
        lambda d: d["rows"][0]["time_s"].update(min=1.0, median=0.5),
        lambda d: d["rows"][0].update(status="error"),  # an error row with a time
    ):
        broken = copy.deepcopy(doc)
        breakage(broken)
        with pytest.raises(report.SchemaError):
            report.validate(broken)


def test_threads_and_isa_variants_make_rows(tmp_path: Any,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    import gdfast

    supported = gdfast.isa_info()["supported"]
    active = gdfast.isa_info()["active"]
    argv = TINY + ["--optimizers", "adam", "--impls", "gdfast", "--threads", "1,2",
                   "--isa", ",".join(supported[-2:])]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    names = {f"gdfast[{isa}]" for isa in supported[-2:]} if len(supported) > 1 else {"gdfast"}
    for t in (1, 2):
        got = {r["implementation"] for r in rows_of(doc, threads=t, status="ok")}
        assert got == names | {"bound", "arith"}
    assert gdfast.isa_info()["active"] == active  # restored


def test_float64(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, _ = run_json(TINY + ["--dtype", "float64", "--optimizers", "adam",
                                    "--impls", "gdfast,numpy"], tmp_path, capsys)
    assert code == 0
    (gd,) = rows_of(doc, implementation="gdfast")
    assert gd["dtype"] == "float64" and gd["bytes_per_elem"] == 56
    assert gd["state_bytes_per_param"] == 16


def test_memory_budget_scales_sizes_down(tmp_path: Any,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    argv = TINY + ["--sizes", "1e5", "--optimizers", "adam", "--impls", "gdfast",
                   "--max-memory", "0.0001"]  # 100 kB
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    # p0 and grads, gdfast's p, m, v, the bound's p, m, v: 8 fp32 arrays; 2000 fit in 100 kB
    assert {r["workload"] for r in doc["rows"]} == {"2e3"}
    assert any("1e5 -> 2e3" in note for note in doc["notes"])


def test_slow_references_are_skipped_above_the_limit(tmp_path: Any,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    argv = TINY + ["--optimizers", "sgd", "--impls", "gdfast,numpy", "--sizes", "1000,2000",
                   "--slow-limit", "1500"]
    code, doc, out = run_json(argv, tmp_path, capsys)
    assert code == 0
    small, large = rows_of(doc, implementation="numpy")
    assert small["workload"] == "1e3" and small["status"] == "ok"
    assert large["status"] == "skipped" and "slow" in large["message"]
    assert any(note.startswith("numpy not run on sgd: slow reference") for note in doc["notes"])


def test_list_workload(tmp_path: Any, capsys: pytest.CaptureFixture[str],
                       monkeypatch: pytest.MonkeyPatch) -> None:
    from gdfast.bench import workloads

    monkeypatch.setattr(workloads, "many_small", lambda: workloads.Workload(
        "1000x1024", tuple((n,) for n in (1, 17, 0, 1024, 33)), "list"))
    argv = TINY + ["--sizes", "none", "--lists", "1000x1024", "--optimizers", "adam,lion",
                   "--impls", "gdfast,numpy"]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    assert {(r["tensors"], r["numel"]) for r in doc["rows"]} == {(5, 1075)}


def test_plot(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "bench.png"
    code, _, _ = run(TINY + ["--optimizers", "adam,lion", "--impls", "gdfast,numpy",
                             "--sizes", "1000,2000", "--plot", str(path)], capsys)
    assert code == 0
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_plain_counts_groups() -> None:
    stream = io.StringIO()
    bar = progress.make("plain", stream)
    bar.start(2)
    bar.advance("adam 1e3")
    bar.advance("lion 1e3")
    bar.close()
    assert "[1/2] adam 1e3" in stream.getvalue() and "[2/2] lion 1e3" in stream.getvalue()
    assert isinstance(progress.make("auto", io.StringIO()), progress.Silent)  # not a tty


# ---------------------------------------------------------------------------------------------
# The correctness gate


def with_lr_scaled(case: Case, factor: float) -> Case:
    return dataclasses.replace(case, kwargs={**case.kwargs, "lr": case.kwargs["lr"] * factor})


class WrongLr(Implementation):
    """gdfast with the learning rate 1% too high: close, and wrong."""

    name = "wrong-lr"

    def build(self, case: Case, data: Any) -> Runner:
        return GdfastRunner(with_lr_scaled(case, 1.01), data, None)


class Raises(Implementation):
    name = "raises"

    def build(self, case: Case, data: Any) -> Runner:
        runner = NumpyRunner(case, data)

        def fresh() -> Any:
            def step() -> None:
                raise RuntimeError("kernel exploded")
            return step

        runner._fresh = fresh  # type: ignore[method-assign]
        runner.reset()
        return runner


class RaisesLater(Implementation):
    """Passes the gate, then raises on its first step after it (calibration's): a later
    step would depend on how many calibration takes, which a loaded machine makes few."""

    name = "raises-later"

    def build(self, case: Case, data: Any) -> Runner:
        runner = NumpyRunner(case, data)
        inner = runner._fresh

        def fresh() -> Any:
            step = inner()
            count = [0]

            def wrapped() -> None:
                count[0] += 1
                if count[0] > GATE_STEPS:
                    raise RuntimeError("late failure")
                step()
            return wrapped

        runner._fresh = fresh  # type: ignore[method-assign]
        runner.reset()
        return runner


class WritesGrad(Implementation):
    name = "writes-grad"

    def build(self, case: Case, data: Any) -> Runner:
        runner = NumpyRunner(case, data)
        inner = runner._fresh

        def fresh() -> Any:
            step = inner()

            def wrapped() -> None:
                step()
                data.grads[0][0] += 1.0
            return wrapped

        runner._fresh = fresh  # type: ignore[method-assign]
        runner.reset()
        return runner


def test_gate_reports_a_wrong_result_as_an_error(tmp_path: Any,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    impls = registry() + [WrongLr(), Raises(), WritesGrad(), RaisesLater()]
    argv = TINY + ["--optimizers", "sgd,adam,lion",
                   "--impls", "gdfast,numpy,wrong-lr,raises,writes-grad,raises-later"]
    code, doc, out = run_json(argv, tmp_path, capsys, impls)
    assert code == cli.EXIT_WRONG
    report.validate(doc)
    for name in ("sgd", "adam", "lion"):
        group = {r["implementation"]: r for r in rows_of(doc, optimizer=name)}
        assert group["gdfast"]["status"] == "ok" and group["numpy"]["status"] == "ok"
        wrong = group["wrong-lr"]
        assert wrong["status"] == "error" and "wrong result" in wrong["message"]
        assert wrong["time_s"] is None and wrong["gelem_s"] is None
        assert wrong["gate_worst"] > 1
        assert group["raises"]["status"] == "error"
        assert "kernel exploded" in group["raises"]["message"]
        assert group["writes-grad"]["status"] == "error"
        assert "gradient" in group["writes-grad"]["message"]
        late = group["raises-later"]
        assert late["status"] == "error" and "late failure" in late["message"]
        assert late["gate_worst"] <= 1  # it passed the gate
        # a failed implementation is not "the best reference"
        assert group["gdfast"]["best_ref"] == "numpy"
    assert "ERROR: wrong result" in out
    assert "failed the correctness gate" in out


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gate_tolerance_separates_rounding_from_error(name: str, dtype: Any) -> None:
    case = CASES[name]
    data = make_data(single(5000), dtype)
    gate = Gate(case, data)
    assert gate.rtol == rtol(np.dtype(dtype), gate.steps)
    # the reference rounded to the dtype passes; an update 2% off does not
    assert gate.verdict(gate.expected.astype(dtype)).ok
    off = gate.p0 + (gate.expected - gate.p0) * 1.02
    verdict = gate.verdict(off.astype(dtype))
    assert not verdict.ok and verdict.worst > 1
    nan = gate.expected.copy()
    nan[7] = np.nan
    assert not gate.verdict(nan).ok


@pytest.mark.parametrize("workload", [single(5000), many_small(3, 700)], ids=lambda w: w.name)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(CASES))
def test_gdfast_passes_the_gate_and_a_wrong_lr_fails_it(name: str, dtype: Any,
                                                        workload: Any) -> None:
    """Every case: gdfast (generic runner: states by name, step counts per the rule's kind,
    scalar states carried) agrees with reference.py in float64 after GATE_STEPS steps, within
    the gate's tolerance; with the learning rate 1% off, it does not."""
    case = CASES[name]
    data = make_data(workload, dtype)
    check = Gate(case, data)
    for runner in (GdfastRunner(case, data, None),
                   GdfastRunner(with_lr_scaled(case, 1.01), data, None)):
        verdict = check.check(runner)
        right = runner.case is case
        assert verdict.ok == right, verdict.message
        if right:  # measured: at most 0.062 of the tolerance (lion, float32 list)
            assert verdict.worst < 0.25
        else:  # measured: at least 750x the tolerance (radam, float32 list)
            assert verdict.worst > 10.0
        runner.close()


@pytest.mark.parametrize("name", list(CASES))
def test_a_wrong_reference_fails_gdfast(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate compares against reference.py's rule of the case's rule: a reference whose
    update is 2% off makes gdfast fail it (so the gate reads that rule, for every case)."""
    case = CASES[name]
    right = gate.STEPS[case.rule.name]

    def wrong(param: Any, g: Any, state: Any, **hyper: Any) -> Any:
        new = right(param, g, state, **hyper)
        return param + (new - param) * 1.02

    monkeypatch.setitem(gate.STEPS, case.rule.name, wrong)
    data = make_data(single(2000), np.float32)
    verdict = Gate(case, data).check(GdfastRunner(case, data, None))
    assert not verdict.ok and "wrong result" in verdict.message


def test_numpy_competitor_runs_the_reference_in_the_arrays_dtype() -> None:
    """NumPy's runner is reference.py's rule applied per tensor in the arrays' own dtype: on
    float64 arrays it reproduces the gate's float64 reference exactly."""
    for case in CASES.values():
        data = make_data(many_small(2, 300), np.float64)
        check = Gate(case, data)
        runner = NumpyRunner(case, data)
        verdict = check.check(runner)
        assert verdict.ok and verdict.worst == 0.0, (case.name, verdict.message)
        assert all(p.dtype == np.float64 for p in runner.params)
        runner.close()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_every_installed_reference_passes_the_gate(tmp_path: Any, dtype: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    """The references' semantics match gdfast's (torch.optim, lion-pytorch), for every case
    and in float64 too (where torch's float32 scalar states would not be accurate enough)."""
    pytest.importorskip("torch")
    names = ["gdfast", "numpy", "torch-loop", "torch-foreach", "torch-fused"]
    try:
        import lion_pytorch  # noqa: F401

        names.append("lion-pytorch")
    except ImportError:
        pass
    argv = TINY + ["--impls", ",".join(names), "--threads", "1", "--optimizers", "all",
                   "--dtype", dtype]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    bad = [(r["optimizer"], r["implementation"], r["message"]) for r in doc["rows"]
           if r["status"] == "error"]
    assert not bad
    ok = {r["implementation"] for r in rows_of(doc, status="ok")}
    assert ok == set(names) | {"bound", "arith"}
    for case in CASES.values():  # each case against every competitor its row names
        got = {r["implementation"] for r in rows_of(doc, optimizer=case.name, status="ok")}
        named = {f"torch-{path}" for path in case.torch} | {p.impl for p in case.packages}
        assert got == {"gdfast", "numpy", "bound", "arith"} | (named & set(names))


# ---------------------------------------------------------------------------------------------
# --compare


def _doc(rows: List[Dict[str, Any]]) -> Dict[str, Any]:
    return {"schema": "gdfast-bench/1", "created": "2026-01-01T00:00:00+00:00",
            "command": ["gdfast-bench"], "config": {}, "machine": {}, "implementations": {},
            "bandwidth": [], "notes": [], "rows": rows}


def _row(impl: str, seconds: Optional[float], kind: str = "gdfast", pct: float = 90.0,
         optimizer: str = "adam", status: str = "ok") -> Dict[str, Any]:
    ok = status == "ok"
    return {"optimizer": optimizer, "workload": "1e6", "numel": 10**6, "tensors": 1,
            "dtype": "float32", "threads": 2, "implementation": impl, "kind": kind,
            "status": status, "message": "" if ok else "wrong result",
            "bytes_per_elem": 28,
            "time_s": {"median": seconds, "min": seconds, "max": seconds} if ok else None,
            "gelem_s": 1e-3 / seconds if ok and seconds else None,
            "gb_s": 28e-3 / seconds if ok and seconds else None, "pct_bound": pct if ok else None}


def _write(tmp_path: Any, name: str, doc: Dict[str, Any]) -> str:
    report.validate(doc)
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


@pytest.mark.parametrize("new_time, tolerance, expected", [
    (1.05e-3, 0.10, 0),  # 5% slower: within 10%
    (1.20e-3, 0.10, 1),  # 20% slower: a regression
    (1.20e-3, 0.25, 0),  # ... unless the tolerance allows it
    (0.50e-3, 0.10, 0),  # faster
])
def test_compare_exit_status(tmp_path: Any, capsys: pytest.CaptureFixture[str],
                             new_time: float, tolerance: float, expected: int) -> None:
    old = _write(tmp_path, "old.json", _doc([_row("gdfast", 1e-3), _row("torch-fused", 2e-3,
                                                                         "reference")]))
    new = _write(tmp_path, "new.json", _doc([_row("gdfast", new_time),
                                             _row("torch-fused", 2e-3, "reference")]))
    code, out, _ = run(["--compare", old, new, "--tolerance", str(tolerance)], capsys)
    assert code == expected
    assert f"{100 * (new_time / 1e-3 - 1):+.1f}%" in out
    assert ("REGRESSED" in out) == (expected == 1)


def test_compare_checks_references_only_when_asked(tmp_path: Any,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    rows_old = [_row("gdfast", 1e-3), _row("torch-fused", 2e-3, "reference")]
    rows_new = [_row("gdfast", 1e-3), _row("torch-fused", 4e-3, "reference")]
    old = _write(tmp_path, "old.json", _doc(rows_old))
    new = _write(tmp_path, "new.json", _doc(rows_new))
    code, out, _ = run(["--compare", old, new], capsys)
    assert code == 0 and "regressed (not checked)" in out
    code, _, _ = run(["--compare", old, new, "--compare-rows", "all"], capsys)
    assert code == 1


def test_compare_a_row_that_now_fails_is_a_regression(tmp_path: Any,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    old = _write(tmp_path, "old.json", _doc([_row("gdfast", 1e-3)]))
    new = _write(tmp_path, "new.json", _doc([_row("gdfast", None, status="error")]))
    code, out, _ = run(["--compare", old, new], capsys)
    assert code == 1 and "FAILED" in out


def test_compare_by_bound_share(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # the machine got 2x slower for everyone (bound included): time regressed, share did not
    old = _write(tmp_path, "old.json", _doc([_row("gdfast", 1e-3, pct=95.0)]))
    new = _write(tmp_path, "new.json", _doc([_row("gdfast", 2e-3, pct=94.0)]))
    assert run(["--compare", old, new], capsys)[0] == 1
    assert run(["--compare", old, new, "--compare-by", "bound"], capsys)[0] == 0
    worse = _write(tmp_path, "worse.json", _doc([_row("gdfast", 1e-3, pct=70.0)]))
    assert run(["--compare", old, worse, "--compare-by", "bound"], capsys)[0] == 1


def test_compare_missing_and_new_rows_are_listed_not_failed() -> None:
    old = _doc([_row("gdfast", 1e-3, optimizer="adam")])
    new = _doc([_row("gdfast", 1e-3, optimizer="lion")])
    changes = compare.compare(old, new)
    assert sorted(c.status for c in changes) == ["missing", "new"]
    assert not compare.regressed(changes)


def test_compare_against_a_fresh_run(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    argv = TINY + ["--optimizers", "sgd", "--impls", "gdfast"]
    _, doc, _ = run_json(argv, tmp_path, capsys)
    fast, slow = copy.deepcopy(doc), copy.deepcopy(doc)
    for d, factor in ((fast, 1e-6), (slow, 1e6)):  # far beyond any noise
        for r in d["rows"]:
            if r["status"] == "ok":
                r["time_s"] = {k: v * factor for k, v in r["time_s"].items()}
    code, out, _ = run(argv + ["--compare", _write(tmp_path, "fast.json", fast)], capsys)
    assert code == 1 and "REGRESSED" in out
    code, out, _ = run(argv + ["--compare", _write(tmp_path, "slow.json", slow)], capsys)
    assert code == 0 and "improved" in out


# ---------------------------------------------------------------------------------------------
# Optional dependencies


def _python(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("GDFAST_ISA", "GDFAST_NUM_THREADS")}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          cwd=tempfile.gettempdir(), timeout=120)


def test_importing_the_cli_imports_no_optional_package() -> None:
    proc = _python("import sys, gdfast.bench.cli, gdfast.bench.suite;"
                   "bad = [m for m in ('torch', 'lion_pytorch', 'deepspeed', 'matplotlib', 'tqdm')"
                   "       if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_runs_with_numpy_only() -> None:
    """torch, lion-pytorch, DeepSpeed, tqdm, matplotlib hidden: references are skipped with a
    note, the run succeeds."""
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'lion_pytorch', 'deepspeed', 'tqdm',"
        " 'matplotlib'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from gdfast.bench import main\n"
        f"sys.exit(main({TINY + ['--optimizers', 'adam,lion', '--progress', 'bar']!r}))\n"
    )
    proc = _python(code)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "torch-fused: not run" in proc.stdout
    assert "lion-pytorch: not run" in proc.stdout
    assert "triad" not in proc.stdout or "needs torch" in proc.stdout
    for name in ("gdfast", "numpy", "bound (stream)"):
        assert name in proc.stdout


@pytest.mark.parametrize("workload", [single(3000), single(100_000), many_small(5, 7000)],
                         ids=lambda w: w.name)
def test_arith_bound_steps_a_block_repeatedly_and_scales_to_the_workload(workload: Any) -> None:
    """One timed step of the arithmetic bound = `repeats` gdfast steps on the workload's first
    block, and its time is scaled by exactly (workload elements) / (elements stepped)."""
    case = CASES["adam"]
    data = make_data(workload, np.float32)
    runner = ArithBound().build(case, data)
    block = min(workload.numel, ARITH_BLOCK)
    assert runner.time_scale * block * runner.repeats == pytest.approx(workload.numel)
    assert block * runner.repeats >= max(workload.numel, ARITH_ELEMENTS_PER_CALL)
    (param,) = runner.params
    first = np.concatenate([p.reshape(-1) for p in data.p0])[:block]
    np.testing.assert_array_equal(param, first)
    assert runner.state_bytes() == 0


@pytest.mark.parametrize("name", list(CASES))
def test_arith_bound_repeats_the_rules_step_in_place(name: str) -> None:
    """The arithmetic bound's call (_core.run_repeated on the rule's batch) is bitwise the
    case's op applied `repeats` times in place, each at the bound's steady-state step count
    and the scalar states' starting values, from the states' declared starts."""
    case = CASES[name]
    data = make_data(single(3000), np.float32)
    runner = ArithBound().build(case, data)
    runner.step()
    rule = case.rule
    expected, grad = data.p0[0].copy(), data.grads[0]
    starts = state_starts(case)
    states = {n: np.full(3000, starts[n], np.float32) for n in case.states}
    op = getattr(gdfast.ops, f"{rule.name}_")
    step = ARITH_STEP[rule.step] if rule.step != "none" else None
    inputs = {name: grad for name in rule.inputs[1:]}  # (the gradient again, as the bench)
    for _ in range(runner.repeats):
        op(expected, grad, **inputs, **states, step=step, **case.hyper)
    np.testing.assert_array_equal(runner.params[0], expected)
    for n in case.states:
        np.testing.assert_array_equal(runner.states[n][0], states[n])


# ---------------------------------------------------------------------------------------------
# The cases: one row each, everything else from the registry; who competes where


def test_cases_derive_from_the_registry() -> None:
    assert list(CASES) == list(STATES)
    assert {c.rule.name for c in CASES.values()} == {
        CONSTRUCTORS[n].rule.name for n in gdfast.optimizers()
        if n != "Muon"}  # every elementwise rule is benchmarked (Muon: bench/bench_muon.py)
    for case in CASES.values():
        assert case.constructor is CONSTRUCTORS[case.ctor]
        assert len(case.states) == STATES[case.name] <= 4  # _core.stream takes up to 4
        assert set(case.states) <= set(case.rule.state_names)
        # the kernel's hyperparameters: the constructor's defaults, overridden by the row
        ctor = case.constructor
        assert case.hyper == ctor.hyper_values({**ctor.defaults((), {}), **case.kwargs})
        assert case.title.startswith(f"{case.ctor}(lr=")
        # (pytorch_optimizer's SophiaH estimates the Hessian on its first step, through a
        # graph of the gradients the benchmark's cannot have: README times it by hand)
        assert case.torch or case.packages or case.name == "sophia", \
            "every case has a competitor besides NumPy"
        assert set(case.torch) <= set(TORCH_PATHS)
    assert CASES["adamw"].hyper["decoupled_weight_decay"] is True
    assert CASES["momentum"].states == ("momentum_buffer",)
    with pytest.raises(TypeError):  # a misspelt argument is an error, not a silent default
        dataclasses.replace(CASES["adam"], kwargs={"learning_rate": 1e-3}).hyper


@pytest.mark.parametrize("name", list(CASES))
def test_rows_name_the_torch_paths_torch_has(name: str) -> None:
    """A row lists exactly the code paths torch.optim.<ctor> takes on CPU: a listed one builds
    and steps, an unlisted one is refused by torch (fused=True on RMSprop and the other
    unfused rules raises)."""
    torch = pytest.importorskip("torch")
    case = CASES[name]
    cls = getattr(torch.optim, case.ctor, None)
    if not case.torch:
        assert cls is None
        return
    for path in TORCH_PATHS:
        p = torch.nn.Parameter(torch.ones(4))
        p.grad = torch.ones(4)
        try:
            cls([p], **case.kwargs, **TorchOptim.FLAGS[path]).step()
            works = True
        except (TypeError, RuntimeError, ValueError):
            works = False
        assert works == (path in case.torch), path


def test_slow_references_are_the_ones_a_faster_reference_of_the_case_beats() -> None:
    impl = {i.name: i for i in registry()}
    for case in CASES.values():
        fused = "fused" in case.torch
        assert impl["numpy"].slow_for(case) and impl["torch-loop"].slow_for(case)
        assert impl["torch-foreach"].slow_for(case) == fused
        assert not impl["torch-fused"].slow_for(case)
        assert not impl["lion-pytorch"].slow_for(case) and not impl["deepspeed"].slow_for(case)
    f32 = np.dtype(np.float32)
    assert impl["torch-fused"].supports(CASES["rmsprop"], f32) == (
        "torch.optim has no fused path for it on CPU")
    assert impl["torch-loop"].supports(CASES["lion"], f32) == "not in torch.optim"
    assert impl["lion-pytorch"].supports(CASES["adam"], f32) == "not in lion-pytorch"
    assert impl["deepspeed"].supports(CASES["adagrad"], f32) is None
    assert impl["deepspeed"].supports(CASES["adagrad"], np.dtype(np.float64)) is not None


def test_foreach_is_timed_at_any_size_where_torch_has_no_fused_path(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """Above --slow-limit, torch foreach is skipped where torch fused beats it, and kept as
    the best torch reference where there is none."""
    pytest.importorskip("torch")
    argv = TINY + ["--optimizers", "adam,nadam", "--impls", "gdfast,torch-foreach,torch-fused",
                   "--slow-limit", "500"]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    (adam,) = rows_of(doc, optimizer="adam", implementation="torch-foreach")
    (nadam,) = rows_of(doc, optimizer="nadam", implementation="torch-foreach")
    assert adam["status"] == "skipped" and "slow" in adam["message"]
    assert nadam["status"] == "ok"


def _fake_deepspeed(monkeypatch: pytest.MonkeyPatch, torch: Any) -> List[Dict[str, Any]]:
    """A stand-in deepspeed package: CPUAdam is torch's Adam/AdamW by adamw_mode; CPUAdagrad's
    op "fails to build" (its first step raises). Returns the constructor calls made."""
    calls: List[Dict[str, Any]] = []

    class CPUAdam:
        # fp32_optimizer_states=False: states in the param's type, as torch keeps them
        def __new__(cls, params: Any, adamw_mode: bool = True, **kwargs: Any) -> Any:
            calls.append(dict(kwargs, adamw_mode=adamw_mode))
            kwargs.pop("fp32_optimizer_states", None)
            return (torch.optim.AdamW if adamw_mode else torch.optim.Adam)(params, **kwargs)

    class CPUAdagrad(torch.optim.Adagrad):  # type: ignore[misc]
        def step(self, closure: Any = None) -> Any:
            raise RuntimeError("ninja: build stopped")

    root, ops, adam, adagrad = (types.ModuleType(f"deepspeed{tail}")
                                for tail in ("", ".ops", ".ops.adam", ".ops.adagrad"))
    adam.DeepSpeedCPUAdam = CPUAdam  # type: ignore[attr-defined]
    adagrad.DeepSpeedCPUAdagrad = CPUAdagrad  # type: ignore[attr-defined]
    for module in (root, ops, adam, adagrad):
        monkeypatch.setitem(sys.modules, module.__name__, module)
    monkeypatch.setattr(DeepSpeed, "_built", {})
    return calls


def test_deepspeed_runs_the_class_its_row_names_and_skips_one_that_does_not_build(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    calls = _fake_deepspeed(monkeypatch, torch)
    argv = TINY + ["--optimizers", "adam,adamw,adagrad,rmsprop", "--impls", "gdfast,deepspeed"]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    group = {r["optimizer"]: r for r in rows_of(doc, implementation="deepspeed")}
    assert group["adam"]["status"] == "ok" and group["adamw"]["status"] == "ok"
    assert 0 <= group["adamw"]["gate_worst"] <= 1  # AdamW's decoupled decay: adamw_mode=True
    assert group["adagrad"]["status"] == "skipped"
    assert "DeepSpeedCPUAdagrad does not build here" in group["adagrad"]["message"]
    assert "ninja" in group["adagrad"]["message"]
    assert group["rmsprop"]["status"] == "skipped" and group["rmsprop"]["message"] == (
        "not in deepspeed")
    modes = {c["adamw_mode"] for c in calls if c.get("weight_decay") == 1e-2}
    assert modes == {True}  # adamw's row; adam's rows pass adamw_mode=False
    assert {c["adamw_mode"] for c in calls if "weight_decay" not in c and "lr" in c} == {False}


def test_deepspeed_in_float64_is_skipped_with_a_reason(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    torch = pytest.importorskip("torch")
    _fake_deepspeed(monkeypatch, torch)
    argv = TINY + ["--optimizers", "adam,sgd", "--dtype", "float64"]
    # named, and runs none of the groups: an error before anything runs
    with pytest.raises(SystemExit) as info:
        cli.main(argv + ["--impls", "gdfast,deepspeed,numpy"])
    assert info.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    only = "float32, bfloat16 and float16 params only"
    assert "deepspeed runs none of the groups asked for" in err and only in err
    # in the default set: its rows are skipped with the reason, the run goes on
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    (row,) = rows_of(doc, implementation="deepspeed", optimizer="adam")
    assert row["status"] == "skipped" and only in row["message"]


# ---------------------------------------------------------------------------------------------
# The structure: no optimizer named outside the rows and the reference; no upward imports

BENCH = pathlib.Path(impls.__file__).resolve().parent


def _code_words(path: pathlib.Path) -> Tuple[List[str], List[str]]:
    """A module's identifiers (names, attributes, definitions, arguments, keywords) and its
    string constants, docstrings left out (comments are not in the tree)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef))
                  and node.body and isinstance(node.body[0], ast.Expr)
                  and isinstance(node.body[0].value, ast.Constant)}
    identifiers: List[str] = []
    strings: List[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            identifiers.append(node.id)
        elif isinstance(node, ast.Attribute):
            identifiers.append(node.attr)
        elif isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            identifiers.append(node.name)
        elif isinstance(node, ast.arg):
            identifiers.append(node.arg)
        elif isinstance(node, ast.keyword) and node.arg:
            identifiers.append(node.arg)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            if id(node) not in docstrings:
                strings.append(node.value)
    return identifiers, strings


def _words(names: Any) -> Any:
    """A name counts where it stands alone (``adam``, ``"lion"``, ``ops.adam_``), not inside
    another (``lion-pytorch``, ``DeepSpeedCPUAdam``)."""
    alternatives = "|".join(sorted(map(re.escape, names), key=len, reverse=True))
    return re.compile(r"(?<![a-z0-9-])(" + alternatives + r")(?![a-z0-9-])", re.IGNORECASE)


def test_no_per_optimizer_code_outside_the_rows_and_the_reference() -> None:
    """Only cases.py (the rows) and reference.py (the formulas) name an optimizer; every other
    module of gdfast/bench is generic: no optimizer's name in its code or strings, and no
    hyperparameter looked up by name (``h["beta1"]``). Hyperparameter names as identifiers are
    not checked: ``eps``, ``alpha`` and ``t0`` are also machine epsilon, matplotlib's opacity
    and a start time."""
    optimizers = _words(set(CASES) | {c.rule.name for c in CASES.values()} | set(CONSTRUCTORS))
    fields = _words({f.name for c in CASES.values() for f in c.rule.fields})
    checked = [p for p in sorted(BENCH.glob("*.py")) if p.name not in ("cases.py", "reference.py")]
    assert len(checked) >= 12
    found = {}
    for path in checked:
        identifiers, strings = _code_words(path)
        bad = {w for w in identifiers + strings if optimizers.search(w)}
        bad |= {w for w in strings if fields.fullmatch(w)}
        if bad:
            found[path.name] = sorted(bad)
    assert found == {}
    # the check can fail: the old impls.py called ops.adam_ and read h["beta1"]
    assert optimizers.search("adam_") and optimizers.search("Adam") and fields.fullmatch("beta1")
    assert not optimizers.search("lion-pytorch") and not optimizers.search("DeepSpeedCPUAdam")


def _bench_imports(path: pathlib.Path) -> set:
    """The gdfast.bench modules a module imports, anywhere in its code."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level == 0 and module.startswith("gdfast.bench"):
                module = module[len("gdfast.bench"):].lstrip(".")
            elif node.level != 1:
                continue
            out |= {module.split(".")[0]} if module else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[2] for a in node.names
                    if a.name.startswith("gdfast.bench.")}
    return out


def test_low_level_modules_import_nothing_above_them() -> None:
    """The layers, bottom up: optional, reference, precision, workloads, progress, report;
    machine, compare; timing; bandwidth. None imports the cases, the implementations or the
    suite."""
    allowed = {
        "optional": set(), "reference": set(), "precision": set(), "workloads": {"precision"},
        "eta": set(),
        "progress": {"eta"}, "report": set(), "plot": set(),
        "machine": {"optional"}, "compare": {"report"},
        "timing": {"machine"},
        "bandwidth": {"optional", "timing"},
    }
    for module, ok in allowed.items():
        got = _bench_imports(BENCH / f"{module}.py")
        assert got <= ok, (module, got - ok)
    # and the levels above still do what they did through these
    assert "impls" not in _bench_imports(BENCH / "gate.py")


# ---------------------------------------------------------------------------------------------
# Help, and implementations named in --impls that cannot run

def test_every_option_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    parser = cli.build_parser()
    bare = [a.option_strings for a in parser._actions
            if a.option_strings and (not a.help or a.help == argparse.SUPPRESS)]
    assert bare == []
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps at the terminal width
    assert "--seed SEED seed of the random initial parameters and gradients" in text
    assert "element type of the parameters, gradients and states" in text
    assert "--batches N timed batches per implementation" in text
    assert "default: 5; --quick 3, --full 7" in text  # the presets, from MODES


class Missing(Implementation):
    """An implementation whose package is not installed."""

    name = "missing"
    install = "pip install frobnicate"

    def check_available(self) -> None:
        raise impls.Unavailable("frobnicate does not import (ModuleNotFoundError)")


class Elsewhere(Implementation):
    """Available, and runs none of the cases."""

    name = "elsewhere"

    def supports(self, case: Case, dtype: Any) -> Optional[str]:
        return "not in elsewhere"


@pytest.mark.parametrize("impls_arg, needles", [
    ("gdfast,missing", ["missing cannot run here", "frobnicate does not import",
                        "pip install frobnicate"]),
    ("gdfast,elsewhere", ["elsewhere runs none of the groups asked for: not in elsewhere"]),
    ("gdfast,numpy", ["numpy runs none of the groups", "--slow-limit 0"]),  # 1e3 > 500
], ids=["unavailable", "supports-none", "too-slow-everywhere"])
def test_an_implementation_named_in_impls_that_cannot_run_is_an_error(
        impls_arg: str, needles: List[str], capsys: pytest.CaptureFixture[str]) -> None:
    """Named in --impls and unable to run (not installed, or no group it runs): exit 2
    before anything runs, naming it and why; it is never silently left out."""
    implementations = registry() + [Missing(), Elsewhere()]
    with pytest.raises(SystemExit) as info:
        cli.main(TINY + ["--optimizers", "sgd", "--impls", impls_arg, "--slow-limit", "500"],
                 implementations=implementations)
    assert info.value.code == cli.EXIT_USAGE
    captured = capsys.readouterr()
    for needle in needles:
        assert needle in captured.err
    assert captured.out == ""  # no table: nothing ran


def test_an_unavailable_implementation_in_the_default_set_is_a_note(
        capsys: pytest.CaptureFixture[str]) -> None:
    implementations = [i for i in registry() if i.name == "gdfast"] + [Missing()]
    code, out, _ = run(TINY + ["--optimizers", "sgd"], capsys, implementations)
    assert code == 0
    assert "missing: not run (frobnicate does not import" in " ".join(out.split())
    assert "pip install frobnicate" in out
    assert [x for x in out.splitlines() if len(x) > 100] == []


def test_deepspeed_named_and_not_installed_is_an_error(
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """The issue's case: `--impls deepspeed` without DeepSpeed exited 0 with an empty table."""
    pytest.importorskip("torch")
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # import deepspeed fails
    with pytest.raises(SystemExit) as info:
        cli.main(TINY + ["--optimizers", "adam", "--impls", "deepspeed"])
    assert info.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert "deepspeed cannot run here" in err
    assert "pip install --no-build-isolation deepspeed" in err


class NeverBuilds(Implementation):
    """Available and supporting every case, but its build is refused at run time (as a
    DeepSpeed op that does not compile)."""

    name = "never-builds"

    def build(self, case: Case, data: Any) -> Runner:
        raise impls.Unavailable("its op does not build here")


def test_a_named_implementation_that_ran_in_no_group_fails_the_run(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    implementations = registry() + [NeverBuilds()]
    path = str(tmp_path / "run.json")
    code, out, err = run(TINY + ["--optimizers", "sgd", "--impls", "gdfast,never-builds",
                                 "--json", path], capsys, implementations)
    assert code == cli.EXIT_USAGE
    assert "never-builds ran in no group: its op does not build here" in err
    with open(path) as f:  # the run's report is still written
        assert rows_of(json.load(f), implementation="never-builds", status="skipped")


# ---------------------------------------------------------------------------------------------
# The time left (eta.py): predicted from what the run measured so far; no wall clock here


def test_time_left_is_the_model_scaled_by_what_the_groups_done_took() -> None:
    slot = eta.Slot("impl", 1, 6)  # six gate steps, then batches
    groups = [eta.Group("1e3", 4000.0, (slot,)), eta.Group("1e3", 8000.0, (slot,))]
    est = eta.Estimator(groups, batches=5, batch_time=0.1)
    assert est.remaining() is None  # nothing measured: nothing to show
    per_batch_time = 5 * eta.BATCH_FILL + eta.CALIBRATION  # batch times per slot
    model0 = per_batch_time * 0.1 + 6 * 0.01  # its step (10 ms) is below the batch time
    est.done(0, 2 * model0, {("impl", 1): 0.01})  # it took twice what the model says
    assert est.correction() == pytest.approx(2.0)
    # the same workload with twice the bytes: a 20 ms step, and the same factor 2
    assert est.remaining() == pytest.approx(2 * (per_batch_time * 0.1 + 6 * 0.02))
    est.done(1, 1.0, {("impl", 1): 0.02})
    assert est.remaining() == 0.0


def test_step_time_extrapolates_by_the_marginal_cost_never_below_the_ceiling() -> None:
    est = eta.Estimator([eta.Group("1e6", 1e6, ()), eta.Group("1e7", 1e7, ())], 1, 0.01)
    est.set_ceiling(1, 1e9)  # 1 ns per byte at best
    assert est.step_time("a", 1, "1e8", 1e8) == pytest.approx(0.1)  # never measured
    est.done(0, 1.0, {("a", 1): 2e-3})
    # one size measured: the rest of the bytes at the ceiling
    assert est.step_time("a", 1, "1e8", 1e8) == pytest.approx(2e-3 + 99e6 * 1e-9)
    est.done(1, 1.0, {("a", 1): 5e-2})
    # two sizes: their marginal cost, 48 ms / 9e6 bytes, above the ceiling's
    assert est.step_time("a", 1, "1e8", 1e8) == pytest.approx(5e-2 + 9e7 * 48e-3 / 9e6)
    # below the largest measured: the nearest larger one scaled down by bytes
    assert est.step_time("a", 1, "5e6", 5e6) == pytest.approx(5e-2 / 2)
    # a workload measured on another optimizer: scaled by the bytes each moves
    assert est.step_time("a", 1, "1e6", 2.5e6) == pytest.approx(2e-3 * 2.5)
    # the same step time measured at a close size (another optimizer's bytes) is no slope
    est2 = eta.Estimator([], 1, 0.01)
    est2.ceiling[1] = 1e9
    est2.groups = [eta.Group("x", 1.0e6, ()), eta.Group("y", 1.4e6, ())]
    est2.done(0, 1.0, {("a", 1): 1e-3})
    est2.done(1, 1.0, {("a", 1): 9e-3})  # noise: 8 ms for 0.4e6 more bytes
    assert est2.step_time("a", 1, "z", 1e8) == pytest.approx(9e-3 + (1e8 - 1.4e6) * 1e-9)


def _default_like_run() -> Tuple[List[eta.Group], List[Tuple[float, Dict[Any, float]]]]:
    """A default run's shape (machine bandwidth, then 1e3..1e8, gpt2-small and 1000x1024 for
    five optimizers) with made-up 'true' durations built differently from eta's model: step
    times with a per-call (or per-tensor) overhead and a cache cliff at 32 MB, a 1.4x load,
    calibration of 2.5 batch times, a fixed cost per slot and per group, slow set-up."""
    impl = {"gdfast": (2e-6, 150e9, 50e9, False), "numpy": (10e-6, 4e9, 2e9, True),
            "torch-loop": (30e-6, 10e9, 8e9, True), "torch-foreach": (60e-6, 20e9, 10e9, True),
            "torch-fused": (30e-6, 100e9, 50e9, False), "bound": (1e-6, 160e9, 52e9, False),
            "arith": (1e-6, 200e9, 200e9, False)}  # overhead s, cache B/s, DRAM B/s, slow

    def step(name: str, nbytes: float, tensors: int, wobble: float) -> float:
        overhead, in_cache, dram, _ = impl[name]
        per_tensor = name in ("numpy", "torch-loop", "torch-fused")
        return ((overhead * tensors if per_tensor else overhead)
                + nbytes / (in_cache if nbytes < 32e6 else dram)) * wobble

    batches, batch_time = 5, 0.02
    machine = tuple(eta.Slot(f"stream{k}", 2, 2) for k in range(4))
    groups = [eta.Group("(machine)", 2**24 * 24, machine)]
    truth = [(2.5, {(f"stream{k}", 2): 2**24 * (12 + 8 * k) / 50e9 for k in range(4)})]
    workloads = [(f"1e{k}", 10**k, 1) for k in range(3, 9)] + [("gpt2-small", 124e6, 148),
                                                              ("1000x1024", 1.02e6, 1000)]
    for name, n, tensors in workloads:
        for i, bytes_per_elem in enumerate((12, 20, 28, 28, 20)):
            slots, steps, took = [], {}, 0.3
            for impl_name, (_, _, _, slow) in impl.items():
                if slow and n > 1e7:
                    continue
                gate = 1 if impl_name in ("bound", "arith") else 6
                slots.append(eta.Slot(impl_name, 2, gate))
                t = step(impl_name, n * bytes_per_elem, tensors, 1 + 0.1 * math.sin(i + n))
                steps[(impl_name, 2)] = t
                took += 1.4 * ((batches * 1.35 + 2.5) * max(batch_time, t) + gate * t) + 0.08
            setup = (2 * n * 4 if i == 0 else 0) + len(slots) * 3 * n * 4
            took += setup / 0.5e9
            groups.append(eta.Group(name, n * bytes_per_elem, tuple(slots), setup))
            truth.append((took, steps))
    return groups, truth


def test_time_left_stays_within_2x_of_the_truth_where_counting_groups_does_not() -> None:
    """The issue's failure: counting groups predicts the large ones at the small ones' pace.
    On a made-up default-like run (truth not built from eta's model), the estimate after each
    group stays within 2x of the true time left (measured: at most 1.68x off, right after
    the machine bandwidth; within 1.3x from the 1e5 groups on), where counting groups is off
    by more than 2x (measured: 2.6x, predicting 100 s for 257 s)."""
    groups, truth = _default_like_run()
    est = eta.Estimator(groups, batches=5, batch_time=0.02)
    total = sum(took for took, _ in truth)
    elapsed = 0.0
    worst = worst_counting = 1.0
    for i, (took, steps) in enumerate(truth):
        elapsed += took
        if i == 0:
            est.set_ceiling(2, 50e9)  # what the machine-bandwidth unit measured
        est.done(i, took, steps)
        true_left = total - elapsed
        if true_left <= 0:
            break
        left = est.remaining()
        assert left is not None
        counting = elapsed / (i + 1) * (len(groups) - i - 1)
        worst = max(worst, left / true_left, true_left / left)
        worst_counting = max(worst_counting, counting / true_left, true_left / counting)
    assert worst < 2.0
    assert worst_counting > 2.0


def test_format_left() -> None:
    assert eta.format_left(None) == ""
    assert eta.format_left(float("nan")) == ""
    assert eta.format_left(-3.0) == "~0:00 left"
    assert eta.format_left(125.4) == "~2:05 left"
    assert eta.format_left(3725.0) == "~1:02:05 left"


def test_progress_shows_the_time_left() -> None:
    stream = io.StringIO()
    bar = progress.make("plain", stream)
    bar.start(2)
    bar.advance("adam 1e3", 125.0)
    bar.advance("lion 1e3", None)
    lines = stream.getvalue().splitlines()
    assert lines[0].endswith("s, ~2:05 left)") and "left" not in lines[1]


def test_the_plan_lists_the_slots_each_group_times(capsys: pytest.CaptureFixture[str]) -> None:
    """What the estimate is told before the run matches what the run timed: per group, the
    implementations (the slow reference skipped above --slow-limit) and thread counts."""
    from gdfast.bench.suite import Suite

    parser = cli.build_parser()
    argv = TINY + ["--optimizers", "sgd,adam", "--impls", "gdfast,numpy", "--sizes",
                   "1000,2000", "--slow-limit", "1500", "--threads", "1,2",
                   "--progress", "plain"]
    config = cli._config(parser, parser.parse_args(argv), argv, registry())
    suite = Suite(config, registry(), progress.make("plain"))
    plan = suite.plan()
    result = suite.run()
    units = [(w.name, c.name) for w in suite.workloads() for c in config.cases]
    assert [g.workload for g in plan] == [w for w, _ in units]
    for group, (workload, optimizer) in zip(plan, units):
        ran = {(r["implementation"], r["threads"]) for r in result["rows"]
               if r["workload"] == workload and r["optimizer"] == optimizer
               and r["status"] != "skipped"}
        assert {(s.impl, s.threads) for s in group.slots} == ran
        assert ("numpy", 1) in ran if workload == "1e3" else ("numpy", 1) not in ran
    # the progress line gives the time left after each group
    lines = [x for x in capsys.readouterr().err.splitlines() if x.startswith("[")]
    assert len(lines) == len(plan) and all(x.endswith("left)") for x in lines)


# ---------------------------------------------------------------------------------------------
# The text report: at most 100 characters a line; a summary last

WIDTH = 100


def test_report_lines_fit_in_100_characters(tmp_path: Any, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The widest a plain run gets: a list workload, float64, two thread counts, two ISA
    levels (gdfast[baseline]), a failing implementation with a long message, notes."""
    from gdfast.bench import workloads

    monkeypatch.setattr(workloads, "many_small", lambda: workloads.Workload(
        "1000x1024", tuple((n,) for n in (1, 17, 0, 1024, 33)), "list"))
    supported = gdfast.isa_info()["supported"]
    argv = TINY + ["--lists", "1000x1024", "--optimizers", "adam,lion", "--threads", "1,2",
                   "--dtype", "float64", "--isa", ",".join(supported[:2]),
                   "--impls", "gdfast,numpy,wrong-lr"]
    code, out, _ = run(argv, capsys, registry() + [WrongLr()])
    assert code == cli.EXIT_WRONG  # wrong-lr
    lines = out.splitlines()
    assert "ERROR: wrong result" in out and "adam, 1000x1024 (5 tensors" in out
    assert [x for x in lines if len(x) > WIDTH] == []
    assert any(len(x) > 80 for x in lines)  # the check is not vacuous


def _bench_row(impl: str, kind: str, seconds: float, threads: int = 1, **extra: Any) -> Dict:
    row = _row(impl, seconds, kind)
    row.update(threads=threads, workload="gpt2-small", tensors=148, numel=124_439_808,
               dtype="float64", **extra)
    return row


def test_table_lines_fit_with_extreme_values() -> None:
    rows = [
        _bench_row("gdfast[baseline]", "gdfast", 1.99e-6, speedup_vs_best_ref=1234.5,
                   best_ref="torch-foreach", pct_bound=12345.0, state_bytes_per_param=123.0,
                   gelem_s=6.77e-05, gb_s=0.00107),
        _bench_row("torch-foreach", "reference", 2.5, pct_bound=0.0001, gelem_s=1e-9,
                   gb_s=1e-9, speedup_vs_best_ref=1.0, best_ref="torch-foreach"),
        _bench_row("bound", "bound", 1e-9),
        {**_bench_row("raises", "reference", 1.0), "status": "error", "time_s": None,
         "message": "raised during timing: RuntimeError: " + "a long message " * 20},
    ]
    rows[0]["time_s"] = {"median": 1.99e-6, "min": 1.0e-6, "max": 0.5}  # a huge outlier
    lines = report.table_lines(rows)
    assert [x for x in lines if len(x) > WIDTH] == []
    assert "adam, gpt2-small (148 tensors, 124M elements) float64, 1 thread" in "\n".join(lines)
    assert "1.99 us (1.00-500000)" in "\n".join(lines)


def test_bandwidth_lines_fit() -> None:
    bw = [{"pattern": f"in-place, {k} states", "optimizers": ", ".join(["adamax"] * 12),
           "states": k, "bytes_per_elem": 12 + 8 * k, "threads": t, "numel": 1 << 24,
           "gb_s": 123.4, "gb_s_min": 100.0, "gb_s_max": 150.0}
          for k in range(4) for t in (1, 2, 4, 8, 16)]
    lines = report.bandwidth_lines(bw, "float32")
    assert [x for x in lines if len(x) > WIDTH] == []
    assert sum("adamax" in x for x in lines) > 4  # the optimizers wrap, nothing is cut


def test_summary_geometric_means_over_the_groups() -> None:
    a = [_row("gdfast", 1e-3), _row("numpy", 4e-3, "reference"),
         _row("torch-fused", 2e-3, "reference"), _row("bound", 0.9e-3, "bound")]
    b = [_row("gdfast", 1e-3, optimizer="lion"), _row("numpy", 16e-3, "reference",
                                                     optimizer="lion"),
         _row("torch-fused", 1e-3, "reference", optimizer="lion")]
    rows = a + b
    for r in rows:
        r["pct_bound"] = None
    derive(rows)
    summary = report.summarize(rows)
    vs = summary["gdfast"]["vs"]
    assert vs["numpy"]["geomean"] == pytest.approx(8.0)  # sqrt(4 * 16)
    assert (vs["numpy"]["min"], vs["numpy"]["max"], vs["numpy"]["groups"]) == (4.0, 16.0, 2)
    assert vs["torch-fused"]["geomean"] == pytest.approx(math.sqrt(2.0))
    assert summary["gdfast"]["vs_best_ref"]["geomean"] == pytest.approx(math.sqrt(2.0))
    assert summary["gdfast"]["pct_bound"]["geomean"] == pytest.approx(90.0)
    lines = report.summary_lines(summary)
    assert lines[-1] == ("gdfast: 1.41x the best reference (1-2x), 90% of the stream bound "
                         "(90-90%), 2 groups")
    assert "  gdfast vs numpy            8x (4-16x, 2 groups)" in lines


def test_the_report_ends_with_the_summary(tmp_path: Any,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    code, doc, out = run_json(TINY + ["--optimizers", "sgd,lion", "--impls", "gdfast,numpy"],
                              tmp_path, capsys)
    assert code == 0
    last = out.split("\nwrote ")[0].rstrip().splitlines()[-1]
    assert re.fullmatch(r"gdfast: [\d.]+x the best reference \([\d.]+-[\d.]+x\), \d+% of the "
                        r"stream bound \(\d+-\d+%\), 2 groups", last), last
    assert doc["summary"]["gdfast"]["vs"]["numpy"]["groups"] == 2


# ---------------------------------------------------------------------------------------------
# Precision modes (issue 12): narrow storage, fp32 master copies, stochastic rounding

# Bytes one step moves per parameter and optimizer memory kept per parameter, per mode, written
# down from the issue, not derived the way precision.py derives them. AdamW: fp32 p r/w 8, g 4,
# m and v r/w 16; all-bf16 half of it; bf16 params and grads with fp32 states 4 + 2 + 16; with an
# fp32 master: master r/w 8, param written 2, grad 2, states 16; fp32 params with bf16 states
# 8 + 4 + 8. Kept: the states, plus the 4-byte master.
ADAMW = {"fp32": (28, 8), "bf16": (14, 4), "bf16-sr": (14, 4), "bf16-fp32-states": (22, 8),
         "bf16-master": (28, 12), "fp32-bf16-states": (20, 4), "fp32-bf16-states-sr": (20, 4),
         "fp16-fp32-states": (22, 8), "fp16-master": (28, 12)}
# SGD without momentum has no state: param and grad only, and the master where there is one
SGD = {"fp32": (12, 0), "bf16": (6, 0), "bf16-sr": (6, 0), "bf16-fp32-states": (6, 0),
       "bf16-master": (12, 4), "fp32-bf16-states": (12, 0), "fp32-bf16-states-sr": (12, 0),
       "fp16-fp32-states": (6, 0), "fp16-master": (12, 4)}
NARROW_MODES = [m for m in ADAMW if m != "fp32"]


def test_lamb_rows_in_every_mode(tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    """LAMB's two passes move 3 param + grad + 3 x 2 states bytes per element (a master: read
    in pass 1, read and written in pass 2, the param written); its gate passes in each mode,
    narrow states included."""
    pytest.importorskip("ml_dtypes")
    modes = {"bf16-fp32-states": 32, "bf16-master": 40, "fp16-master": 40, "bf16": 20,
             "fp32-bf16-states": 28, "bf16-sr": 20}
    argv = TINY + ["--optimizers", "lamb", "--impls", "gdfast", "--precisions", ",".join(modes)]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    gd = {r["precision"]: r for r in rows_of(doc, optimizer="lamb", implementation="gdfast")}
    for mode, moved in modes.items():
        assert gd[mode]["status"] == "ok", gd[mode]["message"]
        assert gd[mode]["bytes_per_elem"] == moved
        assert 0 <= gd[mode]["gate_worst"] <= 1


def test_parse_precisions() -> None:
    assert [p.name for p in parse_precisions(" fp32, bf16-sr,fp32")] == ["fp32", "bf16-sr"]
    every = [p.name for p in parse_precisions("all")]
    assert every == list(ADAMW)  # every mode of float32 math; fp64 is --dtype float64's
    assert as_precision(np.float64) is PRECISIONS["fp64"] and as_precision("bf16").name == "bf16"
    with pytest.raises(ValueError, match="bf17"):
        parse_precisions("fp32,bf17")


@pytest.mark.parametrize("argv, needle", [
    (["--precisions", "bf17"], "bf17"),
    (["--precisions", "bf16", "--dtype", "float64"], "--dtype and --precisions"),
], ids=["unknown", "with --dtype"])
def test_bad_precision_arguments_exit_2(argv: List[str], needle: str,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        cli.main(TINY + argv)
    assert info.value.code == cli.EXIT_USAGE
    assert needle in capsys.readouterr().err


def test_bf16_modes_without_ml_dtypes_exit_2_saying_so() -> None:
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'ml_dtypes':\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from gdfast.bench import main\n"
        f"sys.exit(main({TINY + ['--precisions', 'fp32,bf16-sr']!r}))\n"
    )
    proc = _python(code)
    assert proc.returncode == cli.EXIT_USAGE, proc.stdout + proc.stderr
    assert "bfloat16 arrays need ml_dtypes (pip install ml_dtypes)" in proc.stderr


def test_precision_modes_make_a_row_each_with_their_bytes_bound_and_state_memory(
        tmp_path: Any, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ml_dtypes")
    argv = TINY + ["--optimizers", "adamw,sgd", "--precisions", ",".join(ADAMW),
                   "--impls", "gdfast"]
    code, doc, out = run_json(argv, tmp_path, capsys)
    assert code == 0
    report.validate(doc)
    assert doc["config"]["precisions"] == list(ADAMW)
    for name, table in (("adamw", ADAMW), ("sgd", SGD)):
        rows = rows_of(doc, optimizer=name)
        gd = {r["precision"]: r for r in rows if r["implementation"] == "gdfast"}
        assert list(gd) == list(table)
        for mode, (moved, kept) in table.items():
            r = gd[mode]
            assert r["status"] == "ok", r["message"]
            assert r["bytes_per_elem"] == moved
            # measured from the arrays the runner steps: their nbytes / parameters
            assert r["state_bytes_per_param"] == kept
            assert r["gb_s"] == pytest.approx(r["gelem_s"] * moved)
            assert 0 <= r["gate_worst"] <= 1
            # % of the bound of its own layout, timed in the same batches
            bound = next(b for b in rows
                         if b["implementation"] == "bound" and b["layout"] == r["layout"])
            assert r["pct_bound"] == pytest.approx(
                100 * bound["time_s"]["median"] / r["time_s"]["median"])
            if mode == "fp32":
                assert r["speedup_vs_base"] is None
            else:
                assert r["base_precision"] == "fp32"
                assert r["speedup_vs_base"] == pytest.approx(
                    gd["fp32"]["time_s"]["median"] / r["time_s"]["median"])
        # one stream bound per layout: a stochastically rounding mode moves the same bytes as
        # its round-to-nearest twin; the arithmetic bound is per mode (rounding costs)
        assert [r["precision"] for r in rows if r["implementation"] == "bound"] == [
            m for m in table if not m.endswith("-sr")]
        assert [r["precision"] for r in rows if r["implementation"] == "arith"] == list(table)
    lines = out.splitlines()
    for heading in ("- fp32: fp32 params, grads and states, 28 B/element moved per step",
                    "- bf16, bf16-sr: bf16 params, grads and states, 14 B/element moved per "
                    "step",
                    "- bf16-master: bf16 params and grads, fp32 master and states, 28 B/element "
                    "moved per step",
                    "- bf16-fp32-states: bf16 params and grads, fp32 states, 6 B/element moved "
                    "per step"):
        assert heading in lines
    assert any(x.startswith("  gdfast SR ") for x in lines)
    assert any(x.startswith("  bound (arith, SR) ") for x in lines)
    assert [x for x in lines if len(x) > WIDTH] == []
    summary = doc["summary"]["gdfast bf16-sr"]
    assert summary["base"] == "gdfast fp32" and summary["vs_base"]["groups"] == 2
    assert re.search(r"^gdfast bf16-sr: [\d.]+x gdfast fp32 \(", out, re.MULTILINE)


@pytest.mark.parametrize("mode", NARROW_MODES)
def test_the_gate_in_narrow_modes_passes_gdfast_and_fails_a_wrong_learning_rate(
        mode: str) -> None:
    """Every case in every narrow mode: gdfast passes the gate (against the float64 reference
    with the mode's storage rounding simulated, or, with a master copy, the master against
    the plain reference), and a learning rate 2x too high or too low fails it."""
    pytest.importorskip("ml_dtypes")
    for workload in (single(5000), many_small(3, 700)):
        data = make_data(workload, mode)
        for case in CASES.values():
            if case.two_pass:  # (float32 and float64 only: test_two_pass_rules_refuse_...)
                continue
            check = Gate(case, data)
            for factor in (1.0, 2.0, 0.5):
                runner = GdfastRunner(with_lr_scaled(case, factor), data, None)
                verdict = check.check(runner)
                runner.close()
                if factor == 1.0:  # measured: at most 0.65 (bf16-sr: SR's random walk)
                    assert verdict.ok and verdict.worst < 0.8, (case.name, verdict.message)
                else:  # measured: at least 1.31 (bf16, RAdam, lr / 2)
                    assert not verdict.ok and verdict.worst > 1.0, (case.name, factor)


def test_a_param_that_is_not_its_master_rounded_fails_the_gate() -> None:
    """With a master copy the gate checks the master like an fp32 param, and that the param
    is exactly the master rounded to nearest: one bf16 step off in one element fails."""
    pytest.importorskip("ml_dtypes")
    case = CASES["adam"]
    data = make_data(single(3000), "bf16-master")
    check = Gate(case, data)
    runner = GdfastRunner(case, data, None)
    assert check.check(runner).ok
    inner = runner._fresh

    def fresh() -> Any:
        step = inner()

        def nudged() -> None:
            step()
            runner.params[0].view(np.uint16)[0] += 1  # the next bf16 number up
        return nudged

    runner._fresh = fresh  # type: ignore[method-assign]
    runner.reset()
    verdict = check.check(runner)
    assert not verdict.ok and "is not its master" in verdict.message
    runner.close()


@pytest.mark.parametrize(("name", "mode"), [
    pytest.param(name, mode, id=f"{name}-{mode}")
    for mode in ("bf16", "bf16-sr", "bf16-master", "fp32-bf16-states-sr") for name in CASES
    # (a two-pass rule keeps float32 states: test_two_pass_rules_refuse_narrow_states)
    if not (CASES[name].two_pass and PRECISIONS[mode].state != "float32")])
def test_arith_bound_repeats_the_narrow_step_in_place(name: str, mode: str) -> None:
    """In a narrow mode the arithmetic bound's call (_core.run_repeated with the precision
    entry) is bitwise the op with the mode's keywords applied `repeats` times in place
    (stochastic rounding keyed by ARITH_COUNT, which the op's step argument gives only for
    counted rules)."""
    pytest.importorskip("ml_dtypes")
    case = CASES[name]
    precision = PRECISIONS[mode]
    rule = case.rule
    if precision.stochastic and rule.step != "counted":
        pytest.skip("the op keys stochastic rounding by its step, a count only here")
    data = make_data(single(3000), precision)
    runner = ArithBound().build(case, data)
    runner.step()
    expected, grad = data.p0[0].copy(), data.grads[0]
    starts = state_starts(case)
    states = {n: np.full(3000, starts[n], storage_dtype(precision.state)) for n in case.states}
    extra: Dict[str, Any] = {}
    if precision.master:
        extra["master_param"] = expected.astype(np.float32)
    if precision.stochastic:
        extra.update(stochastic_rounding=True, seed=data.seed)
    op = getattr(gdfast.ops, f"{rule.name}_")
    step = ARITH_STEP[rule.step] if rule.step != "none" else None
    assert not precision.stochastic or step == impls.ARITH_COUNT
    inputs = {name: grad for name in rule.inputs[1:]}  # (the gradient again, as the bench)
    for _ in range(runner.repeats):
        op(expected, grad, **inputs, **states, step=step, **case.hyper, **extra)

    def bits(a: np.ndarray) -> np.ndarray:
        return a.view(np.uint16) if a.dtype.itemsize == 2 else a

    np.testing.assert_array_equal(bits(runner.params[0]), bits(expected))
    for n in case.states:
        np.testing.assert_array_equal(bits(runner.states[n][0]), bits(states[n]))


def test_torch_and_lion_pytorch_run_the_modes_they_have(tmp_path: Any,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """torch.optim (every path) and lion-pytorch in bf16 pass the gate of all-bf16 round to
    nearest; the modes they lack are skipped with the reason; gdfast's stochastic rounding
    is compared with the references of its layout (all-bf16)."""
    pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    names = ["gdfast", "torch-loop", "torch-foreach", "torch-fused"]
    if importlib.util.find_spec("lion_pytorch"):
        names.append("lion-pytorch")
    argv = TINY + ["--impls", ",".join(names), "--threads", "1", "--slow-limit", "0",
                   "--optimizers", "adam,adamw,lion,adagrad,rmsprop",
                   "--precisions", "fp32,bf16,bf16-sr,bf16-fp32-states,bf16-master"]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    assert [r["message"] for r in doc["rows"] if r["status"] == "error"] == []
    why = {"bf16-sr": "has no stochastic rounding",
           "bf16-fp32-states": "keeps its states in the param's type",
           "bf16-master": "keeps no float32 master copy"}
    for r in doc["rows"]:
        if r["kind"] != "reference" or r["message"].startswith(("not in", "torch.optim has no")):
            continue
        if r["precision"] in ("fp32", "bf16"):
            assert r["status"] == "ok", (r["implementation"], r["message"])
        else:
            assert r["status"] == "skipped" and why[r["precision"]] in r["message"]
    (fused,) = rows_of(doc, optimizer="adamw", precision="bf16", implementation="torch-fused")
    # torch keeps m and v in bf16, and a 4-byte float32 step count per tensor
    assert fused["state_bytes_per_param"] == pytest.approx(4 + 4 / 1000)
    (sr,) = rows_of(doc, optimizer="adamw", precision="bf16-sr", implementation="gdfast")
    fastest = min((r for r in rows_of(doc, optimizer="adamw", precision="bf16", status="ok")
                   if r["kind"] == "reference"), key=lambda r: r["time_s"]["median"])
    assert sr["best_ref"] == f"{fastest['implementation']} bf16"
    assert sr["speedup_vs_best_ref"] == pytest.approx(
        fastest["time_s"]["median"] / sr["time_s"]["median"])


def test_the_gate_catches_torch_fused_sgd_on_bf16(tmp_path: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """torch 2.13's fused SGD leaves the vectorized blocks of a bf16 or fp16 param untouched
    (seen here): its row is an error, not a time."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    if not torch.__version__.startswith("2.13.0"):
        pytest.skip("torch 2.13.0's bug; other versions may have it fixed")
    argv = TINY + ["--impls", "gdfast,torch-fused", "--optimizers", "sgd,momentum",
                   "--precisions", "bf16"]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == cli.EXIT_WRONG
    for name in ("sgd", "momentum"):
        (row,) = rows_of(doc, optimizer=name, implementation="torch-fused")
        assert row["status"] == "error" and "wrong result" in row["message"]
        assert rows_of(doc, optimizer=name, implementation="gdfast")[0]["status"] == "ok"


def test_deepspeed_modes_choose_its_state_type(tmp_path: Any,
                                               capsys: pytest.CaptureFixture[str],
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """DeepSpeed's CPUAdam keeps fp32 states by default (fp32_optimizer_states=True): the
    all-bf16 mode passes False; it has no master copy and no stochastic rounding."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("ml_dtypes")
    calls = _fake_deepspeed(monkeypatch, torch)
    argv = TINY + ["--optimizers", "adamw", "--impls", "gdfast,deepspeed",
                   "--precisions", "fp32,bf16,bf16-sr,bf16-master"]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    assert code == 0
    got = {r["precision"]: r for r in rows_of(doc, implementation="deepspeed")}
    assert got["fp32"]["status"] == "ok" and got["bf16"]["status"] == "ok"
    assert "no stochastic rounding" in got["bf16-sr"]["message"]
    assert "no float32 master copy" in got["bf16-master"]["message"]
    assert {c.get("fp32_optimizer_states", "default") for c in calls
            if "lr" in c} == {"default", False}
    ds = DeepSpeed()
    assert ds.precision_kwargs(PRECISIONS["bf16-fp32-states"]) == {}  # its default: fp32
    assert ds.precision_kwargs(PRECISIONS["bf16"]) == {"fp32_optimizer_states": False}
    assert ds.supports(CASES["adamw"], PRECISIONS["fp16-fp32-states"]) is None
    assert "its states in the param's type" in ds.supports(CASES["adamw"],
                                                           PRECISIONS["fp32-bf16-states"])


def test_deepspeed_bf16_params_with_fp32_states(tmp_path: Any,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    """The real DeepSpeed CPUAdam, where it is installed (never in CI): bf16 params and grads
    with fp32 states (8 B per parameter) and with bf16 states (4 B) pass the gate."""
    pytest.importorskip("ml_dtypes")
    try:
        with impls.quiet():
            import deepspeed.ops.adam  # noqa: F401
    except Exception as exc:
        pytest.skip(f"DeepSpeed does not import: {exc}")
    argv = TINY + ["--optimizers", "adamw", "--impls", "gdfast,deepspeed", "--threads", "1",
                   "--precisions", "bf16-fp32-states,bf16"]
    code, doc, _ = run_json(argv, tmp_path, capsys)
    if code == cli.EXIT_USAGE:
        pytest.skip("DeepSpeed's CPUAdam op does not build here")
    assert code == 0
    got = {r["precision"]: r for r in rows_of(doc, implementation="deepspeed")}
    assert got["bf16-fp32-states"]["status"] == "ok" and got["bf16"]["status"] == "ok"
    assert got["bf16-fp32-states"]["state_bytes_per_param"] == 8
    assert got["bf16"]["state_bytes_per_param"] == 4


def test_the_plan_lists_the_slots_of_every_mode(capsys: pytest.CaptureFixture[str]) -> None:
    """With several modes, the time-left plan names each slot by implementation and mode,
    and lists the stream bound once per layout, as the run times them."""
    from gdfast.bench.suite import Suite

    pytest.importorskip("ml_dtypes")
    parser = cli.build_parser()
    argv = TINY + ["--optimizers", "adam", "--impls", "gdfast", "--sizes", "1000",
                   "--precisions", "fp32,bf16,bf16-sr,bf16-master"]
    config = cli._config(parser, parser.parse_args(argv), argv, registry())
    suite = Suite(config, registry())
    (group,) = suite.plan()
    result = suite.run()
    ran = {(f"{r['implementation']} {r['precision']}", r["threads"]) for r in result["rows"]
           if r["status"] != "skipped"}
    assert {(s.impl, s.threads) for s in group.slots} == ran
    assert sum(s.impl.startswith("bound ") for s in group.slots) == 3  # fp32, bf16, bf16-master


def test_compare_matches_rows_of_reports_before_precision_modes() -> None:
    """A report without precision modes (rows in float32, no 'precision') compares with a
    new run's fp32 rows; other modes are new rows, not regressions."""
    old = _doc([_row("gdfast", 1e-3)])
    new_rows = [dict(_row("gdfast", 1e-3), precision="fp32"),
                dict(_row("gdfast", 0.5e-3), precision="bf16", dtype="bfloat16")]
    changes = compare.compare(old, _doc(new_rows))
    assert sorted(c.status for c in changes) == ["new", "ok"]
    assert {c.key[2] for c in changes} == {"fp32", "bf16"}


def test_report_with_modes_fits_in_100_characters(tmp_path: Any,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """The widest a run with modes gets: two ISA levels, two thread counts, the modes with
    the longest names, a list workload, a failing implementation."""
    pytest.importorskip("ml_dtypes")
    supported = gdfast.isa_info()["supported"]
    argv = TINY + ["--sizes", "none", "--lists", "1000x1024", "--optimizers", "adamw",
                   "--threads", "1,2", "--isa", ",".join(supported[:2]),
                   "--precisions", "fp32,fp32-bf16-states-sr,bf16-master,fp16-fp32-states",
                   "--impls", "gdfast,wrong-lr"]
    code, out, _ = run(argv, capsys, registry() + [WrongLr()])
    assert code == cli.EXIT_WRONG
    lines = out.splitlines()
    assert [x for x in lines if len(x) > WIDTH] == []
    assert any(len(x) > 90 for x in lines)  # the check is not vacuous


# ---------------------------------------------------------------------------------------------
# README's gdfast-bench commands run as written

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _extras() -> Dict[str, List[str]]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return doc["project"]["optional-dependencies"]  # type: ignore[no-any-return]


def _readme_bench_commands() -> List[Tuple[str, str]]:
    """Every gdfast-bench command in README's inline code, with its paragraph."""
    if not (ROOT / "README.md").exists():
        pytest.skip("README.md is not here (tests run from an installed wheel)")
    text = (ROOT / "README.md").read_text()
    out = []
    for paragraph in text.split("\n\n"):
        for command in re.findall(r"`((?:pip install '\.\[bench\]' && )?gdfast-bench\b[^`]*)`",
                                  paragraph):
            out.append((command, " ".join(paragraph.split())))
    return out


def test_bench_extra_installs_what_the_bench_uses() -> None:
    extras = _extras()
    for dist in ("torch==2.13.0", "lion-pytorch", "tqdm", "matplotlib"):  # tqdm: the bar
        assert dist in extras["bench"]
    assert extras["plot"] == ["matplotlib"]
    torch_pins = [d for deps in extras.values() for d in deps
                  if re.fullmatch(r"torch\b.*", d)]
    assert torch_pins and set(torch_pins) == {"torch==2.13.0"}


def test_readme_bench_commands_parse_and_their_needs_are_installed() -> None:
    """Each command parses (sizes, lists, optimizers, implementations named), and what it
    needs beyond gdfast is in the bench extra (--plot: matplotlib) or installed by a command
    in the same paragraph (DeepSpeed)."""
    commands = _readme_bench_commands()
    found = [c for c, _ in commands]
    assert "pip install '.[bench]' && gdfast-bench --json out.json --plot out.png" in found
    assert "pip install '.[bench]' && gdfast-bench" in found
    assert sum("--impls" in c for c in found) >= 2
    bench = _extras()["bench"]
    by_name = {impl.name: impl for impl in registry()}
    for command, paragraph in commands:
        argv = shlex.split(command.split("&&")[-1])[1:]
        parser = cli.build_parser()
        args = parser.parse_args(argv)  # SystemExit(2) on a bad argument
        config = cli._config(parser, args, argv, registry())
        if args.plot:
            assert "matplotlib" in bench
        for name in config.impls or []:
            install = by_name[name].install.split(" (")[0]  # "pip install [--flags] DIST"
            assert not install or install.split()[-1] in bench or install in paragraph, (
                command, name)


def test_readme_reproduce_command_writes_json_and_png(
        tmp_path: Any, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """README's `gdfast-bench --json out.json --plot out.png`, on tiny sizes."""
    pytest.importorskip("matplotlib")  # in the bench and test extras, not cibuildwheel's
    monkeypatch.chdir(tmp_path)
    code, out, _ = run(TINY + ["--optimizers", "adam,lion", "--impls", "gdfast,numpy",
                               "--sizes", "1000,2000", "--json", "out.json",
                               "--plot", "out.png"], capsys)
    assert code == 0
    assert (tmp_path / "out.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report.validate(json.loads((tmp_path / "out.json").read_text()))
    assert out.rstrip().endswith("wrote out.json\nwrote out.png")


# ---------------------------------------------------------------------------------------------
# The stream bound with an input: a two-pass rule's own access pattern


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 15, 16, 1001, 70_001])
def test_stream_with_an_input_reads_it_and_writes_param_and_state(dtype: Any, n: int) -> None:
    """param += scale * grad + scale * input and state += scale * grad, in that order of
    operations (exact against NumPy's same operations); grad and input are only read, so a
    read-only input is taken."""
    rng = np.random.default_rng(n)
    param, grad, state, given = (rng.standard_normal(n).astype(dtype) for _ in range(4))
    given.flags.writeable = False
    scale = dtype(0.375)
    expected_param = (param + grad * scale) + given * scale
    expected_state = state + grad * scale
    grad_before = grad.copy()
    gdfast._core.stream(param, grad, (state,), float(scale), input=given)
    np.testing.assert_array_equal(param, expected_param)
    np.testing.assert_array_equal(state, expected_state)
    np.testing.assert_array_equal(grad, grad_before)
    gdfast._core.stream(param, grad, (), float(scale), input=given)
    np.testing.assert_array_equal(param, (expected_param + grad * scale) + given * scale)


def test_stream_with_an_input_refuses_what_it_cannot_run() -> None:
    """More than one state, narrow arrays, an input of another type, an input aliasing a
    written array: each a ValueError or TypeError naming it, nothing written."""
    n = 64
    param, grad, state, state2, given = (np.ones(n, np.float32) for _ in range(5))
    bad = [
        (dict(states=(state, state2), given=given), ValueError, "states: expected 0 to 1"),
        (dict(states=(), given=given.astype(np.float64)), TypeError, "input"),
        (dict(states=(), given=param), ValueError, "input"),
    ]
    try:
        import ml_dtypes

        bf16 = np.ones(n, ml_dtypes.bfloat16)
        bad.append((dict(states=(), given=bf16, param=np.ones(n, ml_dtypes.bfloat16)),
                    ValueError, "input: the stream with an input takes float32 or float64"))
    except ImportError:
        pass
    for kwargs, error, needle in bad:
        target = kwargs.get("param", param)
        before = target.copy()
        with pytest.raises(error, match=re.escape(needle)):
            gdfast._core.stream(target, grad, kwargs["states"], 0.5, input=kwargs["given"])
        np.testing.assert_array_equal(target, before)
        np.testing.assert_array_equal(state, np.ones(n, np.float32))


def test_two_pass_bound_moves_the_rules_own_pattern() -> None:
    """LAMB's bound in a plain mode: pass 1 writes m and v from p, g, m, v (p not written),
    then pass 2 writes p from p, m, v: exactly the stream's operations in that order."""
    case = CASES["lamb"]
    data = make_data(single(5000), np.float32)
    runner = impls.Bound().build(case, data)
    step = runner._fresh()
    param = runner.params[0]
    m, v = (runner.states[name][0] for name in case.states)
    p0, g, m0, v0 = param.copy(), data.grads[0], m.copy(), v.copy()
    step()
    scale = np.float32(impls.STREAM_SCALE)
    m1 = (m0 + g * scale) + p0 * scale
    v1 = v0 + g * scale
    np.testing.assert_array_equal(m, m1)
    np.testing.assert_array_equal(v, v1)
    np.testing.assert_array_equal(param, (p0 + m1 * scale) + v1 * scale)
