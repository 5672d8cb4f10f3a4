"""Precision modes (issue 12), AdamW at 1e8 elements and on GPT-2 small's tensor list: gdfast
in fp32, all-bf16 (round to nearest and stochastic rounding), bf16 params and grads with fp32
states (DeepSpeed's mode), bf16 with an fp32 master copy and fp32 states, and fp32 params with
bf16 states; against torch.optim.AdamW(fused=True) in fp32 and in bf16 (its states in bf16)
and DeepSpeed's CPUAdam in fp32 and with bf16 params and fp32 states (fp32_optimizer_states,
when DeepSpeed imports and its op builds); each mode with its own stream bound (gdfast's
in-place stream with that mode's arrays and types). Every result is checked once against the
float64 reference (with the mode's storage rounding simulated) before it is timed.

    pytest bench/bench_precision.py --benchmark-only     # one benchmark per (mode, impl),
                                                         # a group per layout
    python bench/bench_precision.py [--workload 1e8|gpt2-small|SIZE] [--threads N] [--batches K]

pytest-benchmark times one benchmark after the other; the script mode is the one to quote
ratios from: it runs gdfast-bench's suite, every mode and competitor of a workload interleaved
batch by batch in one group, and prints its table, then the ratios README quotes. Memory:
about 16 GB at 1e8 with every competitor (DeepSpeed adds 2.2 GB), 20 GB for GPT-2 small.
"""

from __future__ import annotations

import argparse
import gc
import sys
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import pytest

import gdfast
from gdfast.bench import progress, report
from gdfast.bench.cases import CASES
from gdfast.bench.gate import Gate
from gdfast.bench.impls import Bound, Implementation, Runner, registry
from gdfast.bench.optional import Unavailable
from gdfast.bench.precision import PRECISIONS, Precision
from gdfast.bench.suite import Config, Suite
from gdfast.bench.workloads import Data, Workload, gpt2_small, make_data, parse_sizes, single

OPTIMIZER = "adamw"
MODES = ["fp32", "bf16", "bf16-sr", "bf16-fp32-states", "bf16-master", "fp32-bf16-states"]
COMPETITORS = ["torch-fused", "deepspeed"]  # each where it has the mode (skipped elsewhere)
WORKLOADS: Dict[str, Callable[[], Workload]] = {"1e8": lambda: single(10**8),
                                                "gpt2-small": gpt2_small}

IMPLS: Dict[str, Implementation] = {i.name: i for i in registry()}
IMPLS["bound"] = Bound(gdfast.isa_info()["active"])


# ---------------------------------------------------------------------------------------------
# pytest-benchmark: one benchmark per (workload, mode, implementation)

_data: Dict[Tuple[str, str, str], Data] = {}


def data_for(workload: Workload, precision: Precision) -> Data:
    """The workload's inputs in the mode's param and grad types; one set cached at a time
    (the modes that share the types share it)."""
    key = (workload.name, precision.param, precision.grad)
    if key not in _data:
        _data.clear()
        gc.collect()
        _data[key] = make_data(workload, precision)
    return _data[key].for_precision(precision)


@pytest.fixture
def runner_of(threads: int) -> Iterator[Callable[..., Runner]]:
    """``runner_of(impl, mode, workload)``: built, gated once (a bound: first touch), closed
    after the benchmark; skips where the implementation does not run the mode."""
    made: List[Runner] = []

    def make(impl_name: str, mode: str, workload: Workload) -> Runner:
        impl, case, precision = IMPLS[impl_name], CASES[OPTIMIZER], PRECISIONS[mode]
        try:
            impl.check_available()
        except Unavailable as exc:
            pytest.skip(str(exc))
        reason = impl.supports(case, precision)
        if reason is not None:
            pytest.skip(reason)
        data = data_for(workload, precision)
        try:
            runner = impl.build(case, data)
        except Unavailable as exc:  # a DeepSpeed op that does not build here
            pytest.skip(str(exc))
        made.append(runner)
        runner.prepare()
        if impl.kind == "bound":
            runner.step()
        else:
            verdict = Gate(case, data).check(runner)
            assert verdict.ok, f"{impl_name} {mode} {workload.name}: {verdict.message}"
        return runner

    yield make
    for runner in made:
        runner.close()
    gdfast.set_isa(IMPLS["bound"].isa)


@pytest.mark.parametrize("impl", ["gdfast", *COMPETITORS, "bound"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("workload", list(WORKLOADS))
def test_precision(benchmark: Any, runner_of: Callable[..., Runner], threads: int,
                   workload: str, mode: str, impl: str) -> None:
    w = WORKLOADS[workload]()
    precision = PRECISIONS[mode]
    if impl == "bound" and precision.stochastic:
        pytest.skip("the stream bound of a layout is its round-to-nearest mode's")
    runner = runner_of(impl, mode, w)
    n_states = CASES[OPTIMIZER].n_states
    # a group per layout (the modes storing the same arrays in the same types): its one bound
    # and its references, so that bench/report.py's % of bound and best reference hold
    benchmark.group = (f"{OPTIMIZER} {w.name}, {precision.describe_layout()}, "
                       f"threads={threads}")
    benchmark.extra_info.update(
        implementation=impl, kind=IMPLS[impl].kind, optimizer=OPTIMIZER, workload=w.name,
        numel=w.numel, tensors=w.tensors, threads=threads, precision=mode,
        dtype=precision.param, bytes_per_elem=precision.bytes_per_elem(n_states),
        state_bytes_per_param=runner.state_bytes() / w.numel, time_scale=runner.time_scale)
    benchmark.pedantic(runner.step, rounds=7, iterations=1, warmup_rounds=1)


# ---------------------------------------------------------------------------------------------
# Script mode: every mode and competitor interleaved in one gdfast-bench group


def interleaved(workload: str, threads: int, batches: int, batch_time: float,
                memory_gb: Optional[float]) -> Dict[str, Any]:
    """gdfast-bench's suite on one workload: AdamW, MODES, gdfast and COMPETITORS (those
    installed), interleaved; the report as gdfast-bench --json writes it."""
    impls = ["gdfast"] + [n for n in COMPETITORS if _available(IMPLS[n])]
    w = WORKLOADS[workload]() if workload in WORKLOADS else single(parse_sizes(workload)[0])
    config = Config(mode="precision", cases=[CASES[OPTIMIZER]],
                    sizes=[w.numel] if w.kind == "single" else [],
                    lists=[w.name] if w.kind == "list" else [],
                    precisions=[PRECISIONS[m] for m in MODES], threads=[threads], impls=impls,
                    batches=batches, batch_time=batch_time,
                    memory_budget=int((memory_gb or 20) * 1e9), argv=sys.argv[1:])
    suite = Suite(config, registry(), progress.make("auto"), log=print)
    result = suite.run()
    result["summary"] = report.summarize(result["rows"])
    return result


def _available(impl: Implementation) -> bool:
    try:
        impl.check_available()
        return True
    except Unavailable as exc:
        print(f"{impl.name}: not run ({exc})")
        return False


def ratio_lines(rows: List[Dict[str, Any]]) -> List[str]:
    """The ratios README's "Precision modes" table quotes, from one interleaved group."""
    ok = {(r["implementation"], r["precision"]): r for r in rows if r["status"] == "ok"}

    def t(impl: str, mode: str) -> Optional[float]:
        r = ok.get((impl, mode))
        return None if r is None else r["time_s"]["median"]

    out = []
    for (a, am), (b, bm) in ((("gdfast", "bf16-sr"), ("torch-fused", "bf16")),
                             (("gdfast", "bf16-sr"), ("gdfast", "fp32")),
                             (("gdfast", "bf16"), ("torch-fused", "bf16")),
                             (("gdfast", "bf16-fp32-states"), ("deepspeed", "bf16-fp32-states")),
                             (("gdfast", "fp32-bf16-states"), ("gdfast", "fp32")),
                             (("gdfast", "fp32"), ("torch-fused", "fp32"))):
        ta, tb = t(a, am), t(b, bm)
        if ta and tb:
            out.append(f"  {a} {am} vs {b} {bm}: {tb / ta:.2f}x ({ta * 1e3:.1f} vs "
                       f"{tb * 1e3:.1f} ms)")
    for (impl, mode), r in ok.items():
        if impl == "gdfast" and r.get("pct_bound"):
            out.append(f"  {impl} {mode}: {r['pct_bound']:.0f}% of its bound "
                       f"({r['bytes_per_elem']} B/elem, state {r['state_bytes_per_param']:.3g} "
                       "B/param)")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", default="1e8",
                        help="1e8 (default), gpt2-small, or another single-tensor size (1e6)")
    parser.add_argument("--threads", type=int, default=gdfast.get_num_threads())
    parser.add_argument("--batches", type=int, default=9)
    parser.add_argument("--batch-time", type=float, default=0.05)
    parser.add_argument("--max-memory", type=float, metavar="GB",
                        help="memory the run may use (default 20 GB)")
    args = parser.parse_args()
    result = interleaved(args.workload, args.threads, args.batches, args.batch_time,
                         args.max_memory)
    report.print_report(result, sys.stdout)
    print("\nRatios (same interleaved group; median times):")
    for line in ratio_lines(result["rows"]):
        print(line)
    return 3 if any(r["status"] == "error" for r in result["rows"]) else 0


if __name__ == "__main__":
    sys.exit(main())
