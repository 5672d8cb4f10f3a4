"""--compare: per-row change between an old report and a new one, and whether any regressed.

Rows are matched on (optimizer, workload, precision mode, threads, implementation) (a row of a
report before modes existed is in its dtype's plain mode: float32 is fp32). By default the
regression check covers gdfast's rows (the references' rows are listed, but their change is
the machine's, not ours). ``by="time"`` compares median time per step; ``by="bound"`` compares
the share of the bound (the in-place stream timed in the same batches), which cancels most of
a shared machine's drift between the two runs (shared/BENCHMARKING.md: never compare raw
figures of two runs on these machines without accepting that drift).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Tuple

from .report import fmt_time, row_key


@dataclass
class Change:
    key: Tuple[Any, ...]
    kind: str
    old: Optional[float]  # seconds (by=time) or % of bound (by=bound)
    new: Optional[float]
    slowdown: Optional[float]  # new cost / old cost - 1 (> 0: slower)
    status: str  # "ok", "regressed", "improved", "failed", "new", "missing", "incomparable"
    checked: bool  # counts toward the exit status


def _value(row: Dict[str, Any], by: str) -> Optional[float]:
    if row["status"] != "ok":
        return None
    if by == "time":
        return float(row["time_s"]["median"])
    pct = row.get("pct_bound")
    return None if pct is None else float(pct)


def compare(old: Dict[str, Any], new: Dict[str, Any], tolerance: float = 0.10,
            by: str = "time", rows: str = "gdfast") -> List[Change]:
    """Every row of either report, with its change. A checked row regressed when it is
    slower by more than ``tolerance`` (0.10 = 10%), or when it was ok and now fails."""
    if by not in ("time", "bound"):
        raise ValueError(f"by: expected 'time' or 'bound', got {by!r}")
    if rows not in ("gdfast", "all"):
        raise ValueError(f"rows: expected 'gdfast' or 'all', got {rows!r}")
    old_rows = {row_key(r): r for r in old["rows"] if r["status"] != "skipped"}
    new_rows = {row_key(r): r for r in new["rows"] if r["status"] != "skipped"}
    out: List[Change] = []
    for key in list(old_rows) + [k for k in new_rows if k not in old_rows]:
        o, n = old_rows.get(key), new_rows.get(key)
        kind = (n or o or {}).get("kind", "reference")
        checked = kind != "bound" and (rows == "all" or kind == "gdfast")
        if n is None:
            out.append(Change(key, kind, _value(o, by) if o else None, None, None, "missing",
                              False))
            continue
        if o is None:
            out.append(Change(key, kind, None, _value(n, by), None, "new", False))
            continue
        ov, nv = _value(o, by), _value(n, by)
        if nv is None:
            status = "failed" if ov is not None or n["status"] == "error" else "incomparable"
            out.append(Change(key, kind, ov, None, None, status, checked))
            continue
        if ov is None:
            out.append(Change(key, kind, None, nv, None, "incomparable", False))
            continue
        slowdown = nv / ov - 1.0 if by == "time" else ov / nv - 1.0
        status = ("regressed" if slowdown > tolerance else
                  "improved" if slowdown < -tolerance else "ok")
        out.append(Change(key, kind, ov, nv, slowdown, status, checked))
    return out


def regressed(changes: List[Change]) -> List[Change]:
    return [c for c in changes if c.checked and c.status in ("regressed", "failed")]


def lines(changes: List[Change], tolerance: float, by: str) -> List[str]:
    def fmt(v: Optional[float]) -> str:
        if v is None:
            return "-"
        return fmt_time(v) if by == "time" else f"{v:.0f}%"

    head = ("optimizer", "workload", "precision", "thr", "implementation",
            "old" if by == "time" else "old %bound", "new" if by == "time" else "new %bound",
            "slower by", "")
    body = []
    for c in changes:
        opt, wl, mode, thr, impl = c.key
        flag = c.status.upper() if c.status in ("regressed", "failed") and c.checked else (
            c.status if c.status != "ok" else "")
        if c.status in ("regressed", "failed") and not c.checked:
            flag += " (not checked)"
        body.append((opt, wl, mode, str(thr), impl, fmt(c.old), fmt(c.new),
                     "" if c.slowdown is None else f"{100 * c.slowdown:+.1f}%", flag))
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    out = ["  ".join(c.ljust(w) for c, w in zip(head, widths)).rstrip()]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in body]
    bad = regressed(changes)
    what = "time per step" if by == "time" else "share of the in-run bound"
    out.append("")
    out.append(f"{len(bad)} checked row(s) regressed by more than {100 * tolerance:g}% "
               f"({what})" if bad else
               f"no checked row regressed by more than {100 * tolerance:g}% ({what})")
    return out
