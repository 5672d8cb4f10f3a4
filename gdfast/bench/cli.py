"""gdfast-bench: command line. Exit status: 0 fine; 1 --compare found a regression; 2 bad
arguments (an implementation named in --impls that cannot run, or runs in no group, included);
3 an implementation failed its correctness gate (or raised)."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Dict, List, Optional, Sequence

from . import compare as compare_mod
from . import machine, plot, progress, report
from .cases import CASES, DEFAULT, parse_optimizers
from .impls import ArithBound, Implementation, registry
from .machine import cpu_count
from .optional import Unavailable
from .precision import PRECISIONS, as_precision, parse_precisions, storage_dtype
from .suite import Config, Suite
from .workloads import LISTS, parse_lists, parse_sizes

EXIT_OK, EXIT_REGRESSION, EXIT_USAGE, EXIT_WRONG = 0, 1, 2, 3

MODES: Dict[str, Dict[str, Any]] = {
    # ~10 s on 2 cores: cache-resident single tensors, the many-small list. DeepSpeed is left
    # out (its import and op load alone take ~6 s); name it in --impls to include it.
    "quick": dict(sizes=[10**4, 10**6], lists=["1000x1024"], batches=3, batch_time=0.01,
                  machine_n=1 << 24, slow_limit=None, exclude=["deepspeed"],
                  optimizers="default"),
    # ~1.5 min on 2 cores: the sweep 1e3..1e8 and both model lists; the references that a
    # faster one of the same optimizer beats (NumPy, torch for-loop, torch foreach where a
    # fused path exists) only up to 1e7.
    "default": dict(sizes=[10**k for k in range(3, 9)], lists=list(LISTS), batches=5,
                    batch_time=0.02, machine_n=1 << 24, slow_limit=10**7, exclude=[],
                    optimizers="default"),
    # everything: every optimizer, half-decade sizes, 1 thread and all threads, every
    # reference everywhere.
    "full": dict(sizes=sorted({int(m * 10**k) for k in range(3, 9) for m in (1, 3)}
                              - {3 * 10**8}),
                 lists=list(LISTS), batches=7, batch_time=0.05, machine_n=1 << 26,
                 slow_limit=None, exclude=[], optimizers="all"),
}


def _csv_ints(text: str) -> List[int]:
    try:
        values = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        values = []
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers >= 1, got {text!r}")
    return list(dict.fromkeys(values))


def _number(text: str, low: float, strict: bool, integer: bool = False) -> Any:
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        value = None
    if value is None or not (value > low if strict else value >= low):
        kind = "an integer" if integer else "a number"
        raise argparse.ArgumentTypeError(f"expected {kind} {'>' if strict else '>='} {low:g}, "
                                         f"got {text!r}")
    return value


def _positive_float(text: str) -> float:
    return float(_number(text, 0, strict=True))


def _nonnegative_float(text: str) -> float:
    return float(_number(text, 0, strict=False))


def _positive_int(text: str) -> int:
    return int(_number(text, 1, strict=False, integer=True))


def _by_mode(key: str) -> str:
    """A preset's values for the help: "5; --quick 3, --full 7"."""
    return (f"{MODES['default'][key]:g}; --quick {MODES['quick'][key]:g}, "
            f"--full {MODES['full'][key]:g}")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gdfast-bench",
        description="Time gdfast's optimizer steps against the references installed here "
                    "(NumPy, torch.optim for-loop/foreach/fused, lion-pytorch, DeepSpeed "
                    "CPUAdam/CPUAdagrad), interleaved, each checked against a float64 "
                    "reference first, and against the machine's in-place bandwidth measured "
                    "in the same run.",
        epilog="Exit status: 0 fine, 1 --compare found a regression, 2 bad arguments (an "
               "implementation named in --impls that cannot run here included), 3 an "
               "implementation gave a wrong result or raised.")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="a ~10 s look (small sizes)")
    mode.add_argument("--full", action="store_true",
                      help="everything: every optimizer, half-decade sizes, 1 and all threads, "
                           "every reference at every size, longer batches")
    p.add_argument("--optimizers", metavar="LIST",
                   help=f"comma-separated, from {', '.join(CASES)}; or default "
                        f"({','.join(DEFAULT)}: what a run steps unless --full); or all "
                        "(every one: a run about 2.5x as long; --full's default)")
    p.add_argument("--sizes", metavar="LIST",
                   help="single-tensor sizes, e.g. 1e3,1e5,1e7; 'none' for no sweep "
                        "(default by mode; scaled down when memory is short)")
    p.add_argument("--lists", metavar="LIST",
                   help=f"tensor-list workloads, from {', '.join(LISTS)}; 'none' for none")
    p.add_argument("--dtype", choices=["float32", "float64"],
                   help="element type of the parameters, gradients and states (default: "
                        "float32; DeepSpeed runs float32 only); the same as --precisions "
                        "fp32 or fp64")
    p.add_argument("--precisions", metavar="LIST",
                   help="precision modes, timed side by side in each group (the first is the "
                        "base of the others' speedup), comma-separated, from "
                        f"{', '.join(PRECISIONS)}; or all (every mode but fp64). A mode: "
                        "params-grads-states types (bf16: all bfloat16; bf16-fp32-states: "
                        "bf16 params and grads, fp32 states), -master: an fp32 master copy, "
                        "-sr: stochastic rounding (default: fp32)")
    p.add_argument("--threads", type=_csv_ints, metavar="LIST",
                   help="thread counts, interleaved batch by batch, e.g. 1,2 "
                        "(default: gdfast's default, %s here)" % "the usable CPUs")
    p.add_argument("--isa", metavar="LIST",
                   help="gdfast's instruction-set level(s), e.g. avx2 or avx2,avx512 or all "
                        "(default: the best this CPU supports); the bound always uses the best")
    p.add_argument("--impls", metavar="LIST",
                   help="implementations to run, comma-separated (see --list); one named "
                        "here that cannot run is an error (default: all that are installed, "
                        "the others noted in the report)")
    p.add_argument("--list", action="store_true",
                   help="list the implementations and whether they can run here, then exit")
    p.add_argument("--batches", type=_positive_int, metavar="N",
                   help="timed batches per implementation, interleaved; the report gives their "
                        "median and min-max (default: %s)" % _by_mode("batches"))
    p.add_argument("--batch-time", type=_positive_float, metavar="SECONDS",
                   help="minimum duration of one batch, k steps calibrated to it "
                        "(default: %s)" % _by_mode("batch_time"))
    p.add_argument("--slow-limit", type=float, metavar="N",
                   help="time the slower references (NumPy, torch for-loop, and torch foreach "
                        "where torch has a fused path) only up to N elements (default mode: "
                        "1e7; 0 = no limit)")
    p.add_argument("--max-memory", type=_positive_float, metavar="GB",
                   help="memory the run may use (default: half of MemAvailable)")
    p.add_argument("--no-machine-bandwidth", action="store_true",
                   help="skip the machine-bandwidth section (in-place stream and triad on "
                        "arrays far larger than the cache)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random initial parameters and gradients (default: 0)")
    p.add_argument("--json", metavar="FILE", help="write the full report as JSON")
    p.add_argument("--plot", metavar="FILE.png",
                   help="plot Gelem/s against size with the bound (needs matplotlib)")
    p.add_argument("--compare", nargs="+", metavar="JSON",
                   help="OLD.json: compare this run with an earlier one; OLD.json NEW.json: "
                        "compare two saved runs (no run). Exit status 1 on a regression")
    p.add_argument("--tolerance", type=_nonnegative_float, default=0.10,
                   help="allowed slowdown for --compare (default 0.10 = 10%%)")
    p.add_argument("--compare-by", choices=["time", "bound"], default="time",
                   help="time: median time per step; bound: share of the in-run bound, which "
                        "cancels machine drift between runs (default: time)")
    p.add_argument("--compare-rows", choices=["gdfast", "all"], default="gdfast",
                   help="rows whose regression fails the run (default: gdfast's)")
    p.add_argument("--progress", choices=["auto", "bar", "plain", "none"], default="auto",
                   help="progress display on stderr (default: a bar when it is a terminal)")
    return p


def main(argv: Optional[Sequence[str]] = None, *,
         implementations: Optional[Sequence[Implementation]] = None) -> int:
    """The gdfast-bench command. ``implementations`` replaces the registry (tests inject
    their own)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    argv_list = list(sys.argv[1:] if argv is None else argv)
    impls = list(implementations) if implementations is not None else registry()
    out = sys.stdout

    if args.list:
        for impl in impls:
            try:
                impl.check_available()
                availability = "available"
            except Unavailable as exc:
                availability = f"unavailable: {exc}" + (
                    f"\n    to install: {impl.install}" if impl.install else "")
            print(f"{impl.name:<14} {impl.kind:<9} {availability}\n    {impl.description}",
                  file=out)
        print(f"{'bound':<14} {'bound':<9} available\n    in-place stream with the optimizer's "
              "access pattern (always run)", file=out)
        print(f"{'arith':<14} {'bound':<9} available\n    {ArithBound.description} (always run)",
              file=out)
        return EXIT_OK

    if args.compare and len(args.compare) > 2:
        parser.error("--compare: expected OLD.json, or OLD.json NEW.json")
    old_report = None
    if args.compare:
        try:
            old_report = report.read_json(args.compare[0])
        except (OSError, ValueError) as exc:
            parser.error(f"--compare {args.compare[0]}: {exc}")
        if len(args.compare) == 2:
            try:
                new_report = report.read_json(args.compare[1])
            except (OSError, ValueError) as exc:
                parser.error(f"--compare {args.compare[1]}: {exc}")
            return _compare(old_report, new_report, args, out)

    config = _config(parser, args, argv_list, impls)
    if args.plot and not plot.available():
        parser.error("--plot needs matplotlib (pip install matplotlib)")

    suite = Suite(config, impls, progress.make(args.progress),
                  log=lambda s: print(s, file=sys.stderr))
    problems = suite.problems()
    if problems:
        parser.error("--impls: " + "; ".join(problems))
    result = suite.run()
    result["summary"] = report.summarize(result["rows"])
    report.print_report(result, out)
    if args.json:
        report.write_json(result, args.json)
        print(f"\nwrote {args.json}", file=out)
    if args.plot:
        plot.plot(result, args.plot)
        print(f"wrote {args.plot}", file=out)
    status = EXIT_OK
    if old_report is not None:
        print(file=out)
        status = _compare(old_report, result, args, out)
    failed = [r for r in result["rows"] if r["status"] == "error"]
    if failed:
        print(f"\n{len(failed)} implementation run(s) failed the correctness gate or raised "
              "(ERROR rows above)", file=out)
        return EXIT_WRONG
    idle = _idle(result["rows"], config.impls)
    if idle:  # named, available, and yet skipped everywhere (an op that does not build)
        print(f"{parser.prog}: error: --impls: {'; '.join(idle)}", file=sys.stderr)
        return EXIT_USAGE
    return status


def _idle(rows: Sequence[Dict[str, Any]], named: Optional[Sequence[str]]) -> List[str]:
    """The implementations named in --impls that ran in no group, with the reasons."""
    out = []
    for name in named or ():
        mine = [r for r in rows if r["implementation"] == name]
        if mine and all(r["status"] == "skipped" for r in mine):
            why = "; ".join(dict.fromkeys(r["message"] for r in mine))
            out.append(f"{name} ran in no group: {why}")
    return out


def _compare(old: Dict[str, Any], new: Dict[str, Any], args: argparse.Namespace,
             out: Any) -> int:
    changes = compare_mod.compare(old, new, args.tolerance, args.compare_by, args.compare_rows)
    print(f"Compared with {args.compare[0]} (created {old.get('created')}):", file=out)
    for line in compare_mod.lines(changes, args.tolerance, args.compare_by):
        print(line, file=out)
    return EXIT_REGRESSION if compare_mod.regressed(changes) else EXIT_OK


def _config(parser: argparse.ArgumentParser, args: argparse.Namespace, argv: List[str],
            impls: Sequence[Implementation]) -> Config:
    import gdfast

    name = "quick" if args.quick else "full" if args.full else "default"
    preset = MODES[name]
    if args.dtype and args.precisions:
        parser.error("--dtype and --precisions: name the plain mode (fp32 or fp64) in "
                     "--precisions instead")
    try:
        precisions = (parse_precisions(args.precisions) if args.precisions
                      else [as_precision(args.dtype or "float32")])
        for p in precisions:  # bfloat16 arrays need ml_dtypes: say so before anything runs
            for kind in (p.param, p.grad, p.state):
                storage_dtype(kind)
        cases = parse_optimizers(args.optimizers or preset["optimizers"])
        sizes = parse_sizes(args.sizes) if args.sizes is not None else list(preset["sizes"])
        lists = parse_lists(args.lists) if args.lists is not None else list(preset["lists"])
    except (ValueError, ImportError) as exc:
        parser.error(str(exc))
    if not sizes and not lists:
        parser.error("nothing to run: --sizes none and --lists none")

    default_threads = gdfast.get_num_threads()
    if args.threads:
        threads = args.threads
    elif name == "full":
        threads = sorted({1, default_threads})
    else:
        threads = [default_threads]
    if max(threads) > cpu_count():
        print(f"note: {max(threads)} threads on {cpu_count()} usable CPUs", file=sys.stderr)

    isas: List[str] = []
    if args.isa:
        supported = gdfast.isa_info()["supported"]
        isas = list(supported) if args.isa == "all" else [
            s.strip() for s in args.isa.split(",") if s.strip()]
        bad = [s for s in isas if s not in supported]
        if bad or not isas:
            parser.error(f"--isa: {', '.join(bad) or '(none)'} not supported here; "
                         f"choose from {', '.join(supported)} or all")

    names = [impl.name for impl in impls]
    notes: List[str] = []
    if args.impls:
        wanted = list(dict.fromkeys(s.strip() for s in args.impls.split(",") if s.strip()))
        bad = [s for s in wanted if s not in names]
        if bad or not wanted:
            parser.error(f"--impls: unknown {', '.join(bad) or '(none)'}; "
                         f"choose from {', '.join(names)}")
        chosen: Optional[List[str]] = wanted
    else:
        excluded = [n for n in preset["exclude"] if n in names]
        chosen = [n for n in names if n not in excluded] if excluded else None
        notes += [f"{n}: left out of --{name} (its import and op load take seconds); name it "
                  "in --impls to include it" for n in excluded]

    if args.slow_limit is not None:
        slow_limit: Optional[int] = int(args.slow_limit) if args.slow_limit > 0 else None
    else:
        slow_limit = preset["slow_limit"]

    avail = machine.available_memory()
    if args.max_memory:
        budget = int(args.max_memory * 1e9)
    else:
        budget = int(0.5 * avail) if avail else 4 << 30

    config = Config(
        mode=name, cases=cases, sizes=sizes, lists=lists, precisions=precisions,
        threads=threads, isas=isas, impls=chosen,
        batches=args.batches or preset["batches"],
        batch_time=args.batch_time or preset["batch_time"],
        slow_limit=slow_limit, memory_budget=budget,
        machine_n=None if args.no_machine_bandwidth else preset["machine_n"],
        seed=args.seed, argv=argv, notes=notes)
    return config
