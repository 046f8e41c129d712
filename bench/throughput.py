"""Throughput of the worker pool: many voice notes submitted at once.

40 OGG notes of 3–30 s (seeded random lengths, different speech in each) are submitted
together as paths, so the workers decode them too, for each layout of the 2 cores:
1 worker × 2 threads, 2 workers × 1 thread, and 1 × 1 as a reference. Figures:
audio seconds per wall second, p50/p95 job latency (submit → result; with everything
queued at once this is mostly waiting), and the ratio to the ideal 1/RTF, where RTF is
the single-job RTF of the same notes (decode + model, each job alone on the machine)
measured in this run by the 1 × 2 layout, which runs one job at a time.
"""

from __future__ import annotations

import json
import sys

from bench.common import CACHE, Options, Row, Section, bench_child, fmt_ratio, percentile, voice_note, voice_note_set

TARGET_RATIO = 0.9
#: (workers, threads per worker); the first runs one job at a time and gives the single-job RTF.
LAYOUTS = ((1, 2), (2, 1), (1, 1))


def _layout(opts: Options, workers: int, threads: int, notes: list[dict]) -> dict:
    path = CACHE / f"throughput-notes-{workers}x{threads}.json"
    path.write_text(json.dumps(notes))
    print(f"throughput: {workers}×{threads} on {len(notes)} notes", file=sys.stderr, flush=True)
    data = bench_child("throughput", "--workers", str(workers), "--threads", str(threads),
                       "--model", str(opts.model_dir), "--notes", str(path),
                       "--warmup", str(voice_note(5))).json()
    path.unlink()
    jobs = data["jobs"]
    audio = sum(j["duration"] for j in jobs)
    latencies = [j["latency"] for j in jobs]
    return {"workers": workers, "threads": threads, "notes": len(jobs), "audio_seconds": audio,
            "wall_seconds": data["wall"], "throughput": audio / data["wall"],
            "p50": percentile(latencies, 50), "p95": percentile(latencies, 95),
            "single_job_rtf": sum(j["decode"] + j["model"] for j in jobs) / audio, "jobs": jobs}


def run(opts: Options) -> Section:
    count = 12 if opts.quick else 40
    notes = [{"path": str(path), "seconds": seconds} for path, seconds in voice_note_set(count)]
    # The 1 × 1 reference is slow and only shows what a second thread buys: a third of the notes.
    results = [_layout(opts, w, t, notes if (w, t) != (1, 1) else notes[: max(4, count // 3)])
               for w, t in LAYOUTS]
    single_rtf = results[0]["single_job_rtf"]
    section = Section(data={"single_job_rtf": single_rtf, "layouts": results})
    section.add(Row("throughput", "single-job RTF (1×2, decode + model)", f"{single_rtf:.3f}", results[0]["notes"]))
    for result in results:
        ratio = result["throughput"] * single_rtf
        result["ratio_to_ideal"] = ratio
        layout = f"{result['workers']}×{result['threads']}"
        has_target = (result["workers"], result["threads"]) != (1, 1)
        section.add(Row(
            "throughput",
            f"{layout}: audio-s/wall-s, p50/p95 latency",
            f"{result['throughput']:.2f}, {result['p50']:.0f}/{result['p95']:.0f} s", result["notes"],
        ))
        section.add(Row("throughput", f"{layout}: throughput × single-job RTF", fmt_ratio(ratio), result["notes"],
                        f"≥ {TARGET_RATIO}" if has_target else "", (ratio >= TARGET_RATIO) if has_target else None))
    return section
