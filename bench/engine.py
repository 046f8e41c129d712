"""Engine speed and memory: our chunked engine against the seed tutorial's one-pass method.

Three kinds of figure, each from fresh child processes:

* warm RTF (file -> text, decoding included, model already loaded) for 5 s, 30 s and
  2 min, ours and the seed's, run alternately in one process so that their ratio
  survives a shared machine's changing load; the ratio column is the median of the
  per-pair ratios. Peak RSS comes from separate processes, one method and file each;
* whole-process time (`python -m bot transcribe` vs `python -m bench.seed_method`) on
  the 2-minute OGG, model load included: what a user of the CLI waits;
* `python -m bot transcribe` on the 10-minute OGG: RTF (from its --json) and peak RSS.
  The seed is not run past 2 minutes: its one attention pass needs tens of GB there;
* model RTF of short notes (3–12 s) that each have a length of their own, as voice notes do,
  against the same lengths run again: the repeated-file figures above never meet a new input
  shape, and kernels built per shape make a new length slower.
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
    cpu_info,
    fmt_ratio,
    median,
    run_child,
    voice_note,
)

#: Default-mode RTF of the 2-minute note: on a CPU with AMX (auto runs bfloat16 there), and elsewhere.
RTF_TARGET_AMX = 0.03
RTF_TARGET = 0.10
WHOLE_PROCESS_TARGET = 0.45
PEAK_RSS_TARGET_MB = 1.5 * 1024
SEED_MAX_SECONDS = 120
#: Clips this short must never be slower than the seed.
SHORT_CLIPS = (5, 30)


def _warm_times(opts: Options, reps: dict[int, int]) -> dict[str, dict[int, list[dict[str, float]]]]:
    """Warm file -> text times of both methods, interleaved run by run in one child."""
    files = [str(voice_note(seconds)) for seconds in reps]
    data = bench_child("engine", "--methods", "ours,seed", "--model", str(opts.model_dir),
                       "--files", ",".join(files), "--reps", ",".join(map(str, reps.values())),
                       "--warmup", str(voice_note(5)), "--threads", str(opts.threads)).json()
    return {method: {seconds: per_file[path] for seconds, path in zip(reps, files, strict=True)}
            for method, per_file in data["runs"].items()}


def _peak_rss(opts: Options, method: str, seconds: int) -> float:
    """Peak RSS (MB) of a fresh process that loads one method and transcribes one file once."""
    child = bench_child("engine", "--methods", method, "--model", str(opts.model_dir),
                       "--files", str(voice_note(seconds)), "--reps", "1",
                       "--warmup", str(voice_note(5)), "--threads", str(opts.threads))
    child.json()
    return child.peak_rss_mb


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
    rtf_target = RTF_TARGET_AMX if "amx_bf16" in cpu_info().flags else RTF_TARGET
    # Short clips are cheap and noisy (seconds each on a shared machine): more pairs.
    reps = {5: opts.reps(9, 5), 30: opts.reps(5, 3), 120: opts.reps(2, 1)}
    print(f"engine: ours and seed interleaved on {', '.join(f'{s} s x{n}' for s, n in reps.items())}",
          file=sys.stderr, flush=True)
    warm = _warm_times(opts, reps)
    rss = {}
    rss_lengths = (SEED_MAX_SECONDS,) if opts.quick else tuple(reps)  # one child each: --quick keeps 2 min
    for seconds in rss_lengths:
        for method in ("ours", "seed"):
            print(f"engine: peak RSS, {method} {seconds} s", file=sys.stderr, flush=True)
            rss[f"{method} {seconds}"] = _peak_rss(opts, method, seconds)
    section.data["warm_runs"] = {m: {str(k): v for k, v in per.items()} for m, per in warm.items()}
    section.data["peak_rss_mb"] = rss

    for seconds, n in reps.items():
        ours = median([r["total"] for r in warm["ours"][seconds]]) / seconds
        seed = median([r["total"] for r in warm["seed"][seconds]]) / seconds
        ratio = median([a["total"] / b["total"] for a, b in zip(warm["ours"][seconds], warm["seed"][seconds],
                                                                  strict=True)])
        model = median([r["model"] for r in warm["ours"][seconds]]) / seconds
        section.data[f"rtf_{seconds}s"] = {"ours": ours, "seed": seed, "ours_model_only": model, "ratio": ratio}
        label = f"{seconds} s" if seconds < 60 else f"{seconds // 60} min"
        target, passed = "", None
        if seconds in SHORT_CLIPS:
            target, passed = "ours ≤ seed", ratio <= 1.0
        section.add(Row("engine", f"RTF {label}: ours / seed (file→text); ratio of pairs",
                        f"{ours:.3f} / {seed:.3f}; {fmt_ratio(ratio)}", n, target, passed))
        if seconds == 120:
            section.add(Row("engine", "RTF 2 min, default mode (ours; model only)", f"{ours:.3f} ({model:.3f})", n,
                            f"≤ {rtf_target}", ours <= rtf_target))
        if seconds in rss_lengths:
            section.add(Row("engine", f"peak RSS {label}: ours / seed",
                            f"{rss[f'ours {seconds}']:.0f} / {rss[f'seed {seconds}']:.0f} MB", 1))

    # Whole processes on the 2-minute note, alternated so drift hits both alike.
    n_whole = opts.reps(2, 1)
    path = str(voice_note(SEED_MAX_SECONDS))
    ours_wall, seed_wall, ours_rss, seed_rss = [], [], [], []
    for index in range(n_whole):
        print(f"engine: whole process 2 min, run {index + 1}/{n_whole}", file=sys.stderr, flush=True)
        wall, peak, _ = _cli(path, opts)
        ours_wall.append(wall)
        ours_rss.append(peak)
        wall, peak = _seed_process(path, opts)
        seed_wall.append(wall)
        seed_rss.append(peak)
    ratio = median([a / b for a, b in zip(ours_wall, seed_wall, strict=True)])
    section.data["whole_process_2min"] = {"ours_seconds": ours_wall, "seed_seconds": seed_wall,
                                          "ours_peak_rss_mb": ours_rss, "seed_peak_rss_mb": seed_rss,
                                          "ratio": ratio}
    section.add(Row("engine", "whole process 2 min: bot transcribe / seed",
                    f"{median(ours_wall):.1f} / {median(seed_wall):.1f} s; {fmt_ratio(ratio)}", n_whole,
                    f"≤ {WHOLE_PROCESS_TARGET}×", ratio <= WHOLE_PROCESS_TARGET))

    # Ten minutes through the CLI: peak RSS (the target) and the engine's RTF at that length.
    n_long = opts.reps(1, 1)
    long_runs = []
    for index in range(n_long):
        print(f"engine: bot transcribe 10 min, run {index + 1}/{n_long}", file=sys.stderr, flush=True)
        wall, peak, result = _cli(str(voice_note(600)), opts)
        long_runs.append({"wall": wall, "peak_rss_mb": peak, "duration": result["duration"],
                          "processing_seconds": result["processing_seconds"],
                          "decode_seconds": result["decode_seconds"]})
    long_rss = median([r["peak_rss_mb"] for r in long_runs])
    rtf = median([(r["processing_seconds"] + r["decode_seconds"]) / r["duration"] for r in long_runs])
    section.data["cli_10min"] = long_runs
    section.add(Row("engine", "RTF 10 min (bot transcribe); seed not run", f"{rtf:.3f}", n_long))
    section.add(Row("engine", "peak RSS bot transcribe 10 min", f"{long_rss:.0f} MB", n_long,
                    f"≤ {PEAK_RSS_TARGET_MB:.0f} MB", long_rss <= PEAK_RSS_TARGET_MB))
    n_notes = opts.reps(30, 8)
    print(f"engine: {n_notes} short notes of new lengths, then the same again", file=sys.stderr, flush=True)
    lengths = bench_child("new-lengths", "--model", str(opts.model_dir), "--file", str(voice_note(30)),
                          "--notes", str(n_notes), "--threads", str(opts.threads)).json()
    section.data["new_lengths"] = lengths
    new, seen = (sum(lengths[key]) / lengths["audio_seconds"] for key in ("new", "seen"))
    section.add(Row("engine", "short notes (3–12 s), model RTF: each a new length / the same lengths again",
                    f"{new:.4f} / {seen:.4f}", n_notes))
    section.data["targets"] = {"rtf_2min": rtf_target, "whole_process_ratio": WHOLE_PROCESS_TARGET,
                               "peak_rss_mb": PEAK_RSS_TARGET_MB}
    return section
