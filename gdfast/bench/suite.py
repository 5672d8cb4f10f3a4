"""The run: every (workload, optimizer) group — build each implementation, gate it, time all of
them interleaved together with the bound — and the rows of the report."""

from __future__ import annotations

import datetime
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import eta, machine
from .bandwidth import MAX_STATES, machine_bandwidth
from .cases import CASES, Case
from .gate import GATE_STEPS, Gate, Verdict, describe_failure
from .impls import ArithBound, Bound, Gdfast, Implementation, Runner
from .machine import current_threads, restore_threads, set_threads
from .optional import Unavailable
from .progress import Progress
from .report import SCHEMA, group_key
from .timing import Slot, calibrate, run_batches
from .workloads import Data, Workload, fit, make_data, make_list, single, size_name


@dataclass
class Config:
    mode: str = "default"
    cases: List[Case] = field(default_factory=list)
    sizes: List[int] = field(default_factory=list)
    lists: List[str] = field(default_factory=list)
    dtype: np.dtype = np.dtype(np.float32)
    threads: List[int] = field(default_factory=lambda: [1])
    isas: List[str] = field(default_factory=list)  # gdfast levels; [] = the active one
    impls: Optional[List[str]] = None  # names; None = every available one
    batches: int = 5
    batch_time: float = 0.03
    slow_limit: Optional[int] = None  # slow references skipped above this many elements
    memory_budget: int = 4 << 30
    machine_n: Optional[int] = None  # elements per array for the machine bandwidth; None: skip
    seed: int = 0
    argv: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)  # from the command line, for the report

    def as_json(self) -> Dict[str, Any]:
        return {
            "mode": self.mode,
            "optimizers": [c.name for c in self.cases],
            "sizes": self.sizes,
            "lists": self.lists,
            "dtype": self.dtype.name,
            "threads": self.threads,
            "isa": self.isas,
            "implementations": self.impls,
            "batches": self.batches,
            "batch_time_s": self.batch_time,
            "slow_limit": self.slow_limit,
            "memory_budget_bytes": self.memory_budget,
            "machine_bandwidth_numel": self.machine_n,
            "seed": self.seed,
        }


def _row(case: Case, w: Workload, dtype: np.dtype, threads: int, impl: Implementation,
         isa: Optional[str]) -> Dict[str, Any]:
    return {
        "optimizer": case.name,
        "workload": w.name,
        "kind_of_workload": w.kind,
        "numel": w.numel,
        "tensors": w.tensors,
        "dtype": dtype.name,
        "threads": threads,
        "implementation": impl.name,
        "kind": impl.kind,
        "isa": isa,
        "status": "ok",
        "message": "",
        "time_s": None,
        "batches": 0,
        "steps_per_batch": 0,
        "bytes_per_elem": case.bytes_per_elem(dtype.itemsize),
        "gelem_s": None,
        "gb_s": None,
        "pct_bound": None,
        "speedup_vs_best_ref": None,
        "best_ref": None,
        "state_bytes_per_param": None,
        "gate_worst": None,
    }


class Suite:
    def __init__(self, config: Config, implementations: Sequence[Implementation],
                 progress: Optional[Progress] = None,
                 log: Callable[[str], None] = lambda s: None):
        self.config = config
        self.progress = progress or Progress()
        self.log = log
        self.notes: List[str] = list(config.notes)
        self.rows: List[Dict[str, Any]] = []
        self.errors = 0
        # implementations named in --impls that cannot run here: name -> why
        self.refused: Dict[str, str] = {}
        self._workloads: Optional[List[Workload]] = None
        self.last_steps: Dict[Tuple[str, int], float] = {}  # the last group's seconds per step
        from gdfast import _core

        self.best_isa: str = _core.active_isa()
        self.impls = self._select(implementations)

    # -- which implementations ------------------------------------------------------------

    def _select(self, implementations: Sequence[Implementation]) -> List[Implementation]:
        cfg = self.config
        chosen: List[Implementation] = []
        wanted = cfg.impls
        known = {impl.name for impl in implementations}
        for impl in implementations:
            if wanted is not None and impl.name not in wanted:
                continue
            if isinstance(impl, Gdfast) and cfg.isas:
                variants = [Gdfast(isa, "gdfast" if len(cfg.isas) == 1 else f"gdfast[{isa}]")
                            for isa in cfg.isas]
                chosen.extend(variants)
                continue
            try:
                impl.check_available()
            except Unavailable as exc:
                hint = f"; {impl.install}" if impl.install else ""
                if wanted is not None:  # named: an error (see problems()), not a note
                    self.refused[impl.name] = f"{exc}{hint}"
                else:
                    self.notes.append(f"{impl.name}: not run ({exc}{hint})")
                continue
            chosen.append(impl)
        if wanted is not None:
            for name in wanted:
                if name not in known and name not in ("bound", "arith"):
                    raise ValueError(f"unknown implementation {name!r}")
        chosen += [Bound(self.best_isa), ArithBound(self.best_isa)]
        return chosen

    # -- memory -----------------------------------------------------------------------------

    def bytes_needed(self, w: Workload) -> int:
        """Peak bytes of one group of ``w``: shared p0 and grads, then per implementation its
        parameters and states, plus the temporaries its step allocates."""
        isz = self.config.dtype.itemsize
        worst = 0
        for case in self.config.cases:
            arrays = 2 * w.numel  # p0, grads
            for impl in self.impls:
                if impl.supports(case, self.config.dtype) is not None:
                    continue
                if not impl.copies_workload or self._too_slow(impl, case, w):
                    continue
                per_largest, per_total = impl.temporaries
                arrays += (1 + case.n_states + per_total) * w.numel + per_largest * w.largest
            worst = max(worst, arrays)
        return worst * isz

    def _too_slow(self, impl: Implementation, case: Case, w: Workload) -> bool:
        limit = self.config.slow_limit
        return limit is not None and w.numel > limit and impl.slow_for(case)

    def problems(self) -> List[str]:
        """Why implementations named in --impls would not run: unavailable here, or none of
        the run's groups is one they run. Empty when every named one runs somewhere (a run
        only reports the rest as notes)."""
        out = [f"{name} cannot run here: {why}" for name, why in self.refused.items()]
        if self.config.impls is None:
            return out
        named = [impl for impl in self.impls if impl.name in self.config.impls]
        workloads = self.workloads()
        limit = size_name(self.config.slow_limit or 0)
        for impl in named:
            reasons: List[str] = []
            runs = False
            for case in self.config.cases:
                why = impl.supports(case, self.config.dtype)
                if why is None:
                    if any(not self._too_slow(impl, case, w) for w in workloads):
                        runs = True
                        break
                    why = (f"a slow reference, timed only up to {limit} elements in this "
                           "mode (--slow-limit 0 times it at every size)")
                reasons.append(why)
            if not runs and workloads:
                out.append(f"{impl.name} runs none of the groups asked for: "
                           + "; ".join(dict.fromkeys(reasons)))
        return out

    def workloads(self) -> List[Workload]:
        """The workloads to run, fitted to the memory budget (computed once)."""
        if self._workloads is None:
            self._workloads = self._fit_workloads()
        return self._workloads

    def _fit_workloads(self) -> List[Workload]:
        cfg = self.config
        wanted = [single(n) for n in cfg.sizes] + [make_list(name) for name in cfg.lists]
        out: List[Workload] = []
        for w in wanted:
            f = fit(w, self.bytes_needed, cfg.memory_budget)
            if f is None:
                self.notes.append(f"{w.name}: skipped, needs {self.bytes_needed(w) / 1e9:.1f} GB "
                                  f"(budget {cfg.memory_budget / 1e9:.1f} GB)")
                continue
            if f is not w:
                self.notes.append(f"{w.name} -> {f.name}: {f.note}; needs "
                                  f"{self.bytes_needed(w) / 1e9:.1f} GB, budget "
                                  f"{cfg.memory_budget / 1e9:.1f} GB (--max-memory)")
            if f.name not in {x.name for x in out}:
                out.append(f)
        return out

    # -- the plan, for the time left ---------------------------------------------------------

    def machine_n(self) -> int:
        """Elements per array of the machine-bandwidth section, within the memory budget."""
        cfg = self.config
        n = cfg.machine_n or 0
        while n > (1 << 16) and 8 * n * cfg.dtype.itemsize > cfg.memory_budget:
            n //= 2
        return n

    def plan(self) -> List[eta.Group]:
        """Every unit of the run, in order, as the time-left estimate sees it: the machine
        bandwidth (when measured), then each (workload, optimizer) group with the slots it
        will time."""
        cfg = self.config
        isz = cfg.dtype.itemsize
        out: List[eta.Group] = []
        if cfg.machine_n:
            n = self.machine_n()
            slots = tuple(eta.Slot(_stream_key(k), t, 2)
                          for k in range(MAX_STATES + 1) for t in cfg.threads)
            out.append(eta.Group("(machine)", n * (3 + MAX_STATES) * isz, slots))
        for w in self.workloads():
            made = 2 * w.numel * isz  # p0 and grads, once per workload
            for case in cfg.cases:
                slots_: List[eta.Slot] = []
                setup = made
                made = 0
                for impl in self.impls:
                    if impl.supports(case, cfg.dtype) is not None or self._too_slow(impl, case, w):
                        continue
                    if impl.copies_workload:
                        setup += (1 + case.n_states) * w.numel * isz
                    first = 1 if impl.kind == "bound" else GATE_STEPS
                    slots_ += [eta.Slot(impl.name, t, first) for t in cfg.threads]
                out.append(eta.Group(w.name, w.numel * case.bytes_per_elem(isz), tuple(slots_),
                                     setup))
        return out

    # -- the run ----------------------------------------------------------------------------

    def run(self) -> Dict[str, Any]:
        cfg = self.config
        started = datetime.datetime.now(datetime.timezone.utc)
        info = machine.describe()
        workloads = self.workloads()
        bandwidth: List[Dict[str, Any]] = []
        estimate = eta.Estimator(self.plan(), cfg.batches, cfg.batch_time)
        unit = 0
        self.progress.start(len(estimate.groups))
        previous_threads = current_threads()
        try:
            if cfg.machine_n:
                self.progress.now("machine bandwidth")
                n = self.machine_n()
                t0 = time.perf_counter()
                bandwidth = machine_bandwidth(n, cfg.threads, cfg.batches, cfg.batch_time,
                                              cfg.dtype, self.best_isa, self.notes,
                                              pattern_labels())
                steps: Dict[Tuple[str, int], float] = {}
                for b in bandwidth:
                    if b["states"] is None:  # triad: a reference figure, not a ceiling
                        continue
                    steps[(_stream_key(b["states"]), b["threads"])] = (
                        b["bytes_per_elem"] * n / (b["gb_s"] * 1e9))
                    best = max(estimate.ceiling.get(b["threads"], 0.0), b["gb_s"] * 1e9)
                    estimate.set_ceiling(b["threads"], best)
                estimate.done(unit, time.perf_counter() - t0, steps)
                unit += 1
                self.progress.advance("machine bandwidth", estimate.remaining())
            for w in workloads:
                t0 = time.perf_counter()
                data = make_data(w, cfg.dtype, cfg.seed)
                for case in cfg.cases:
                    label = f"{case.name} {w.name}"
                    self.progress.now(label)
                    self.rows.extend(self.group(case, data))
                    t1 = time.perf_counter()
                    estimate.done(unit, t1 - t0, self.last_steps)
                    t0 = t1
                    unit += 1
                    self.progress.advance(label, estimate.remaining())
                data.pool.clear()
                del data
        finally:
            self.progress.close()
            restore_threads(previous_threads)
            import gdfast

            gdfast.set_isa(self.best_isa)
        finished = datetime.datetime.now(datetime.timezone.utc)
        derive(self.rows)
        why: Dict[Tuple[str, str], List[str]] = {}
        for r in self.rows:
            if r["status"] == "skipped":
                where = why.setdefault((r["implementation"], r["message"]), [])
                if r["optimizer"] not in where:
                    where.append(r["optimizer"])
        skipped = [f"{impl} not run on {', '.join(opts)}: {message}"
                   for (impl, message), opts in why.items()]
        return {
            "schema": SCHEMA,
            "created": started.isoformat(timespec="seconds"),
            "duration_s": round((finished - started).total_seconds(), 2),
            "command": ["gdfast-bench", *cfg.argv],
            "config": cfg.as_json(),
            "machine": info,
            "implementations": {impl.name: {"kind": impl.kind, "description": impl.description,
                                            "version": _safe_version(impl)}
                                for impl in self.impls},
            "cases": {c.name: {"title": c.title, "constructor": c.ctor,
                               "kwargs": dict(c.kwargs), "rule": c.rule.name,
                               "hyper": dict(c.hyper), "states": list(c.states),
                               "bytes_per_elem": c.bytes_per_elem(cfg.dtype.itemsize)}
                      for c in cfg.cases},
            "bandwidth": bandwidth,
            "notes": self.notes + _dedupe(skipped),
            "rows": self.rows,
        }

    def group(self, case: Case, data: Data) -> List[Dict[str, Any]]:
        """Build, gate and time every implementation on one (case, workload)."""
        cfg = self.config
        w = data.workload
        rows: List[Dict[str, Any]] = []
        gate = Gate(case, data)
        slots: List[Tuple[Slot, Dict[str, Any], Runner]] = []
        runners: List[Runner] = []
        for impl in self.impls:
            isa = getattr(impl, "isa", None) if impl.kind != "reference" else None
            if impl.kind == "gdfast" and isa is None:
                isa = self.best_isa
            base = _row(case, w, cfg.dtype, cfg.threads[0], impl, isa)
            reason = impl.supports(case, cfg.dtype)
            if reason is None and self._too_slow(impl, case, w):
                reason = (f"slow reference, not timed above {size_name(cfg.slow_limit or 0)} "
                          "elements in this mode (--slow-limit, --full)")
            if reason is not None:
                rows.append({**base, "status": "skipped", "message": reason})
                continue
            try:
                runner = impl.build(case, data)
            except Unavailable as exc:
                rows.append({**base, "status": "skipped", "message": str(exc)})
                continue
            except Exception as exc:
                rows.append(self._error(base, describe_failure(exc, "setup")))
                continue
            runners.append(runner)
            for t in cfg.threads:
                row = {**base, "threads": t}
                verdict: Optional[Verdict] = None
                try:
                    set_threads(t)
                    runner.prepare()
                    if impl.kind == "bound":
                        runner.step()  # first touch
                    else:
                        verdict = gate.check(runner)
                except Exception as exc:
                    rows.append(self._error(row, describe_failure(exc, "the gate's steps")))
                    continue
                if verdict is not None:
                    row["gate_worst"] = verdict.worst if math.isfinite(verdict.worst) else None
                    if not verdict.ok:
                        rows.append(self._error(row, verdict.message))
                        continue
                slots.append((Slot(runner, t, impl.name), row, runner))
        for slot, _, _ in slots:
            try:
                calibrate(slot, cfg.batch_time)
            except Exception as exc:  # a step that passed the gate raised later
                slot.error = exc
        run_batches([s for s, _, _ in slots if s.error is None], cfg.batches, cfg.batch_time)
        self.last_steps = {(s.label, s.threads): s.median for s, _, _ in slots
                           if s.error is None and s.times}
        for slot, row, runner in slots:
            if slot.error is not None:
                rows.append(self._error(row, describe_failure(slot.error, "timing")))
                continue
            scale = runner.time_scale
            median = slot.median * scale
            row.update({
                "time_s": {"median": median, "min": slot.low * scale, "max": slot.high * scale},
                "batches": len(slot.times),
                "steps_per_batch": slot.k,
                "gelem_s": w.numel / median / 1e9,
                "gb_s": row["bytes_per_elem"] * w.numel / median / 1e9,
            })
            if row["kind"] != "bound" and w.numel:
                row["state_bytes_per_param"] = runner.state_bytes() / w.numel
            rows.append(row)
        for runner in runners:
            runner.close()
        del slots, runners
        order = {impl.name: i for i, impl in enumerate(self.impls)}
        rows.sort(key=lambda r: (r["threads"], r["kind"] == "bound",
                                 order.get(r["implementation"], 99)))
        return rows

    def _error(self, row: Dict[str, Any], message: str) -> Dict[str, Any]:
        self.errors += 1
        self.log(f"error: {row['implementation']} {row['optimizer']} {row['workload']} "
                 f"threads={row['threads']}: {message}")
        return {**row, "status": "error", "message": message}


def derive(rows: List[Dict[str, Any]]) -> None:
    """Fill % of bound and speedup over the best reference, per (optimizer, workload, dtype,
    threads) group, from rows timed in the same interleaved batches."""
    groups: Dict[Tuple[Any, ...], List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(group_key(r), []).append(r)
    for members in groups.values():
        ok = [r for r in members if r["status"] == "ok"]
        bound = next((r for r in ok if r["implementation"] == "bound"), None)
        refs = [r for r in ok if r["kind"] == "reference"]
        best = min(refs, key=lambda r: r["time_s"]["median"]) if refs else None
        for r in ok:
            t = r["time_s"]["median"]
            if bound is not None and r["implementation"] != "arith":
                r["pct_bound"] = 100.0 * bound["time_s"]["median"] / t
            if best is not None and r["kind"] != "bound":
                r["speedup_vs_best_ref"] = best["time_s"]["median"] / t
                r["best_ref"] = best["implementation"]


def _stream_key(states: int) -> str:
    """The machine-bandwidth slot of an in-place pattern, in the time-left plan."""
    return f"(stream, {states} states)"


def _dedupe(items: List[str]) -> List[str]:
    return list(dict.fromkeys(items))


def _safe_version(impl: Implementation) -> Optional[str]:
    try:
        return impl.version()
    except Exception:
        return None


def pattern_labels() -> Dict[int, str]:
    """For the machine-bandwidth table: per state count, the cases whose step uses that many
    states, else the rules that use that many with every option on."""
    out: Dict[int, str] = {}
    for k in range(MAX_STATES + 1):
        names = [c.name for c in CASES.values() if c.n_states == k]
        if not names:
            rules = dict.fromkeys(c.rule.name for c in CASES.values() if len(c.rule.states) == k)
            names = [f"{r} (every option)" for r in rules]
        out[k] = ", ".join(names)
    return out
