"""The run: every (workload, optimizer) group — build each implementation, gate it, time all of
them interleaved together with the bound — and the rows of the report."""

from __future__ import annotations

import datetime
import itertools
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
from .precision import FP32, Precision, itemsize
from .progress import Progress
from .report import SCHEMA, group_key, row_layout, row_precision
from .timing import Slot, calibrate, run_batches
from .workloads import Data, Workload, fit, make_data, make_list, single, size_name


@dataclass
class Config:
    mode: str = "default"
    cases: List[Case] = field(default_factory=list)
    sizes: List[int] = field(default_factory=list)
    lists: List[str] = field(default_factory=list)
    # the precision modes, timed side by side in each group; the first is the base of the
    # others' speedup (--dtype: one plain mode)
    precisions: List[Precision] = field(default_factory=lambda: [FP32])
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

    @property
    def dtype(self) -> np.dtype:
        """The type the machine bandwidth is measured in: the first mode's compute type."""
        return np.dtype(self.precisions[0].compute)

    @property
    def multi(self) -> bool:
        """Several precision modes: rows and time-left slots are named with theirs."""
        return len(self.precisions) > 1

    def as_json(self) -> Dict[str, Any]:
        return {
            "mode": self.mode,
            "optimizers": [c.name for c in self.cases],
            "sizes": self.sizes,
            "lists": self.lists,
            "dtype": self.dtype.name,
            "precisions": [p.name for p in self.precisions],
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


def _row(case: Case, w: Workload, precision: Precision, threads: int, impl: Implementation,
         isa: Optional[str]) -> Dict[str, Any]:
    return {
        "optimizer": case.name,
        "workload": w.name,
        "kind_of_workload": w.kind,
        "numel": w.numel,
        "tensors": w.tensors,
        "dtype": precision.param,
        "precision": precision.name,
        "layout": precision.describe_layout(),
        "rounding": precision.rounding,
        "threads": threads,
        "implementation": impl.name,
        "kind": impl.kind,
        "isa": isa,
        "status": "ok",
        "message": "",
        "time_s": None,
        "batches": 0,
        "steps_per_batch": 0,
        "bytes_per_elem": case.moved_bytes(precision),
        "gelem_s": None,
        "gb_s": None,
        "pct_bound": None,
        "speedup_vs_best_ref": None,
        "best_ref": None,
        "speedup_vs_base": None,  # the same implementation's time in the first mode / this
        "base_precision": None,
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

    def members(self, case: Case) -> List[Tuple[Implementation, Precision, Optional[str]]]:
        """Who a group of ``case`` holds: each (implementation, precision mode), mode by mode,
        with the reason it does not run (None: it does). The stream bound runs once per
        layout (modes storing the same arrays in the same types move the same bytes), with
        the first mode of that layout."""
        out: List[Tuple[Implementation, Precision, Optional[str]]] = []
        layouts = set()
        for precision in self.config.precisions:
            first = precision.layout not in layouts
            layouts.add(precision.layout)
            for impl in self.impls:
                if isinstance(impl, Bound) and not first:
                    continue
                out.append((impl, precision, impl.supports(case, precision)))
        return out

    def bytes_needed(self, w: Workload) -> int:
        """Peak bytes of one group of ``w``: shared p0 and grads (one pair per param and grad
        type), then per implementation and mode its parameters, states and master copies,
        plus the temporaries its step allocates."""
        inputs = {(p.param, p.grad) for p in self.config.precisions}
        shared = sum(itemsize(param) + itemsize(grad) for param, grad in inputs) * w.numel
        worst = 0
        for case in self.config.cases:
            total = shared
            for impl, precision, why in self.members(case):
                if why is not None or not impl.copies_workload or self._too_slow(impl, case, w):
                    continue
                per_largest, per_total = impl.temporaries
                isz = itemsize(precision.param)
                own = isz + case.n_states * itemsize(precision.state) + 4 * precision.master
                total += own * w.numel + (per_total * w.numel + per_largest * w.largest) * isz
            worst = max(worst, total)
        return worst

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
            for case, precision in itertools.product(self.config.cases, self.config.precisions):
                why = impl.supports(case, precision)
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
        inputs = {(p.param, p.grad) for p in cfg.precisions}
        for w in self.workloads():
            # p0 and grads, once per workload
            made = sum(itemsize(param) + itemsize(grad) for param, grad in inputs) * w.numel
            for case in cfg.cases:
                slots_: List[eta.Slot] = []
                setup = made
                made = 0
                for impl, precision, why in self.members(case):
                    if why is not None or self._too_slow(impl, case, w):
                        continue
                    if impl.copies_workload:
                        setup += w.numel * (itemsize(precision.param) + case.n_states
                                            * itemsize(precision.state) + 4 * precision.master)
                    first = 1 if impl.kind == "bound" else GATE_STEPS
                    slots_ += [eta.Slot(self.label(impl, precision), t, first)
                               for t in cfg.threads]
                nbytes = w.numel * case.moved_bytes(cfg.precisions[0])
                out.append(eta.Group(w.name, nbytes, tuple(slots_), setup))
        return out

    def label(self, impl: Implementation, precision: Precision) -> str:
        """A slot's name: the implementation's, and the mode's when the run has several."""
        return f"{impl.name} {precision.name}" if self.config.multi else impl.name

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
                inputs_by_mode = self.make_data(w)
                for case in cfg.cases:
                    label = f"{case.name} {w.name}"
                    self.progress.now(label)
                    self.rows.extend(self.group(case, inputs_by_mode))
                    t1 = time.perf_counter()
                    estimate.done(unit, t1 - t0, self.last_steps)
                    t0 = t1
                    unit += 1
                    self.progress.advance(label, estimate.remaining())
                for data in inputs_by_mode.values():
                    data.pool.clear()
                del inputs_by_mode
        finally:
            self.progress.close()
            restore_threads(previous_threads)
            import gdfast

            gdfast.set_isa(self.best_isa)
        finished = datetime.datetime.now(datetime.timezone.utc)
        derive(self.rows, cfg.precisions[0].name)
        why: Dict[Tuple[str, str], List[str]] = {}
        for r in self.rows:
            if r["status"] == "skipped":
                where = why.setdefault((r["implementation"], r["message"]), [])
                what = f"{r['optimizer']} {r['precision']}" if cfg.multi else r["optimizer"]
                if what not in where:
                    where.append(what)
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
                               "bytes_per_elem": c.moved_bytes(cfg.precisions[0]),
                               "bytes_per_elem_by_precision": {
                                   p.name: c.moved_bytes(p) for p in cfg.precisions}}
                      for c in cfg.cases},
            "precisions": {p.name: {"description": p.describe(), "layout": p.describe_layout(),
                                    "param": p.param, "grad": p.grad, "state": p.state,
                                    "master": p.master, "rounding": p.rounding}
                           for p in cfg.precisions},
            "bandwidth": bandwidth,
            "notes": self.notes + _dedupe(skipped),
            "rows": self.rows,
        }

    def make_data(self, w: Workload) -> Dict[str, Data]:
        """The inputs of ``w`` per precision mode: one set of arrays per param and grad type,
        shared by the modes that store them alike."""
        made: Dict[Tuple[str, str], Data] = {}
        out: Dict[str, Data] = {}
        for p in self.config.precisions:
            key = (p.param, p.grad)
            if key not in made:
                made[key] = make_data(w, p, self.config.seed)
            out[p.name] = made[key].for_precision(p)
        return out

    def group(self, case: Case, inputs_by_mode: Dict[str, Data]) -> List[Dict[str, Any]]:
        """Build, gate and time every implementation in every precision mode on one (case,
        workload), all interleaved. ``inputs_by_mode``: the inputs per mode (make_data)."""
        cfg = self.config
        w = next(iter(inputs_by_mode.values())).workload
        rows: List[Dict[str, Any]] = []
        gates: Dict[str, Gate] = {}
        slots: List[Tuple[Slot, Dict[str, Any], Runner]] = []
        runners: List[Runner] = []
        for impl, precision, reason in self.members(case):
            data = inputs_by_mode[precision.name]
            isa = getattr(impl, "isa", None) if impl.kind != "reference" else None
            if impl.kind == "gdfast" and isa is None:
                isa = self.best_isa
            base = _row(case, w, precision, cfg.threads[0], impl, isa)
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
                        if precision.name not in gates:
                            gates[precision.name] = Gate(case, data)
                        verdict = gates[precision.name].check(runner)
                except Exception as exc:
                    rows.append(self._error(row, describe_failure(exc, "the gate's steps")))
                    continue
                if verdict is not None:
                    row["gate_worst"] = verdict.worst if math.isfinite(verdict.worst) else None
                    if not verdict.ok:
                        rows.append(self._error(row, verdict.message))
                        continue
                slots.append((Slot(runner, t, self.label(impl, precision)), row, runner))
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
        modes = {p.name: i for i, p in enumerate(cfg.precisions)}
        layouts = {p.describe_layout(): modes[p.name] for p in reversed(cfg.precisions)}
        # per thread count, per layout (in the order of the modes' first), the optimizers then
        # the bounds, each in the order of the modes
        rows.sort(key=lambda r: (r["threads"], layouts[r["layout"]], r["kind"] == "bound",
                                 order.get(r["implementation"], 99), modes[r["precision"]]))
        return rows

    def _error(self, row: Dict[str, Any], message: str) -> Dict[str, Any]:
        self.errors += 1
        self.log(f"error: {row['implementation']} {row['optimizer']} {row['workload']} "
                 f"threads={row['threads']}: {message}")
        return {**row, "status": "error", "message": message}


def derive(rows: List[Dict[str, Any]], base: Optional[str] = None) -> None:
    """Fill, per group of rows timed in the same interleaved batches (optimizer, workload,
    threads) and within it per layout (the precision modes that store the same arrays in the
    same types): % of the layout's bound, speedup over the layout's best reference; and
    across layouts, each row's speedup over the same implementation in the ``base`` mode
    (default: the group's first row's)."""
    groups: Dict[Tuple[Any, ...], List[Dict[str, Any]]] = {}
    for r in rows:
        groups.setdefault(group_key(r), []).append(r)
    for members in groups.values():
        ok = [r for r in members if r["status"] == "ok"]
        by_layout: Dict[str, List[Dict[str, Any]]] = {}
        for r in ok:
            by_layout.setdefault(row_layout(r), []).append(r)
        for same in by_layout.values():
            bound = next((r for r in same if r["implementation"] == "bound"), None)
            refs = [r for r in same if r["kind"] == "reference"]
            best = min(refs, key=lambda r: r["time_s"]["median"]) if refs else None
            for r in same:
                t = r["time_s"]["median"]
                if bound is not None and r["implementation"] != "arith":
                    r["pct_bound"] = 100.0 * bound["time_s"]["median"] / t
                if best is not None and r["kind"] != "bound":
                    r["speedup_vs_best_ref"] = best["time_s"]["median"] / t
                    r["best_ref"] = best["implementation"]
                    if row_precision(best) != row_precision(r):
                        r["best_ref"] += f" {row_precision(best)}"
        mode = base or (row_precision(members[0]) if members else None)
        if len({row_precision(r) for r in members}) < 2:
            continue
        at_base = {r["implementation"]: r for r in ok if row_precision(r) == mode}
        for r in ok:
            other = at_base.get(r["implementation"])
            if other is not None and row_precision(r) != mode:
                r["speedup_vs_base"] = other["time_s"]["median"] / r["time_s"]["median"]
                r["base_precision"] = mode


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
