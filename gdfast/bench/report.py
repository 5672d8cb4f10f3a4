"""The report: the text table, the JSON file, and the JSON schema check."""

from __future__ import annotations

import json
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


def group_key(r: Dict[str, Any]) -> Tuple[Any, ...]:
    """The rows timed together in one interleaved group."""
    return (r["optimizer"], r["workload"], r["dtype"], r["threads"])


def row_key(r: Dict[str, Any]) -> Tuple[Any, ...]:
    """A row's identity across reports (--compare)."""
    return (*group_key(r), r["implementation"])


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


def fmt_time(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6), ("ns", 1e-9)):
        if seconds >= scale or unit == "ns":
            v = seconds / scale
            return f"{v:.3g} {unit}" if v < 100 else f"{v:.0f} {unit}"
    return f"{seconds} s"  # pragma: no cover


def fmt_spread(t: Dict[str, float]) -> str:
    """The median with min-max in the median's unit: "85.1 us (84.0-88.2)"."""
    med = fmt_time(t["median"])
    value, unit = med.split()
    scale = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    digits = 0 if float(value) >= 100 else max(0, 2 - len(value.split(".")[0]) + 1)
    lo, hi = t["min"] / scale, t["max"] / scale
    return f"{med} ({lo:.{digits}f}-{hi:.{digits}f})"


def _fmt(x: Optional[float], spec: str, suffix: str = "") -> str:
    return "" if x is None else f"{x:{spec}}{suffix}"


COLUMNS = ("optimizer", "workload", "thr", "implementation", "time/step (min-max)", "Gelem/s",
           "GB/s", "% bound", "vs best ref", "state B/param")


def table_lines(rows: Sequence[Dict[str, Any]]) -> List[str]:
    """One line per timed or failed row, grouped by optimizer, workload and threads."""
    shown = [r for r in rows if r["status"] != "skipped"]
    opt_order = _order(r["optimizer"] for r in shown)
    wl_order = _order(r["workload"] for r in shown)
    # stable: within a group, the suite's order (gdfast, references, bound)
    shown.sort(key=lambda r: (opt_order[r["optimizer"]], wl_order[r["workload"]], r["dtype"],
                              r["threads"]))
    body: List[List[str]] = []
    previous = None
    for r in shown:
        key = (r["optimizer"], r["workload"], r["dtype"], r["threads"])
        if previous is not None and key != previous:
            body.append([])
        first = key != previous
        previous = key
        name = r["implementation"]
        if r["kind"] == "bound":
            name = "bound (stream)" if name == "bound" else f"bound ({name})"
        cells = [r["optimizer"] if first else "", _workload_label(r) if first else "",
                 str(r["threads"]) if first else "", name]
        if r["status"] == "error":
            cells.append("ERROR: " + r["message"])
            body.append(cells)
            continue
        speed = r.get("speedup_vs_best_ref")
        vs = "" if speed is None else (
            "(best ref)" if r["implementation"] == r.get("best_ref") else f"{speed:.2f}x")
        state = r.get("state_bytes_per_param")
        cells += [fmt_spread(r["time_s"]), _fmt(r["gelem_s"], ".3g"), _fmt(r["gb_s"], ".3g"),
                  _fmt(r.get("pct_bound"), ".0f", "%"), vs,
                  "" if state is None else f"{state:.3g}"]
        body.append(cells)
    widths = [len(c) for c in COLUMNS]
    for cells in body:
        if len(cells) == len(COLUMNS):
            widths = [max(w, len(c)) for w, c in zip(widths, cells)]
    right = {5, 6, 7, 8, 9}

    def line(cells: Sequence[str]) -> str:
        if len(cells) < len(COLUMNS):  # an error row: the message runs on
            head = "  ".join(c.ljust(w) for c, w in zip(cells[:4], widths))
            return (head + "  " + cells[4]).rstrip() if len(cells) > 4 else head.rstrip()
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    out = [line(COLUMNS), "  ".join("-" * w for w in widths)]
    out += [line(cells) if cells else "" for cells in body]
    return out


def _workload_label(r: Dict[str, Any]) -> str:
    if r["tensors"] == 1:
        label = r["workload"]
    else:
        label = f"{r['workload']} ({r['tensors']} t, {r['numel'] / 1e6:.3g}M)"
    return label if r["dtype"] == "float32" else f"{label} {r['dtype']}"


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
    out = [
        f"gdfast-bench: {m['cpu']}, {m['cpus_usable']} usable CPUs"
        + (f", L3 {m['l3_cache']}" if m.get("l3_cache") else "")
        + (f", {mem / 2**30:.0f} GiB" if mem else ""),
        f"  ISA active {isa['active']} (supported {', '.join(isa['supported'])}); {versions}",
        f"  {report['config']['mode']} run, {report['config']['batches']} interleaved batches "
        f"of >= {report['config']['batch_time_s'] * 1e3:.0f} ms per implementation, "
        f"{report['duration_s']:.0f} s",
    ]
    bw = report.get("bandwidth") or []
    if bw:
        n = bw[0]["numel"]
        out.append("")
        out.append(f"Machine bandwidth ({n / 1e6:.3g}M elements per array, "
                   f"{report['config']['dtype']}, median GB/s (min-max)):")
        threads = sorted({b["threads"] for b in bw})
        patterns = _order(b["pattern"] for b in bw)
        for pattern in patterns:
            items = {b["threads"]: b for b in bw if b["pattern"] == pattern}
            first = next(iter(items.values()))
            what = f"{pattern} [{first['bytes_per_elem']} B/elem"
            what += f"; {first['optimizers']}]" if first.get("optimizers") else "]"
            cells = [f"{t} thr {items[t]['gb_s']:.1f} ({items[t]['gb_s_min']:.0f}-"
                     f"{items[t]['gb_s_max']:.0f})" for t in threads if t in items]
            out.append(f"  {what:<52} " + "   ".join(cells))
    return out


def legend_lines() -> List[str]:
    return [
        "time/step: median over batches (min-max); Gelem/s: parameters updated per second;",
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


def print_report(report: Dict[str, Any], out: TextIO) -> None:
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
            print(f"  - {note}", file=out)
