"""Engine speed and memory: our chunked engine against the seed tutorial's one-pass method.

Three kinds of figure, each from fresh child processes:

* warm RTF (file -> text, decoding included, model already loaded) for 5 s, 30 s and
  2 min, ours and the seed's, with the peak RSS of each child;
* whole-process time (`python -m bot transcribe` vs `python -m bench.seed_method`) on
  the 2-minute OGG, model load included: what a user of the CLI waits;
* `python -m bot transcribe` on the 10-minute OGG: RTF (from its --json) and peak RSS.
  The seed is not run past 2 minutes: its one attention pass needs tens of GB there.
"""

from __future__ import annotations

import sys

from bench.common import (
    PYTHON,
    Options,
    Row,
    Section,
    bench_child,
    child_env,
    fmt_ratio,
    median,
    run_child,
    voice_note,
)

RTF_TARGET = 0.10
WHOLE_PROCESS_TARGET = 0.6
PEAK_RSS_TARGET_MB = 1.5 * 1024
SEED_MAX_SECONDS = 120
#: Clips this short must never be slower than the seed.
SHORT_CLIPS = (5, 30)


def _warm_rtf(opts: Options, method: str, seconds: int, reps: int) -> dict[str, float]:
    """Median warm RTF of one method on one length, from one child (whose peak RSS is reported)."""
    child = bench_child("engine", "--method", method, "--model", str(opts.model_dir),
                       "--file", str(voice_note(seconds)), "--warmup", str(voice_note(5)),
                       "--reps", str(reps), "--threads", str(opts.threads))
    data = child.json()
    runs = data["runs"]
    figures = {"rtf": median([r["total"] for r in runs]) / seconds, "peak_rss_mb": child.peak_rss_mb,
               "load_seconds": data["load_seconds"], "n": len(runs), "runs": runs}
    if method == "ours":
        figures["model_rtf"] = median([r["model"] for r in runs]) / seconds
    return figures


def _cli(path: str, opts: Options) -> tuple[float, float, dict[str, float]]:
    """One `python -m bot transcribe --json FILE`: wall seconds, peak RSS MB, its own timings."""
    env = child_env(ASR_MODEL=str(opts.model_dir), ASR_THREADS_PER_WORKER=str(opts.threads), ASR_DEVICE="cpu")
    child = run_child([PYTHON, "-m", "bot", "transcribe", "--json", path], env=env)
    result = child.json()
    return child.wall_seconds, child.peak_rss_mb, result


def _seed_process(path: str, opts: Options) -> tuple[float, float]:
    child = run_child([PYTHON, "-m", "bench.seed_method", path, str(opts.model_dir)],
                      env=child_env(OMP_NUM_THREADS=str(opts.threads)))
    if child.returncode != 0:
        raise RuntimeError(f"seed process failed: {child.stderr[-2000:]}")
    return child.wall_seconds, child.peak_rss_mb


def run(opts: Options) -> Section:
    section = Section()
    reps = {5: opts.reps(5, 3), 30: opts.reps(3, 2), 120: opts.reps(2, 1)}
    warm: dict[str, dict[int, dict[str, float]]] = {"ours": {}, "seed": {}}
    for seconds, n in reps.items():
        for method in ("ours", "seed"):
            print(f"engine: {method} {seconds} s x{n}", file=sys.stderr, flush=True)
            warm[method][seconds] = _warm_rtf(opts, method, seconds, n)
    section.data["warm"] = {m: {str(k): v for k, v in per.items()} for m, per in warm.items()}

    for seconds in reps:
        ours, seed = warm["ours"][seconds], warm["seed"][seconds]
        ratio = ours["rtf"] / seed["rtf"]
        label = f"{seconds} s" if seconds < 60 else f"{seconds // 60} min"
        target, passed = "", None
        if seconds in SHORT_CLIPS:
            target, passed = "ours ≤ seed", ratio <= 1.0
        section.add(Row("engine", f"RTF {label}: ours / seed (file→text)",
                        f"{ours['rtf']:.3f} / {seed['rtf']:.3f} = {fmt_ratio(ratio)}", ours["n"], target, passed))
        if seconds == 120:
            section.add(Row("engine", "RTF 2 min, default mode (ours)", f"{ours['rtf']:.3f}", ours["n"],
                            f"≤ {RTF_TARGET}", ours["rtf"] <= RTF_TARGET))
        section.add(Row("engine", f"peak RSS {label}: ours / seed",
                        f"{ours['peak_rss_mb']:.0f} / {seed['peak_rss_mb']:.0f} MB", 1))

    # Whole processes on the 2-minute note, alternated so drift hits both alike.
    n_whole = opts.reps(2, 1)
    path = str(voice_note(SEED_MAX_SECONDS))
    ours_wall, seed_wall, ours_rss = [], [], []
    for index in range(n_whole):
        print(f"engine: whole process 2 min, run {index + 1}/{n_whole}", file=sys.stderr, flush=True)
        wall, rss, _ = _cli(path, opts)
        ours_wall.append(wall)
        ours_rss.append(rss)
        seed_wall.append(_seed_process(path, opts)[0])
    ratio = median(ours_wall) / median(seed_wall)
    section.data["whole_process_2min"] = {"ours_seconds": ours_wall, "seed_seconds": seed_wall,
                                          "ours_peak_rss_mb": ours_rss, "ratio": ratio}
    section.add(Row("engine", "whole process 2 min: bot transcribe / seed",
                    f"{median(ours_wall):.1f} / {median(seed_wall):.1f} s = {fmt_ratio(ratio)}", n_whole,
                    f"≤ {WHOLE_PROCESS_TARGET}×", ratio <= WHOLE_PROCESS_TARGET))

    # Ten minutes through the CLI: peak RSS (the target) and the engine's RTF at that length.
    n_long = opts.reps(1, 1)
    long_runs = []
    for index in range(n_long):
        print(f"engine: bot transcribe 10 min, run {index + 1}/{n_long}", file=sys.stderr, flush=True)
        wall, rss, result = _cli(str(voice_note(600)), opts)
        long_runs.append({"wall": wall, "peak_rss_mb": rss, "duration": result["duration"],
                          "processing_seconds": result["processing_seconds"],
                          "decode_seconds": result["decode_seconds"]})
    rss = median([r["peak_rss_mb"] for r in long_runs])
    rtf = median([(r["processing_seconds"] + r["decode_seconds"]) / r["duration"] for r in long_runs])
    section.data["cli_10min"] = long_runs
    section.add(Row("engine", "RTF 10 min (bot transcribe); seed not run", f"{rtf:.3f}", n_long))
    section.add(Row("engine", "peak RSS bot transcribe 10 min", f"{rss:.0f} MB", n_long,
                    f"≤ {PEAK_RSS_TARGET_MB:.0f} MB", rss <= PEAK_RSS_TARGET_MB))
    section.data["targets"] = {"rtf_2min": RTF_TARGET, "whole_process_ratio": WHOLE_PROCESS_TARGET,
                               "peak_rss_mb": PEAK_RSS_TARGET_MB}
    return section
