"""The report: the text table, the JSON file, and the JSON schema check."""

from __future__ import annotations

import json
import math
import textwrap
from typing import Any, Dict, List, Optional, Sequence, TextIO, Tuple

SCHEMA = "gdfast-bench/1"

ROW_FIELDS: Dict[str, type] = {
    "optimizer": str, "workload": str, "numel": int, "tensors": int, "dtype": str,
    "threads": int, "implementation": str, "kind": str, "status": str, "message": str,
    "bytes_per_elem": int,
}
OK_FIELDS = ("gelem_s", "gb_s")
TOP_FIELDS: Dict[str, type] = {
    "schema": str, "created": str, "command": list, "config": dict, "machine": dict,
    "implementations": dict, "bandwidth": list, "notes": list, "rows": list,
}
KINDS = ("gdfast", "reference", "bound")
STATUSES = ("ok", "error", "skipped")


class SchemaError(ValueError):
    pass


PLAIN = {"float32": "fp32", "float64": "fp64"}  # a row without a precision mode: its dtype's


def row_precision(r: Dict[str, Any]) -> str:
    """The row's precision mode (reports before modes existed: the plain mode of its
    dtype)."""
    return str(r.get("precision") or PLAIN.get(r["dtype"], r["dtype"]))


def row_layout(r: Dict[str, Any]) -> str:
    """What the row's mode stores in which type: rows of one layout share a bound."""
    return r.get("layout") or row_precision(r)


def group_key(r: Dict[str, Any]) -> Tuple[Any, ...]:
    """The rows timed together in one interleaved group (every precision mode of a run is;
    a report before modes existed had one dtype)."""
    return (r["optimizer"], r["workload"], r["threads"]) + (
        () if "precision" in r else (r["dtype"],))


def row_key(r: Dict[str, Any]) -> Tuple[Any, ...]:
    """A row's identity across reports (--compare)."""
    return (r["optimizer"], r["workload"], row_precision(r), r["threads"], r["implementation"])


def validate(report: Any) -> None:
    """Raise SchemaError unless ``report`` is a gdfast-bench report of this schema."""
    if not isinstance(report, dict):
        raise SchemaError("report: expected a JSON object")
    if report.get("schema") != SCHEMA:
        raise SchemaError(f"schema: expected {SCHEMA!r}, got {report.get('schema')!r}")
    for key, typ in TOP_FIELDS.items():
        if not isinstance(report.get(key), typ):
            raise SchemaError(f"{key}: expected {typ.__name__}")
    for i, row in enumerate(report["rows"]):
        where = f"rows[{i}]"
        if not isinstance(row, dict):
            raise SchemaError(f"{where}: expected an object")
        for key, typ in ROW_FIELDS.items():
            if not isinstance(row.get(key), typ) or isinstance(row.get(key), bool):
                raise SchemaError(f"{where}.{key}: expected {typ.__name__}, got "
                                  f"{row.get(key)!r}")
        if row["kind"] not in KINDS:
            raise SchemaError(f"{where}.kind: expected one of {KINDS}")
        if row["status"] not in STATUSES:
            raise SchemaError(f"{where}.status: expected one of {STATUSES}")
        t = row.get("time_s")
        if row["status"] == "ok":
            if not (isinstance(t, dict) and all(_positive(t.get(k))
                                                for k in ("median", "min", "max"))):
                raise SchemaError(f"{where}.time_s: expected median, min, max > 0")
            if not t["min"] <= t["median"] <= t["max"]:
                raise SchemaError(f"{where}.time_s: expected min <= median <= max")
            for key in OK_FIELDS:
                if not _positive(row.get(key)):
                    raise SchemaError(f"{where}.{key}: expected a number > 0")
        elif t is not None:
            raise SchemaError(f"{where}.time_s: a row that is not ok has no time")


def _positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0


def write_json(report: Dict[str, Any], path: str) -> None:
    with open(path, "w") as f:
        json.dump(report, f, indent=1, default=_json_default)
        f.write("\n")


def read_json(path: str) -> Dict[str, Any]:
    with open(path) as f:
        report = json.load(f)
    validate(report)
    return report  # type: ignore[no-any-return]


def _json_default(x: Any) -> Any:
    if hasattr(x, "item"):  # NumPy scalars
        return x.item()
    raise TypeError(f"not JSON serializable: {type(x).__name__}")


# ---------------------------------------------------------------------------------------------
# Text


WIDTH = 100  # every line of the text report fits in this many characters


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            v = seconds / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{seconds} s"  # pragma: no cover


def fmt_spread(t: Dict[str, float]) -> str:
    """The median with min-max in the median's unit: "85.1 us (84.0-88.2)"; a bound of four
    digits or more is shown whole ("1.99 us (1.98-2013)")."""
    med = fmt_time(t["median"])
    value, unit = med.split()
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    digits = 0 if float(value) >= 100 else max(0, 2 - len(value.split(".")[0]) + 1)

    def bound(x: float) -> str:
        return f"{x:.0f}" if x >= 1000 else f"{x:.{digits}f}"
    return f"{med} ({bound(t['min'] / scale)}-{bound(t['max'] / scale)})"


def _fmt(x: Optional[float], spec: str, suffix: str = "") -> str:
    return "" if x is None else f"{x:{spec}}{suffix}"


def wrap(text: str, indent: str = "", then: Optional[str] = None,
         width: int = WIDTH) -> List[str]:
    """``text`` on lines of at most ``width`` characters (a word longer than a line is
    broken), the first starting with ``indent``, the others with ``then``."""
    return textwrap.wrap(text, width, initial_indent=indent,
                         subsequent_indent=indent if then is None else then,
                         break_on_hyphens=False) or [indent.rstrip()]


# The table: a title line per group (optimizer, workload, threads), then one line per
# implementation under one header.
COLUMNS = ("implementation", "time/step (min-max)", "Gelem/s", "GB/s", "% bound",
           "vs best ref", "state B/param")
INDENT = "  "


def table_lines(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """One title line per group of rows timed together (optimizer, workload, threads), one
    line per timed or failed row under it; every line at most WIDTH characters (an error's
    message wraps). A group of several precision modes has a line per layout (the modes
    storing the same arrays in the same types, with the bytes they move) above its rows; a
    stochastically rounding mode's rows are marked SR."""
    shown = [r for r in rows if r["status"] != "skipped"]
    opt_order = _order(r["optimizer"] for r in shown)
    wl_order = _order(r["workload"] for r in shown)
    # stable: within a group, the suite's order (layout by layout: gdfast, references, bounds)
    shown.sort(key=lambda r: (opt_order[r["optimizer"]], wl_order[r["workload"]],
                              group_key(r)[3:], r["threads"]))
    modes: Dict[Tuple[Any, ...], List[str]] = {}
    for r in shown:
        mine = modes.setdefault(group_key(r), [])
        if row_precision(r) not in mine:
            mine.append(row_precision(r))
    body: List[Any] = []  # a title (str), a layout's line (tuple) or a row's cells (list)
    previous = layout = None
    for r in shown:
        key = group_key(r)
        multi = len(modes[key]) > 1 or row_precision(r) not in PLAIN.values()
        if key != previous:
            body.append(_group_title(r, with_bytes=not multi))
            layout = None
        previous = key
        if multi and row_layout(r) != layout:
            layout = row_layout(r)
            names = [m for m in modes[key] if any(
                row_precision(x) == m and row_layout(x) == layout and group_key(x) == key
                for x in shown)]
            body.append((f"{', '.join(names)}: {layout}, {r['bytes_per_elem']} B/element "
                         "moved per step",))
        name = r["implementation"]
        sr = multi and r.get("rounding") == "stochastic"
        if r["kind"] == "bound":
            name = "bound (stream)" if name == "bound" else (
                f"bound ({name}, SR)" if sr else f"bound ({name})")
        elif sr:
            name += " SR"
        if r["status"] == "error":
            body.append([name, "ERROR: " + r["message"]])
            continue
        speed = r.get("speedup_vs_best_ref")
        vs = "" if speed is None else (
            "(best ref)" if r["implementation"] == r.get("best_ref") else f"{speed:.2f}x")
        state = r.get("state_bytes_per_param")
        body.append([name, fmt_spread(r["time_s"]), _fmt(r["gelem_s"], ".3g"),
                     _fmt(r["gb_s"], ".3g"), _fmt(r.get("pct_bound"), ".0f", "%"), vs,
                     "" if state is None else f"{state:.3g}"])
    widths = [len(c) for c in COLUMNS]
    for cells in body:
        if isinstance(cells, list) and len(cells) == len(COLUMNS):
            widths = [max(w, len(c)) for w, c in zip(widths, cells)]
        elif isinstance(cells, list):  # an error row: only its name is in a column
            widths[0] = max(widths[0], len(cells[0]))

    def line(cells: Sequence[str]) -> str:
        return (INDENT + "  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                                   for i, (c, w) in enumerate(zip(cells, widths)))).rstrip()

    out = [line(COLUMNS), INDENT + "  ".join("-" * w for w in widths)]
    for cells in body:
        if isinstance(cells, str):  # a group's title, after a blank line (not the first)
            out += ([""] if len(out) > 2 else []) + wrap(cells, "", "  ")
        elif isinstance(cells, tuple):  # a layout's line, under the group's title
            out += wrap(cells[0], "- ", "    ")
        elif len(cells) < len(COLUMNS):  # an error row: the message wraps under itself
            first = INDENT + cells[0].ljust(widths[0]) + "  "
            out += wrap(cells[1], first, " " * len(first))
        else:
            out.append(line(cells))
    return out


def _group_title(r: Dict[str, Any], with_bytes: bool = True) -> str:
    threads = f"{r['threads']} thread{'s' if r['threads'] != 1 else ''}"
    if not with_bytes:  # the modes' layouts follow, each with its bytes
        return f"{r['optimizer']}, {_workload_label(r, False)}, {threads}:"
    return (f"{r['optimizer']}, {_workload_label(r)}, {threads}: "
            f"{r['bytes_per_elem']} B/element moved per step")


def _workload_label(r: Dict[str, Any], with_dtype: bool = True) -> str:
    if r["tensors"] == 1:
        label = r["workload"]
    else:
        label = f"{r['workload']} ({r['tensors']} tensors, {r['numel'] / 1e6:.3g}M elements)"
    return label if r["dtype"] == "float32" or not with_dtype else f"{label} {r['dtype']}"


def _order(values: Any) -> Dict[str, int]:
    out: Dict[str, int] = {}
    for v in values:
        out.setdefault(v, len(out))
    return out


def header_lines(report: Dict[str, Any]) -> List[str]:
    m = report["machine"]
    versions = ", ".join(f"{k} {v}" for k, v in m["versions"].items() if v)
    isa = m["isa"]
    mem = m.get("memory_total_bytes")
    cfg = report["config"]
    out = wrap(f"gdfast-bench: {m['cpu']}, {m['cpus_usable']} usable CPUs"
               + (f", L3 {m['l3_cache']}" if m.get("l3_cache") else "")
               + (f", {mem / 2**30:.0f} GiB" if mem else ""), "", "  ")
    out += wrap(f"ISA active {isa['active']} (supported {', '.join(isa['supported'])}); "
                f"{versions}", "  ")
    modes = cfg.get("precisions") or []
    kind = (f"precision modes {', '.join(modes)} side by side" if len(modes) > 1 or (
        modes and modes[0] not in PLAIN.values()) else cfg["dtype"])
    out += wrap(f"{cfg['mode']} run, {kind}, {cfg['batches']} interleaved batches of "
                f">= {cfg['batch_time_s'] * 1e3:.0f} ms per implementation, "
                f"{report['duration_s']:.0f} s", "  ")
    bw = report.get("bandwidth") or []
    if bw:
        out += [""] + bandwidth_lines(bw, cfg["dtype"])
    return out


def bandwidth_lines(bw: Sequence[Dict[str, Any]], dtype: str) -> List[str]:
    """The machine-bandwidth table: a line per access pattern, a column per thread count (in
    several tables if they do not fit in WIDTH), then the optimizers whose step has that
    pattern, wrapped."""
    n = bw[0]["numel"]
    threads = sorted({b["threads"] for b in bw})
    patterns = list(_order(b["pattern"] for b in bw))
    label_w = max(len("pattern"), *(len(p) for p in patterns))
    cells: Dict[str, List[str]] = {}
    for pattern in patterns:
        items = {b["threads"]: b for b in bw if b["pattern"] == pattern}
        cells[pattern] = [f"{items[t]['gb_s']:.1f} ({items[t]['gb_s_min']:.0f}-"
                          f"{items[t]['gb_s_max']:.0f})" if t in items else "" for t in threads]
    heads = [f"{t} thread{'s' if t != 1 else ''}" for t in threads]
    cell_w = [max(len(h), *(len(cells[p][i]) for p in patterns)) for i, h in enumerate(heads)]
    out = wrap(f"Machine bandwidth ({n / 1e6:.3g}M elements per array, {dtype}; GB/s, median "
               "(min-max)):")
    lead = 2 + label_w + 8  # "  pattern  B/elem"
    chunks: List[List[int]] = [[]]
    used = lead
    for i, w in enumerate(cell_w):
        if chunks[-1] and used + 2 + w > WIDTH:
            chunks.append([])
            used = lead
        chunks[-1].append(i)
        used += 2 + w
    for chunk in chunks:
        header = ("  " + "pattern".ljust(label_w) + "  B/elem  "
                  + "  ".join(heads[i].rjust(cell_w[i]) for i in chunk))
        out.append(header + "  steps of" if WIDTH - len(header) - 2 >= 20 else header)
        for pattern in patterns:
            first = next(b for b in bw if b["pattern"] == pattern)
            head = ("  " + pattern.ljust(label_w) + f"  {first['bytes_per_elem']:>6}  "
                    + "  ".join(cells[pattern][i].rjust(cell_w[i]) for i in chunk) + "  ")
            who = first.get("optimizers") or ""
            if not who:
                out.append(head.rstrip())
            elif WIDTH - len(head) >= 20:
                out += wrap(who, head, " " * len(head))
            else:  # no room left: the optimizers on lines of their own
                out.append(head.rstrip())
                out += wrap(who, "    ")
    return out


def legend_lines() -> List[str]:
    paragraphs = [
        "time/step: median over batches (min-max); Gelem/s: parameters updated per second; "
        "GB/s: the bytes the step must move (read p, g, states; write p, states back) per "
        "second;",
        "% bound: the bound's time / this time -- bound = gdfast's in-place stream with this "
        "optimizer's access pattern on the same workload, timed in the same batches (it is a "
        "measurement too: over 100% means noise);",
        "bound (arith): gdfast's step repeated in place on a cache-resident block of the "
        "workload, scaled to its size -- the arithmetic alone; no step is faster than the "
        "slower of the two bounds;",
        "vs best ref: the fastest reference's median time / this median time; state B/param: "
        "bytes of optimizer state kept per parameter.",
    ]
    return [line for text in paragraphs for line in wrap(text, "", "  ")]


# ---------------------------------------------------------------------------------------------
# The summary: gdfast against each reference and the bound, over the groups of the table


def _stats(values: Sequence[float]) -> Optional[Dict[str, float]]:
    values = [v for v in values if v is not None and v > 0 and math.isfinite(v)]
    if not values:
        return None
    return {"geomean": math.exp(sum(math.log(v) for v in values) / len(values)),
            "min": min(values), "max": max(values), "groups": len(values)}


def summarize(rows: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """Per gdfast implementation (one, or one per --isa level) and precision mode (named
    "gdfast bf16-sr" when a run has several), over the groups where it ran: its speedup over
    each reference of its layout that ran in the same group (their median time / its median
    time), over the best reference of its layout in each group, over itself in the run's
    first mode, and its % of the stream bound; each as geometric mean, min, max and the
    number of groups."""
    groups: Dict[Tuple[Any, ...], List[Dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "ok":
            groups.setdefault(group_key(r), []).append(r)
    multi = len({row_precision(r) for r in rows}) > 1

    def label(r: Dict[str, Any]) -> str:
        return f"{r['implementation']} {row_precision(r)}" if multi else r["implementation"]

    mine_of = {label(r): (r["implementation"], row_precision(r)) for r in rows
               if r["kind"] == "gdfast"}
    out: Dict[str, Any] = {}
    for name, (impl, mode) in mine_of.items():
        vs: Dict[str, List[float]] = {}
        best: List[float] = []
        pct: List[float] = []
        base: List[float] = []
        base_mode = None
        ran = 0
        for members in groups.values():
            mine = next((r for r in members if r["implementation"] == impl
                         and row_precision(r) == mode), None)
            if mine is None:
                continue
            ran += 1
            t = mine["time_s"]["median"]
            for r in members:
                if r["kind"] == "reference" and row_layout(r) == row_layout(mine):
                    # named with its mode where that is not this one's (same layout, another
                    # rounding)
                    ref = r["implementation"] if row_precision(r) == mode else label(r)
                    vs.setdefault(ref, []).append(r["time_s"]["median"] / t)
            if mine.get("speedup_vs_best_ref") is not None:
                best.append(mine["speedup_vs_best_ref"])
            if mine.get("pct_bound") is not None:
                pct.append(mine["pct_bound"])
            if mine.get("speedup_vs_base") is not None:
                base.append(mine["speedup_vs_base"])
                base_mode = mine.get("base_precision")
        out[name] = {"vs": {ref: _stats(v) for ref, v in vs.items()},
                     "vs_best_ref": _stats(best), "pct_bound": _stats(pct),
                     "vs_base": _stats(base),
                     "base": f"{impl} {base_mode}" if base_mode else None, "groups": ran}
    return out


def _ratio(x: float) -> str:
    return f"{x:.3g}x" if x < 100 else f"{x:.0f}x"


def _span(st: Dict[str, float]) -> str:
    """min-max of ratios: "0.99-20.5x"."""
    return f"{_ratio(st['min'])[:-1]}-{_ratio(st['max'])}"


def summary_lines(summary: Dict[str, Any]) -> List[str]:
    """The speedup over each reference, then one line per gdfast implementation (one unless
    --isa names several): the report's last line."""
    out: List[str] = []
    if not summary:
        return out
    out += wrap("Summary (geometric mean over the groups, min-max; speedup = the other's "
                "time / gdfast's):")
    pairs = [(name, ref, st) for name, s in summary.items() for ref, st in s["vs"].items()]
    if pairs:
        # aligned up to 60 characters (the ratio and its span take up to ~36 more); a longer
        # pair wraps on its own
        width = max(n if n <= 60 else 0 for n in (len(f"{a} vs {b}") for a, b, _ in pairs))
        for name, ref, st in pairs:
            ratio = (f"{_ratio(st['geomean']):>6} ({_span(st)}, {st['groups']} "
                     f"group{'s' if st['groups'] != 1 else ''})")
            text = f"  {name + ' vs ' + ref:<{width}}  {ratio}"
            out += [text] if len(text) <= WIDTH else wrap(
                f"{name} vs {ref}: {ratio.strip()}", "  ", "    ")
    for name, s in summary.items():
        parts = []
        if s["vs_best_ref"]:
            st = s["vs_best_ref"]
            parts.append(f"{_ratio(st['geomean'])} the best reference ({_span(st)})")
        if s.get("vs_base"):
            st = s["vs_base"]
            parts.append(f"{_ratio(st['geomean'])} {s['base']} ({_span(st)})")
        if s["pct_bound"]:
            st = s["pct_bound"]
            parts.append(f"{st['geomean']:.0f}% of the stream bound "
                         f"({st['min']:.0f}-{st['max']:.0f}%)")
        groups = f"{s['groups']} group{'s' if s['groups'] != 1 else ''}"
        if not s["groups"]:
            text = f"{name}: ran in no group (see the errors above)"
        elif not parts:
            text = f"{name}: {groups}; no reference and no bound ran"
        else:
            text = f"{name}: {', '.join(parts)}, {groups}"
            if not s["vs_best_ref"]:
                text += "; no reference ran"
        out += wrap(text, "", "  ")
    return out


def print_report(report: Dict[str, Any], out: TextIO) -> None:
    """Header, table, legend, notes; last, the summary."""
    for line in header_lines(report):
        print(line, file=out)
    print(file=out)
    for line in table_lines(report["rows"]):
        print(line, file=out)
    print(file=out)
    for line in legend_lines():
        print(line, file=out)
    if report["notes"]:
        print("\nNotes:", file=out)
        for note in report["notes"]:
            for line in wrap(note, "  - ", "    "):
                print(line, file=out)
    summary = report.get("summary")
    if summary is None:
        summary = summarize(report["rows"])
    lines = summary_lines(summary)
    if lines:
        print(file=out)
        for line in lines:
            print(line, file=out)
