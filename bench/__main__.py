"""`python -m bench`: run every benchmark, print one table, write bench/results.json.

    python -m bench                      # everything (~25 min on an idle 2-core machine)
    python -m bench --quick              # fewer repetitions, notes and variants (~10 min idle)
    python -m bench --only engine,decode # a subset
    python -m bench --model DIR          # a real checkpoint instead of the random base model

Every figure is a median of n runs (the n column); every comparison is a ratio of runs
made in this same invocation. The machine (CPU, cores, torch, threads, load before and
after) is recorded with the figures, because on a shared 2-core box they move with load.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.common import BENCH_DIR, Options, Row, Section, ensure_base_model, machine_info, machine_line

#: Benchmark name -> module; run in this order (cheap and independent first, the compute-mode ones last).
BENCHMARKS = ("decode", "engine", "throughput", "cold_start", "memory", "e2e", "history", "punctuation", "ray", "front", "whisper", "roofline", "variants", "precision")


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions and notes")
    parser.add_argument("--model", type=Path, help="model directory (default: random wav2vec2-base, built once)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="torch threads for single-process figures (default: all cores)")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results.json")
    args = parser.parse_args(argv)
    names = args.only.split(",") if args.only else list(BENCHMARKS)
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        parser.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    args.names = [name for name in BENCHMARKS if name in names]
    return args


def _table(rows: list[Row]) -> str:
    header = ("benchmark", "metric", "value", "n", "target", "result")
    lines = [(r.bench, r.metric, r.value, "" if r.n is None else str(r.n), r.target, r.verdict) for r in rows]
    widths = [max(len(line[i]) for line in [header, *lines]) for i in range(len(header))]

    def render(cells: tuple[str, ...]) -> str:
        return "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()

    rule = "  ".join("-" * width for width in widths)
    return "\n".join([render(header), rule, *(render(line) for line in lines)])


def _cpu_stall_us() -> int | None:
    """Linux PSI: total µs in which some runnable task waited for a CPU (None if unsupported).

    Its growth over a benchmark, as a share of the wall time, says how contended the CPU
    was while the figures were taken; on a shared machine that explains outliers.
    """
    try:
        some = Path("/proc/pressure/cpu").read_text().splitlines()[0]
    except OSError:
        return None
    return int(some.rsplit("total=", 1)[1])


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    model_dir = (args.model or ensure_base_model()).resolve()
    opts = Options(model_dir=model_dir, quick=args.quick, threads=args.threads)
    machine = machine_info(args.threads)
    print(f"bench: {', '.join(args.names)} | model {model_dir} | {'quick' if args.quick else 'full'} | "
          f"{machine_line(machine)}, {args.threads} threads, load {machine['loadavg_at_start']}", flush=True)

    began = time.perf_counter()
    stall_at_start = _cpu_stall_us()
    rows: list[Row] = []
    results: dict[str, object] = {}
    for name in args.names:
        started = time.perf_counter()
        stall_before = _cpu_stall_us()
        runner: Callable[[Options], Section] = importlib.import_module(f"bench.{name}").run
        try:
            section = runner(opts)
        except Exception as exc:  # noqa: BLE001 - one broken benchmark must not lose the others' figures
            traceback.print_exc()
            section = Section(rows=[Row(name, "error", f"{type(exc).__name__}: {exc}".splitlines()[0][:120],
                                        passed=False)], data={"error": repr(exc)})
        elapsed = time.perf_counter() - started
        stall_after = _cpu_stall_us()
        contention = ""
        if stall_before is not None and stall_after is not None:
            share = (stall_after - stall_before) / 1e6 / elapsed
            section.data["cpu_stall_share"] = share
            contention = f"; some task waited for a CPU {share:.0%} of that time"
        section.data["elapsed_seconds"] = elapsed
        results[name] = section.data
        rows.extend(section.rows)
        print(f"\n{_table(section.rows)}\n({name}: {elapsed:.0f} s{contention}; {machine_line(machine)})\n",
              flush=True)

    machine["loadavg_at_end"] = [round(x, 2) for x in os.getloadavg()]
    total = time.perf_counter() - began
    stall_at_end = _cpu_stall_us()
    if stall_at_start is not None and stall_at_end is not None:
        machine["cpu_stall_share"] = (stall_at_end - stall_at_start) / 1e6 / total
    report = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "mode": "quick" if args.quick else "full",
        "model": str(model_dir),
        "machine": machine,
        "total_seconds": total,
        "table": [row.__dict__ | {"verdict": row.verdict} for row in rows],
        "results": results,
    }
    args.output.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print("=" * 40 + " all results " + "=" * 40)
    print(machine_line(machine))
    print(_table(rows))
    verdicts = [row.verdict for row in rows]
    print(f"\n{verdicts.count('PASS')} PASS, {verdicts.count('FAIL')} FAIL; {total / 60:.1f} min; "
          f"load average {machine['loadavg_at_start']} → {machine['loadavg_at_end']}; "
          f"CPU stall share {machine.get('cpu_stall_share', float('nan')):.0%}; "
          f"written to {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
