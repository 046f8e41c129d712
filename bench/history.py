"""/history and /search speed, from `bench.bench_history` (owned by the storage work).

Its `run()` builds a throw-away database of 100,000 transcripts for one user and returns
median milliseconds per query; this module only puts those figures in the table.
"""

from __future__ import annotations

import importlib.util

from bench.common import Options, Row, Section, not_run


def run(opts: Options) -> Section:
    if importlib.util.find_spec("bench.bench_history") is None:
        return not_run("history", "bench/bench_history.py missing")
    from bench import bench_history

    figures = bench_history.run(20_000, n_others=4_000) if opts.quick else bench_history.run()
    section = Section(data=figures)
    n = int(figures["runs"])
    section.add(Row("history", "database", f"{int(figures['transcripts_heavy_user']):,} transcripts for one user, "
                                           f"{figures['database_mb']} MB"))
    for name, value in figures.items():
        if name.endswith("_ms"):
            # The target is for /history pages; search has none (its cost grows with the matches).
            target = name.startswith("history")
            section.add(Row("history", name.removesuffix("_ms").replace("_", " "), f"{value:.2f} ms", n,
                            f"< {bench_history.TARGET_MS:.0f} ms" if target else "",
                            value < bench_history.TARGET_MS if target else None))
    return section
