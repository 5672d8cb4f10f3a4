"""--plot: throughput against size (log x), one line per implementation, the measured bound
as a roofline. matplotlib is optional (``pip install matplotlib``)."""

from __future__ import annotations

from typing import Any, Dict, List


def available() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def plot(report: Dict[str, Any], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    # one precision mode, the run's first (a run of several: the others are in the table)
    modes = report["config"].get("precisions") or [None]
    rows = [r for r in report["rows"]
            if r["status"] == "ok" and r.get("kind_of_workload", "single") == "single"
            and r["tensors"] == 1 and r.get("precision") == modes[0]]
    optimizers = list(dict.fromkeys(r["optimizer"] for r in report["rows"]))
    threads = sorted({r["threads"] for r in report["rows"]})
    if not optimizers or not threads:
        optimizers, threads = optimizers or ["(none)"], threads or [1]
    fig, axes = plt.subplots(len(threads), len(optimizers), squeeze=False, sharex=True,
                             figsize=(3.6 * len(optimizers) + 1, 3.2 * len(threads) + 0.8))
    impls = list(dict.fromkeys(r["implementation"] for r in rows if r["kind"] != "bound"))
    colors = {name: f"C{i % 10}" for i, name in enumerate(impls)}
    dram = _dram_bounds(report)
    for i, t in enumerate(threads):
        for j, opt in enumerate(optimizers):
            ax = axes[i][j]
            mine = [r for r in rows if r["optimizer"] == opt and r["threads"] == t]
            for name in impls + ["bound", "arith"]:
                pts = sorted((r["numel"], r["gelem_s"]) for r in mine
                             if r["implementation"] == name)
                if not pts:
                    continue
                xs, ys = zip(*pts)
                if name == "bound":
                    ax.plot(xs, ys, "k--", lw=1.5, label="bound: in-place stream (measured)")
                elif name == "arith":
                    ax.plot(xs, ys, "--", color="0.55", lw=1.2,
                            label="bound: arithmetic, in cache (measured)")
                else:
                    ax.plot(xs, ys, "o-", ms=3, color=colors[name], label=name,
                            lw=2.2 if name.startswith("gdfast") else 1.2)
            bpe = next((r["bytes_per_elem"] for r in report["rows"] if r["optimizer"] == opt),
                       None)
            gbs = dram.get((bpe, t))
            if gbs and bpe:
                ax.axhline(gbs / bpe, color="k", ls=":", lw=1,
                           label=f"DRAM bound {gbs:.0f} GB/s / {bpe} B")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(True, which="both", alpha=0.3)
            ax.set_title(f"{opt}, {t} thread{'s' if t > 1 else ''}", fontsize=10)
            if i == len(threads) - 1:
                ax.set_xlabel("elements (one tensor)")
            if j == 0:
                ax.set_ylabel("Gelem/s")
    handles: Dict[str, Any] = {}
    for ax in fig.axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            key = label if not label.startswith("DRAM") else "DRAM bound"
            handles.setdefault(key, h)
    fig.legend(list(handles.values()), list(handles.keys()), loc="lower center",
               ncol=min(5, len(handles)), fontsize=8, frameon=False)
    m = report["machine"]
    kind = report["config"]["dtype"] if len(modes) < 2 else f"{modes[0]} (of {len(modes)} modes)"
    fig.suptitle(f"gdfast-bench {kind}: {m['cpu']}, "
                 f"{m['cpus_usable']} CPUs, ISA {m['isa']['active']}", fontsize=10)
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _dram_bounds(report: Dict[str, Any]) -> Dict[Any, float]:
    out: Dict[Any, float] = {}
    bw: List[Dict[str, Any]] = report.get("bandwidth") or []
    for b in bw:
        if b.get("states") is not None:
            out[(b["bytes_per_elem"], b["threads"])] = b["gb_s"]
    return out
