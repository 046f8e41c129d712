"""`python -m bench.gpu`: the GPU figures of the engine in one command (long note, short notes, memory).

    python -m bench.gpu                       # on a CUDA machine: float16, the random wav2vec2-base
    python -m bench.gpu --device cpu --quick  # the whole script on a CPU with tiny sizes, to validate it
    python -m bench.gpu --model DIR           # a real checkpoint instead of the random one

What it measures, each part in fresh processes (spawned: CUDA cannot be forked):

1. **Long note**: model-only RTF of a 10-minute note through the engine (`build_recognizer` on
   `load_model`, as the workers do) in float16, for several `ASR_BATCH_SIZE`s: the recognizer
   batches the equal-length chunks of one note, so batch size is what a GPU needs to be kept busy.
   Target: RTF <= 0.003 at the best batch size.
2. **Short notes**: 200 notes of 2-20 s. The recognizer batches chunks of one note, never several
   notes, so the engine's throughput on short notes comes from N worker processes sharing the GPU,
   each with its own model (what `ASR_WORKERS=N` does on a GPU): audio seconds per wall second,
   notes taken from one queue in arrival order. Target: more than 200 audio-seconds per second.
   Beside it, outside the engine and model only: the same notes cut to whole-second lengths and
   run in batches of equal-length notes, i.e. what batching across notes would give if the engine
   did it (no padding: wav2vec2-base's group norm makes padding change the output).
3. **Memory per worker**: `torch.cuda.max_memory_allocated` in each process, and nvidia-smi's
   per-process figure (which includes the CUDA context) while all workers are alive.

Audio is synthesised (voiced harmonics and noise under a syllable-rate envelope): the random
weights do not care what is said, and the machine needs neither ffmpeg nor a corpus. Decoding
is left out of every figure (it runs on the CPU; `python -m bench --only decode` measures it).
Results go to $OUT/results-gpu.json when OUT is set, else bench/results-gpu.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import queue
import resource
import statistics
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import BENCH_DIR, SAMPLE_RATE, Row, child_env, ensure_base_model, machine_info, machine_line

LONG_RTF_TARGET = 0.003
SHORT_THROUGHPUT_TARGET = 200.0
NOTE_SEED = 1000
#: Length buckets (s) of the short notes' per-note RTF: how a GPU's fixed cost per forward shows on short notes.
LENGTH_BUCKETS = ((2.0, 5.0), (5.0, 10.0), (10.0, 20.0))


@dataclass(frozen=True)
class Plan:
    """The sizes of one run: the real ones on a GPU, tiny ones with --quick."""

    long_seconds: float
    batch_sizes: tuple[int, ...]
    reps: int
    notes: int
    note_low: float
    note_high: float
    workers: tuple[int, ...]
    note_batch: int


FULL = Plan(long_seconds=600.0, batch_sizes=(1, 8, 16, 32), reps=3, notes=200, note_low=2.0, note_high=20.0,
            workers=(1, 2, 4), note_batch=16)
QUICK = Plan(long_seconds=60.0, batch_sizes=(1, 2), reps=1, notes=8, note_low=2.0, note_high=6.0, workers=(1, 2),
             note_batch=4)


def synthetic_note(seconds: float, seed: int) -> np.ndarray:
    """Speech-like 16 kHz float32 audio: a few harmonics of a drifting pitch plus noise, shaped by a
    ~4 Hz syllable envelope with pauses. Deterministic for a seed, so every process makes the same notes."""
    rng = np.random.default_rng(seed)
    n = int(seconds * SAMPLE_RATE)
    t = np.arange(n, dtype=np.float32) / SAMPLE_RATE
    pitch = rng.uniform(100.0, 220.0) * (1.0 + 0.1 * np.sin(2 * np.pi * 0.3 * t))
    phase = 2 * np.pi * np.cumsum(pitch) / SAMPLE_RATE
    voiced = sum(np.sin(k * phase) / k for k in range(1, 6))
    syllables = np.clip(np.sin(2 * np.pi * rng.uniform(3.0, 5.0) * t + rng.uniform(0, 2 * np.pi)), 0.0, None)
    pauses = np.repeat(rng.random(int(seconds) + 1) > 0.15, SAMPLE_RATE)[:n]
    audio = (0.5 * voiced + 0.3 * rng.standard_normal(n)) * syllables * pauses
    return (0.1 * audio).astype(np.float32)


def note_lengths(plan: Plan) -> list[float]:
    """The short notes' lengths, seeded, in arrival order."""
    rng = np.random.default_rng(NOTE_SEED)
    return [round(float(s), 1) for s in rng.uniform(plan.note_low, plan.note_high, plan.notes)]


def _recognizer(model: str, device: str, compute_type: str, batch_size: int) -> Any:
    from bot.asr.loading import load_model
    from bot.asr.recognizer import RecognizerConfig, build_recognizer

    return build_recognizer(load_model(model), RecognizerConfig(device=device, compute_type=compute_type,
                                                                batch_size=batch_size))


def _memory(device: str) -> dict[str, float]:
    """This process's peak memory: the CUDA allocator's (MiB) on a GPU, and peak RSS (MiB) always."""
    import torch

    peak = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device == "cuda":
        peak["max_memory_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        peak["max_memory_reserved_mb"] = torch.cuda.max_memory_reserved() / 2**20
    return peak


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


# ----------------------------------------------------------------------------------------
# The parts, each run in a spawned process that reports on a queue
# ----------------------------------------------------------------------------------------


def _long_note(args: dict[str, Any], report: Any) -> None:
    """RTF and peak memory of one long note for each batch size, each on a freshly loaded model as a worker has."""
    import torch

    from bot.asr.types import TextOptions

    torch.set_num_threads(args["threads"])
    device, plan = args["device"], args["plan"]
    audio = synthetic_note(plan.long_seconds, seed=0)
    options = TextOptions(model=args["model"])
    gpu: dict[str, Any] = {}
    if device == "cuda":
        properties = torch.cuda.get_device_properties(0)
        gpu = {"name": torch.cuda.get_device_name(0), "capability": ".".join(map(str, torch.cuda.get_device_capability(0))),
               "memory_gb": round(properties.total_memory / 2**30, 1), "cuda": torch.version.cuda}
    runs = []
    for batch_size in plan.batch_sizes:
        recognizer = _recognizer(args["model"], device, args["compute_type"], batch_size)
        chunk, stride = recognizer.config.chunk_seconds, recognizer.config.stride_seconds
        warmup = audio[: int((batch_size * (chunk - 2 * stride) + 2 * stride) * SAMPLE_RATE)]  # one full batch
        recognizer.transcribe(warmup, options)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(plan.reps):
            _sync(device)
            started = time.perf_counter()
            result = recognizer.transcribe(audio, options)
            _sync(device)
            times.append(time.perf_counter() - started)
        runs.append({"batch_size": batch_size, "times": times, "rtf": statistics.median(times) / plan.long_seconds,
                     "words": len(result.words), "compute_type": result.options.compute_type, **_memory(device)})
    report.put({"gpu": gpu, "seconds": plan.long_seconds, "runs": runs, "torch": torch.__version__})


def _pool_worker(index: int, args: dict[str, Any], tasks: Any, report: Any, ready: Any, done: Any) -> None:
    """One worker of the short-note pool: its own model, notes from the shared queue until a None."""
    try:
        import torch

        from bot.asr.types import TextOptions

        torch.set_num_threads(args["threads"])
        device = args["device"]
        lengths = args["lengths"]
        notes = [synthetic_note(seconds, seed=NOTE_SEED + i) for i, seconds in enumerate(lengths)]
        recognizer = _recognizer(args["model"], device, args["compute_type"], 1)
        options = TextOptions(model=args["model"])
        recognizer.transcribe(synthetic_note(args["plan"].note_high, seed=1), options)  # warm-up
        ready.wait(timeout=900)
        busy = 0.0
        while (item := tasks.get()) is not None:
            started = time.perf_counter()
            result = recognizer.transcribe(notes[item], options)
            _sync(device)
            busy += time.perf_counter() - started
            report.put({"note": item, "seconds": result.duration, "model_seconds": result.processing_seconds,
                        "finished": time.monotonic()})
        report.put({"worker": index, "pid": os.getpid(), "busy_seconds": busy, **_memory(device)})
        done.wait(timeout=300)  # alive while the parent reads nvidia-smi
    except Exception:  # noqa: BLE001 - the parent reports the worker's traceback, whatever it was
        report.put({"error": traceback.format_exc()})
        ready.abort()  # a parent still waiting for the start learns at once


def _note_batches(args: dict[str, Any], report: Any) -> None:
    """Model only: the notes cut to whole seconds, batched by equal length (what note batching would give)."""
    import torch

    torch.set_num_threads(args["threads"])
    device, plan = args["device"], args["plan"]
    recognizer = _recognizer(args["model"], device, args["compute_type"], 1)
    dtype = next(recognizer.model.parameters()).dtype
    buckets: dict[int, list[np.ndarray]] = {}
    for i, seconds in enumerate(args["lengths"]):
        whole = max(1, int(seconds))
        buckets.setdefault(whole, []).append(synthetic_note(seconds, seed=NOTE_SEED + i)[: whole * SAMPLE_RATE])
    batches = [group[i : i + plan.note_batch] for group in buckets.values()
               for i in range(0, len(group), plan.note_batch)]

    def forward(batch: list[np.ndarray]) -> None:
        features = recognizer.feature_extractor(batch, sampling_rate=SAMPLE_RATE, return_tensors="pt")
        inputs = features["input_values"].to(device=device, dtype=dtype)
        recognizer.model(inputs).logits.argmax(dim=-1).cpu()

    with torch.inference_mode():
        for batch in batches:  # warm-up: every shape once
            forward(batch)
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        started = time.perf_counter()
        for batch in batches:
            forward(batch)
        _sync(device)
        wall = time.perf_counter() - started
    audio = sum(len(a) for group in batches for a in group) / SAMPLE_RATE
    report.put({"audio_seconds": audio, "wall_seconds": wall, "throughput": audio / wall, "batches": len(batches),
                "buckets": len(buckets), "max_batch": plan.note_batch, **_memory(device)})


# ----------------------------------------------------------------------------------------
# The parent
# ----------------------------------------------------------------------------------------


def _spawned(target: Any, args: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Run `target(args, report)` in a spawned process and return what it reported."""
    context = mp.get_context("spawn")
    report = context.Queue()
    process = context.Process(target=target, args=(args, report))
    process.start()
    try:
        return _get(report, [process], timeout)
    finally:
        process.join(timeout=60)


def _get(report: Any, processes: Sequence[Any], timeout: float) -> dict[str, Any]:
    """The next report; a RuntimeError if it is a worker's traceback, a process died, or none came in time."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            item: dict[str, Any] = report.get(timeout=2.0)
        except queue.Empty:
            dead = [p.exitcode for p in processes if p.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(f"a bench process exited with {dead}" if dead else "timed out") from None
            continue
        if "error" in item:
            raise RuntimeError(f"a bench process failed:\n{item['error']}")
        return item


def _nvidia_smi() -> dict[int, float]:
    """Used GPU memory (MiB) per process id, as nvidia-smi reports it (empty when it cannot)."""
    try:
        output = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                                capture_output=True, text=True, timeout=30, check=True).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    used = {}
    for line in output.splitlines():
        pid, _, mib = line.partition(",")
        if pid.strip().isdigit() and mib.strip().replace(".", "", 1).isdigit():
            used[int(pid)] = float(mib)
    return used


def _pool(args: dict[str, Any], workers: int, timeout: float) -> dict[str, Any]:
    """N workers on the short notes: throughput, per-note model RTF and memory per worker."""
    context = mp.get_context("spawn")
    tasks, report = context.Queue(), context.Queue()
    ready, done = context.Barrier(workers + 1), context.Event()
    per_worker = args | {"threads": max(1, args["threads"] // workers)}
    processes = [context.Process(target=_pool_worker, args=(i, per_worker, tasks, report, ready, done))
                 for i in range(workers)]
    for process in processes:
        process.start()
    try:
        for index in range(len(args["lengths"])):
            tasks.put(index)
        for _ in processes:
            tasks.put(None)
        try:
            ready.wait(timeout=timeout)
        except threading.BrokenBarrierError:
            _get(report, processes, 30)  # raises with the worker's traceback
            raise
        began = time.monotonic()
        items = [_get(report, processes, timeout) for _ in range(len(args["lengths"]) + workers)]
        smi = _nvidia_smi()
    finally:
        done.set()
        for process in processes:
            process.join(timeout=60)
    notes = [item for item in items if "note" in item]
    summaries = [item | {"nvidia_smi_mb": smi.get(item["pid"])} for item in items if "worker" in item]
    audio = sum(n["seconds"] for n in notes)
    wall = max(n["finished"] for n in notes) - began
    by_length = {}
    for low, high in LENGTH_BUCKETS:
        inside = [n for n in notes if low <= n["seconds"] < high]
        if inside:
            by_length[f"{low:g}-{high:g} s"] = sum(n["model_seconds"] for n in inside) / sum(n["seconds"] for n in inside)
    return {"workers": workers, "threads_per_worker": per_worker["threads"], "notes": len(notes),
            "audio_seconds": audio, "wall_seconds": wall, "throughput": audio / wall,
            "model_rtf": sum(n["model_seconds"] for n in notes) / audio, "model_rtf_by_length": by_length,
            "per_worker": sorted(summaries, key=lambda w: w["worker"]),
            "nvidia_smi_all_mb": {str(pid): mib for pid, mib in smi.items()}}


def _rows(results: dict[str, Any], on_gpu: bool) -> list[Row]:
    """The table: targets are judged on a GPU only (on a CPU the figures just validate the script)."""
    rows = []
    long = results["long_note"]
    for run in long["runs"]:
        memory = f"; max allocated {run['max_memory_allocated_mb']:.0f} MiB" if on_gpu else ""
        rows.append(Row("gpu", f"{long['seconds'] / 60:g}-min note, {run['compute_type']}, batch {run['batch_size']}: "
                               f"RTF (engine, decoded audio)", f"{run['rtf']:.4f}{memory}", len(run["times"])))
    best = min(long["runs"], key=lambda r: r["rtf"])
    rows.append(Row("gpu", f"best long-note RTF (batch {best['batch_size']})", f"{best['rtf']:.4f}",
                    len(best["times"]), f"≤ {LONG_RTF_TARGET}", best["rtf"] <= LONG_RTF_TARGET if on_gpu else None))
    for pool in results["pool"]:
        rows.append(Row("gpu", f"short notes, engine, {pool['workers']} worker(s) × {pool['threads_per_worker']} "
                               f"threads: audio-s/s (model RTF per note)",
                        f"{pool['throughput']:.1f} ({pool['model_rtf']:.4f})", pool["notes"]))
        rows.append(Row("gpu", "  model RTF per note by length",
                        ", ".join(f"{bucket} {rtf:.4f}" for bucket, rtf in pool["model_rtf_by_length"].items())))
        for worker in pool["per_worker"]:
            figures = [f"RSS {worker['peak_rss_mb']:.0f} MiB"]
            if on_gpu:
                figures.insert(0, f"max allocated {worker['max_memory_allocated_mb']:.0f} MiB")
                smi = worker["nvidia_smi_mb"]
                figures.insert(1, f"nvidia-smi {smi:.0f} MiB" if smi is not None else "nvidia-smi: no figure")
            rows.append(Row("gpu", f"  memory of worker {worker['worker']} of {pool['workers']}", ", ".join(figures)))
    best_pool = max(results["pool"], key=lambda p: p["throughput"])
    rows.append(Row("gpu", f"best short-note throughput, engine ({best_pool['workers']} worker(s))",
                    f"{best_pool['throughput']:.1f} audio-s/s", best_pool["notes"], f"> {SHORT_THROUGHPUT_TARGET:g}",
                    best_pool["throughput"] > SHORT_THROUGHPUT_TARGET if on_gpu else None))
    batched = results["note_batches"]
    rows.append(Row("gpu", f"short notes batched by equal length (≤ {batched['max_batch']}), model only, not the engine",
                    f"{batched['throughput']:.1f} audio-s/s ({batched['batches']} batches, {batched['buckets']} lengths)",
                    1))
    return rows


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a 1-minute note, 8 short notes")
    parser.add_argument("--model", type=Path, help="model directory (default: random wav2vec2-base, built once)")
    parser.add_argument("--compute-type", help="default: float16 on cuda, float32 on cpu")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="CPU threads in all")
    parser.add_argument("--output", type=Path, help="default: $OUT/results-gpu.json, else bench/results-gpu.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(f"bench.gpu: no CUDA device (torch {torch.__version__}, CUDA build {torch.version.cuda or 'none'}); "
              f"to check the script on this CPU: python -m bench.gpu --device cpu --quick", file=sys.stderr)
        return 2
    output = args.output or (Path(os.environ["OUT"]) if os.environ.get("OUT") else BENCH_DIR) / "results-gpu.json"
    output.parent.mkdir(parents=True, exist_ok=True)  # now, not after the run: a bad path fails before the work
    os.environ.update(child_env())  # the spawned processes: repo importable, Hugging Face offline and quiet
    plan = QUICK if args.quick else FULL
    model = str((args.model or ensure_base_model()).resolve())
    compute_type = args.compute_type or ("float16" if args.device == "cuda" else "float32")
    machine = machine_info(args.threads)
    print(f"bench.gpu: {'quick' if args.quick else 'full'} on {args.device}, {compute_type}, model {model}\n"
          f"{machine_line(machine)}", flush=True)
    shared = {"model": model, "device": args.device, "compute_type": compute_type, "plan": plan,
              "threads": args.threads, "lengths": note_lengths(plan)}
    began = time.perf_counter()
    print(f"long note: {plan.long_seconds:g} s, batch sizes {plan.batch_sizes}, {plan.reps} run(s) each", flush=True)
    results: dict[str, Any] = {"long_note": _spawned(_long_note, shared, timeout=1200)}
    gpu = results["long_note"]["gpu"]
    if gpu:
        print(f"GPU: {gpu['name']}, compute capability {gpu['capability']}, {gpu['memory_gb']} GiB, "
              f"CUDA {gpu['cuda']}, torch {results['long_note']['torch']}", flush=True)
    print(f"short notes: {plan.notes} of {plan.note_low:g}-{plan.note_high:g} s "
          f"({sum(shared['lengths']):.0f} s of audio), pools of {plan.workers} worker(s)", flush=True)
    results["pool"] = [_pool(shared, workers, timeout=1200) for workers in plan.workers]
    print("short notes batched by equal length (model only)", flush=True)
    results["note_batches"] = _spawned(_note_batches, shared, timeout=1200)
    results["note_batching"] = ("not in the engine (it batches the equal-length chunks of one note): short notes "
                                "are served by a pool of workers; note_batches is the model alone on batched notes")

    from bench.__main__ import _table

    rows = _rows(results, on_gpu=args.device == "cuda")
    print(f"\n{_table(rows)}\n({time.perf_counter() - began:.0f} s; {machine_line(machine)}"
          + (f"; {gpu['name']} (capability {gpu['capability']})" if gpu else "") + ")", flush=True)
    output.write_text(json.dumps({
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "mode": "quick" if args.quick else "full",
        "device": args.device, "compute_type": compute_type, "model": model, "gpu": gpu, "machine": machine,
        "plan": plan.__dict__, "total_seconds": time.perf_counter() - began,
        "table": [row.__dict__ | {"verdict": row.verdict} for row in rows], "results": results,
    }, indent=2, default=str) + "\n")
    print(f"written to {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
