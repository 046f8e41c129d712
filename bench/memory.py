"""Memory of a worker pool: 1, 2 and 4 workers, after one job each.

Sum of RSS over the parent and its workers counts the shared weights once per process;
sum of PSS splits each shared page among the processes that map it, so it is the real
cost. The target is that 4 workers cost at most 1.5 times 1 worker (PSS): workers must
share the weights rather than copy them.
"""

from __future__ import annotations

import sys

from bench.common import Options, Row, Section, bench_child, fmt_ratio, median, voice_note

TARGET_RATIO = 1.5
WORKER_COUNTS = (1, 2, 4)


def run(opts: Options) -> Section:
    n = opts.reps(2, 1)
    totals: dict[int, dict[str, float]] = {}
    raw: dict[str, list[dict]] = {}
    for workers in WORKER_COUNTS:
        runs = []
        for index in range(n):
            print(f"memory: {workers} worker(s), run {index + 1}/{n}", file=sys.stderr, flush=True)
            runs.append(bench_child("memory", "--workers", str(workers), "--model", str(opts.model_dir),
                                    "--file", str(voice_note(5))).json())
        raw[str(workers)] = runs
        totals[workers] = {key: median([r[key] for r in runs]) for key in ("rss_mb", "pss_mb", "uss_mb")}
    section = Section(data={"runs": raw, "median": {str(k): v for k, v in totals.items()}})
    for workers in WORKER_COUNTS:
        section.add(Row("memory", f"{workers} worker(s): sum RSS / sum PSS",
                        f"{totals[workers]['rss_mb']:.0f} / {totals[workers]['pss_mb']:.0f} MB", n))
    largest = raw[str(WORKER_COUNTS[-1])][0]["processes"]
    private = {role: [p["uss_mb"] for p in largest if p["role"] == role] for role in ("parent", "worker")}
    section.add(Row("memory", f"private (USS) with {WORKER_COUNTS[-1]} workers: parent / each worker",
                    f"{median(private['parent']):.0f} / {median(private['worker']):.0f} MB", 1))
    ratio = totals[4]["pss_mb"] / totals[1]["pss_mb"]
    section.data["pss_ratio_4_to_1"] = ratio
    section.add(Row("memory", "4 workers / 1 worker (PSS)", fmt_ratio(ratio), n,
                    f"≤ {TARGET_RATIO}×", ratio <= TARGET_RATIO))
    return section
