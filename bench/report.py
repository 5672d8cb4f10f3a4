"""Turn pytest-benchmark's JSON into gdfast-bench's units: Gelem/s, GB/s (the bytes the step
must move), % of the bound timed in the same group, and speedup over the group's fastest
reference.

    pytest bench/ --benchmark-only --benchmark-json bench.json
    python bench/report.py bench.json
"""

from __future__ import annotations

import json
import sys
from typing import Any, Dict, List

from gdfast.bench.report import fmt_time


def rows(doc: Dict[str, Any]) -> List[Dict[str, Any]]:
    out = []
    for b in doc["benchmarks"]:
        info = b.get("extra_info") or {}
        if "numel" not in info:
            continue
        scale = info.get("time_scale", 1.0)  # the arithmetic bound steps a block repeatedly
        median = b["stats"]["median"] * scale
        out.append({**info, "group": b["group"], "median": median,
                    "min": b["stats"]["min"] * scale, "max": b["stats"]["max"] * scale,
                    "gelem_s": info["numel"] / median / 1e9,
                    "gb_s": info["numel"] * info["bytes_per_elem"] / median / 1e9})
    return out


def table(doc: Dict[str, Any]) -> List[str]:
    lines = []
    by_group: Dict[str, List[Dict[str, Any]]] = {}
    for r in rows(doc):
        by_group.setdefault(r["group"], []).append(r)
    head = (f"{'implementation':<16}{'thr':>4}{'median':>10}{'Gelem/s':>10}{'GB/s':>9}"
            f"{'% bound':>9}{'vs best ref':>13}")
    for group, members in by_group.items():
        bounds = {r["threads"]: r["median"] for r in members
                  if r["implementation"] == "bound"}
        best: Dict[int, float] = {}
        for r in members:
            if r["kind"] == "reference":
                best[r["threads"]] = min(best.get(r["threads"], r["median"]), r["median"])
        lines += ["", group, head, "-" * len(head)]
        for r in sorted(members, key=lambda r: (r["threads"], r["median"])):
            pct = bounds.get(r["threads"])
            share = pct and r["implementation"] != "arith"  # arith is a bound of its own
            pct_s = f"{100 * pct / r['median']:.0f}%" if share else ""
            ref = best.get(r["threads"])
            vs = f"{ref / r['median']:.2f}x" if ref and r["kind"] != "bound" else ""
            lines.append(f"{r['implementation']:<16}{r['threads']:>4}"
                         f"{fmt_time(r['median']):>10}{r['gelem_s']:>10.3g}{r['gb_s']:>9.3g}"
                         f"{pct_s:>9}{vs:>13}")
    return lines


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0]) as f:
        doc = json.load(f)
    print("\n".join(table(doc)).lstrip("\n"))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
