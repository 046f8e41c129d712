"""Cold start: from launching a process to its first worker being ready.

A fresh child starts a one-worker transcriber (local backend) and reports, in seconds since
it was launched: interpreter up, the bot's imports done, worker ready (its forkserver's
imports and its own model load), and the first 5-second note transcribed. This is the
wait after a restart or a deploy.
"""

from __future__ import annotations

import sys
import time

from bench.common import Options, Row, Section, bench_child, median, voice_note

MARKS = ("script_started", "imports", "worker_ready", "first_result")


def run(opts: Options) -> Section:
    n = opts.reps(3, 2)
    runs = []
    for index in range(n):
        print(f"cold_start: run {index + 1}/{n}", file=sys.stderr, flush=True)
        runs.append(bench_child("cold-start", "--t0", repr(time.time()), "--model", str(opts.model_dir),
                                "--file", str(voice_note(5))).json())
    medians = {mark: median([r[mark] for r in runs]) for mark in MARKS}
    section = Section(data={"runs": runs, "median": medians})
    for mark in MARKS:
        section.add(Row("cold_start", f"launch → {mark.replace('_', ' ')}", f"{medians[mark]:.2f} s", n))
    return section
