"""Measurements that run in a fresh interpreter: `python -m bench.child TASK ...`.

Each task prints one JSON line on stdout as its last line. A fresh process per task is
what makes peak RSS, cold start and thread settings mean something: nothing loaded by
an earlier benchmark is still resident, and `torch.set_num_threads` starts from scratch.

Top-level imports stay light on purpose: the worker processes of a pool started here
are spawned, and spawn re-imports this module in each of them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import IDLE_SECONDS, default_settings, native_bf16


def _emit(payload: dict[str, Any]) -> None:
    print(json.dumps(payload), flush=True)


def _request(model: str, path: str | Path) -> Any:
    """A request for a file on this machine, as the bot's pipeline makes one."""
    from bot.asr.types import TextOptions
    from bot.execution.base import TranscriptionRequest

    return TranscriptionRequest(audio=Path(path), options=TextOptions(model=model))


def _decode(path: str | Path) -> Any:
    from bot.audio.decode import decode_audio

    settings = default_settings()
    return decode_audio(Path(path), max_seconds=settings.max_audio_seconds,
                        timeout=settings.ffmpeg_timeout_seconds, memory_mb=settings.ffmpeg_memory_mb)


# ----------------------------------------------------------------------------------------
# engine: file -> text in one warm process, our engine or the seed's method
# ----------------------------------------------------------------------------------------


Runner = Callable[[str], dict[str, Any]]


def _ours(model: str) -> Runner:
    """Our engine with the default settings, as a worker runs it: decode, chunked transcription,
    then (untimed, like a worker going idle) a spare ffmpeg started for the next note."""
    from bot.asr.recognizer import RecognizerConfig, load_recognizer
    from bot.asr.types import TextOptions
    from bot.audio.decode import AudioDecoder

    settings = default_settings()
    config = RecognizerConfig(device="cpu", chunk_seconds=settings.asr_chunk_seconds,
                              stride_seconds=settings.asr_stride_seconds)
    recognizer = load_recognizer(model, config, attention=settings.asr_attention)
    options = TextOptions(model=model)
    decoder = AudioDecoder(max_seconds=settings.max_audio_seconds, timeout=settings.ffmpeg_timeout_seconds,
                           memory_mb=settings.ffmpeg_memory_mb)

    def once(path: str) -> dict[str, Any]:
        started = time.perf_counter()
        audio = decoder.decode(Path(path))
        decoded = time.perf_counter() - started
        result = recognizer.transcribe(audio, options)
        finished = time.perf_counter()
        decoder.prepare()
        return {"total": finished - started, "decode": decoded, "model": result.processing_seconds}

    return once


def _seed(model: str) -> Runner:
    """The seed tutorial's method (librosa load, one forward pass) on the same weights."""
    from bench.seed_method import load_seed, seed_transcribe_loaded

    processor, loaded = load_seed(model)

    def once(path: str) -> dict[str, Any]:
        started = time.perf_counter()
        seed_transcribe_loaded(path, processor, loaded)
        return {"total": time.perf_counter() - started}

    return once


def task_engine(args: argparse.Namespace) -> None:
    """Warm file -> text times (decoding included) of the given methods, interleaved.

    With both methods in one process, each repetition runs ours then the seed's in turn,
    so load from other processes on a shared machine hits both alike and their ratio
    stays meaningful. Each run starts from an idle process (`IDLE_SECONDS` after the last),
    as a bot's worker usually meets a voice note; that idle time is when our worker has
    its spare ffmpeg start. Peak RSS is measured elsewhere, one method per process.
    """
    import torch

    torch.set_num_threads(args.threads)
    runners = {name: {"ours": _ours, "seed": _seed}[name](args.model) for name in args.methods.split(",")}
    for once in runners.values():
        once(args.warmup)
    results: dict[str, dict[str, list[dict[str, Any]]]] = {name: {} for name in runners}
    for path, reps in zip(args.files.split(","), map(int, args.reps.split(",")), strict=True):
        for _ in range(reps):
            for name, once in runners.items():
                time.sleep(IDLE_SECONDS)
                results[name].setdefault(path, []).append(once(path))
    _emit({"threads": torch.get_num_threads(), "runs": results})


def task_new_lengths(args: argparse.Namespace) -> None:
    """Model time of short notes that each come in a length of their own, as voice notes do, then
    of the same lengths again: the first pass pays for whatever the kernels build per new input
    shape (oneDNN's JIT code), the second does not. The notes are the first 3–12 s of one file."""
    import numpy as np
    import torch

    from bot.asr.recognizer import RecognizerConfig, load_recognizer
    from bot.asr.types import TextOptions

    torch.set_num_threads(args.threads)
    settings = default_settings()
    recognizer = load_recognizer(args.model, RecognizerConfig(device="cpu", chunk_seconds=settings.asr_chunk_seconds,
                                                              stride_seconds=settings.asr_stride_seconds),
                                 attention=settings.asr_attention)
    options = TextOptions(model=args.model)
    audio = _decode(args.file)
    lengths = np.random.default_rng(0).choice(np.arange(3 * 16000, 12 * 16000, 97), size=args.notes, replace=False)
    recognizer.transcribe(audio[: 2 * 16000], options)  # loading and first-call work, outside both passes
    passes = [[recognizer.transcribe(audio[:length], options).processing_seconds for length in lengths]
              for _ in range(2)]
    _emit({"audio_seconds": float(lengths.sum()) / 16000, "new": passes[0], "seen": passes[1]})


# ----------------------------------------------------------------------------------------
# cold_start: process start -> first worker ready
# ----------------------------------------------------------------------------------------


def task_cold_start(args: argparse.Namespace) -> None:
    """Start a 1-worker pool the way `python -m bot run` does and report seconds since the
    parent launched us (`--t0`, epoch).

    Marks: script started (interpreter and harness up), imports done (the bot's side: a
    one-worker pool imports no torch here, its worker loads the model), worker ready
    (start() returned), first 5 s note done.
    """
    marks = {"script_started": time.time() - args.t0}
    from bot.execution.local.forkserver import start_forkserver

    start_forkserver()  # as `python -m bot run` does, before its own heavy imports
    from bot.ops.startup_gc import collector_paused

    with collector_paused():  # as `python -m bot run` imports the bot
        from bot.execution.factory import create_transcriber

    marks["imports"] = time.time() - args.t0

    async def main() -> None:
        pool = create_transcriber(default_settings(asr_model=args.model, asr_workers=1))
        await pool.start()
        marks["worker_ready"] = time.time() - args.t0
        await pool.transcribe(_request(args.model, args.file))
        marks["first_result"] = time.time() - args.t0
        await pool.shutdown()

    asyncio.run(main())
    _emit(marks)


# ----------------------------------------------------------------------------------------
# memory: RSS and PSS of a pool after one job per worker
# ----------------------------------------------------------------------------------------


def _role(process: Any, parent_pid: int) -> str:
    if process.pid == parent_pid:
        return "parent"
    command = " ".join(process.cmdline())
    return "resource tracker" if "resource_tracker" in command else "worker"


def _memory_of(processes: list[Any], parent_pid: int) -> list[dict[str, Any]]:
    import psutil

    rows = []
    for process in processes:
        try:
            info = process.memory_full_info()
            rows.append({"pid": process.pid, "role": _role(process, parent_pid), "rss_mb": info.rss / 2**20,
                         "pss_mb": info.pss / 2**20, "uss_mb": info.uss / 2**20})
        except psutil.Error:  # a process that exited meanwhile has no memory to count
            continue
    return rows


def task_memory(args: argparse.Namespace) -> None:
    """N workers, one job each (N jobs submitted at once), then sum RSS and PSS of the tree.

    PSS divides every shared page among the processes mapping it, so the weights the
    workers share count once in the PSS total but N+1 times in the RSS total.
    """
    import psutil

    from bot.execution.factory import create_transcriber

    async def main() -> list[dict[str, Any]]:
        pool = create_transcriber(default_settings(asr_model=args.model, asr_workers=args.workers))
        await pool.start()
        await asyncio.gather(*(pool.transcribe(_request(args.model, args.file), owner=i) for i in range(args.workers)))
        me = psutil.Process()
        rows = _memory_of([me, *me.children(recursive=True)], me.pid)
        await pool.shutdown()
        return rows

    rows = asyncio.run(main())
    _emit({"processes": rows, "rss_mb": sum(r["rss_mb"] for r in rows),
           "pss_mb": sum(r["pss_mb"] for r in rows), "uss_mb": sum(r["uss_mb"] for r in rows)})


# ----------------------------------------------------------------------------------------
# throughput: many voice notes at once through the pool
# ----------------------------------------------------------------------------------------


def task_throughput(args: argparse.Namespace) -> None:
    """Submit every note at once (as paths, so workers decode) and time each to its result.

    Pool start-up is excluded; one short job per worker first warms each worker's
    kernels, as a bot that has served a message would be.
    """
    from bot.execution.factory import create_transcriber

    notes = json.loads(Path(args.notes).read_text())

    async def main() -> dict[str, Any]:
        settings = default_settings(asr_model=args.model, asr_workers=args.workers,
                                    asr_threads_per_worker=args.threads)
        pool = create_transcriber(settings)
        await pool.start()
        await asyncio.gather(*(pool.transcribe(_request(args.model, args.warmup), owner=i)
                               for i in range(args.workers)))

        async def job(index: int, path: str, submitted: float) -> dict[str, Any]:
            result = await pool.submit(_request(args.model, path), owner=index).result()
            return {"latency": time.perf_counter() - submitted, "duration": result.duration,
                    "model": result.processing_seconds, "decode": result.decode_seconds}

        began = time.perf_counter()
        jobs = [asyncio.ensure_future(job(i, note["path"], began)) for i, note in enumerate(notes)]
        done = await asyncio.gather(*jobs)
        wall = time.perf_counter() - began
        await pool.shutdown()
        return {"wall": wall, "jobs": done}

    _emit(asyncio.run(main()))


# ----------------------------------------------------------------------------------------
# variants: compute types, attention, compile, chunking, threads on one file
# ----------------------------------------------------------------------------------------


def _transcribe_ids(recognizer: Any, audio: Any, options: Any) -> tuple[Any, Any]:
    """Transcribe and also return the argmax ids of every kept frame.

    The engine does not expose its frame ids, so for this call the greedy decoder is one
    that also keeps the chunks' ids it is given to decode; the timed path is unchanged.
    """
    import numpy as np

    from bot.asr.ctc import decoders

    captured: list[Any] = []

    class Capturing(decoders.GreedyDecoder):
        def decode(self, frames: Any) -> Any:
            captured.extend(frames)
            return super().decode(frames)

    registered = decoders.DECODERS
    decoders.DECODERS = {**registered, "greedy": Capturing}
    try:
        result = recognizer.transcribe(audio, options)
    finally:
        decoders.DECODERS = registered
    return result, np.concatenate(captured) if captured else np.zeros(0, dtype=np.int64)


def _agreement(ids: Any, reference: Any) -> float:
    """Fraction of frames whose argmax id equals the reference's (a length change counts as misses)."""
    import numpy as np

    common = min(len(ids), len(reference))
    same = int(np.count_nonzero(ids[:common] == reference[:common]))
    return same / max(len(ids), len(reference), 1)


def _cpu_support() -> dict[str, Any]:
    """What torch sees of the CPU's bfloat16 support (private helpers, hence the getattr)."""
    import torch

    def probe(owner: Any, name: str) -> Any:
        function = getattr(owner, name, None)
        return bool(function()) if callable(function) else "unknown"

    return {"capability": torch.backends.cpu.get_cpu_capability(),
            "avx512_bf16": probe(torch.cpu, "_is_avx512_bf16_supported"),
            "amx_tile": probe(torch.cpu, "_is_amx_tile_supported"),
            "mkldnn_bf16": probe(torch.ops.mkldnn, "_is_mkldnn_bf16_supported")}


def _chunkings(chunk0: float, stride0: float, *, quick: bool) -> list[tuple[float, float]]:
    """Chunk lengths 10-40 s with strides of 2.5 s and of chunk/6, without duplicates or the default.

    --quick keeps the two neighbours of interest: 20 s (the previous default) and 40 s.
    """
    lengths = (20.0, 40.0) if quick else (10.0, 15.0, 20.0, 30.0, 40.0)
    strides = (2.5,) if quick else (2.5, None)
    chosen: list[tuple[float, float]] = []
    for chunk in lengths:
        for stride in (chunk / 6 if s is None else s for s in strides):
            if (chunk, round(stride, 3)) != (chunk0, round(stride0, 3)) and (chunk, stride) not in chosen:
                chosen.append((chunk, stride))
    return chosen


def task_variants(args: argparse.Namespace) -> None:
    """Every opt-in mode and chunking/thread choice against the fp32/sdpa default, same process.

    Each variant gets a freshly loaded model (bf16 converts modules in place) and one
    warm-up call (for torch.compile that call is the compilation, reported apart). Then
    every timed variant run is followed by a default run, and the variant's speed-up is
    its time against the mean of the default runs on either side of it: on a shared
    machine the load changes from minute to minute, and only neighbours see the same.
    """
    import dataclasses

    import torch

    from bot.asr.loading import load_model
    from bot.asr.recognizer import RecognizerConfig, build_recognizer
    from bot.asr.types import TextOptions

    settings = default_settings()
    chunk0, stride0 = settings.asr_chunk_seconds, settings.asr_stride_seconds
    options = TextOptions(model=args.model)
    base = RecognizerConfig(device="cpu", cpu_kernels=settings.asr_cpu_kernels, chunk_seconds=chunk0,
                            stride_seconds=stride0)
    support = _cpu_support()
    audio = _decode(args.file)
    duration = len(audio) / 16000
    warmup = audio[: int((chunk0 * 2 - stride0 * 2) * 16000)]

    def recognizer(attention: str = "sdpa", **config: Any) -> Any:
        return build_recognizer(load_model(args.model, attention=attention), dataclasses.replace(base, **config))

    default_model = load_model(args.model)
    default = build_recognizer(default_model, base)

    def chunked(chunk: float, stride: float) -> Any:
        """The default recognizer's model (float32, shared as is) with other chunking."""
        return build_recognizer(default_model, dataclasses.replace(base, chunk_seconds=chunk, stride_seconds=stride))

    default.transcribe(warmup, options)
    first, reference_ids = _transcribe_ids(default, audio, options)
    reference: dict[str, Any] = {"ids": reference_ids, "text": first.raw_text}
    default_times = [first.processing_seconds]
    results: list[dict[str, Any]] = [{
        "name": "fp32 sdpa tuned kernels (default)", "chunk": chunk0, "stride": stride0, "threads": args.threads,
        "times": [first.processing_seconds], "speedups": [1.0], "first_call": 0.0, "agreement": 1.0,
        "same_text": True,
    }]

    def measure(name: str, make: Callable[[], Any], *, threads: int = args.threads, one_pass: bool = False) -> None:
        """Build the variant's recognizer (dropped again afterwards), warm it up, time it."""
        torch.set_num_threads(threads)
        with warnings.catch_warnings(record=True) as caught:  # deprecations are findings here
            warnings.simplefilter("always")
            rec = make()
            started = time.perf_counter()
            rec.transcribe(warmup, options)  # a chunk longer than the warm-up is one chunk of its length
            first_call = time.perf_counter() - started
        chunk, stride = rec.config.chunk_seconds, rec.config.stride_seconds
        times, speedups = [], []
        for _ in range(args.reps):
            torch.set_num_threads(threads)
            result, ids = _transcribe_ids(rec, audio, options)
            torch.set_num_threads(args.threads)
            after = default.transcribe(audio, options).processing_seconds
            times.append(result.processing_seconds)
            speedups.append((default_times[-1] + after) / 2 / result.processing_seconds)
            default_times.append(after)
        entry = {"name": name, "chunk": chunk, "stride": round(stride, 3), "threads": threads, "times": times,
                 "speedups": speedups, "first_call": first_call,
                 "agreement": _agreement(ids, reference["ids"]), "same_text": result.raw_text == reference["text"],
                 "warnings": sorted({str(w.message).strip().splitlines()[0][:200] for w in caught})}
        if one_pass:
            reference["one_pass_ids"] = ids
        elif "one_pass_ids" in reference:
            entry["agreement_one_pass"] = _agreement(ids, reference["one_pass_ids"])
        results.append(entry)
        print(f"  variants: {name:<30} {statistics.median(speedups):.2f}x the default's speed, "
              f"agreement {entry['agreement']:.4f}", file=sys.stderr, flush=True)

    # --quick keeps the modes and the chunk lengths most likely to be chosen; torch.compile
    # (minutes of compiling on 2 cores) and the one-pass reference only run in full.
    if not args.quick:
        # The whole file in one pass (what the seed does): the reference for chunking's effect.
        measure("one pass (no chunking)", lambda: chunked(duration + 1.0, 0.0), one_pass=True)
    measure("cpu kernels stock (transformers as is)", lambda: recognizer(cpu_kernels="stock"))
    measure("attention eager", lambda: recognizer(attention="eager"))
    # Without native bf16 (AVX512-BF16 or AMX) torch emulates it: 0.04x the default's speed on a
    # Zen 3, ten minutes a run, and no one would choose it there.
    bf16 = native_bf16(support)
    if bf16:
        measure("bfloat16", lambda: recognizer(compute_type="bfloat16"))
    measure("int8 dynamic (Linear)", lambda: recognizer(compute_type="int8"))
    if not args.quick:
        measure("torch.compile", lambda: recognizer(compile=True))
        if bf16:
            measure("bfloat16 + torch.compile", lambda: recognizer(compute_type="bfloat16", compile=True))
    for chunk, stride in _chunkings(chunk0, stride0, quick=args.quick):
        measure(f"chunk {chunk:g} s / stride {stride:.2f} s", partial(chunked, chunk, stride))
    for threads in (1,) if args.quick else (1, 2 * args.threads):
        measure(f"threads {threads}", lambda: default, threads=threads)
    if "one_pass_ids" in reference:
        results[0]["agreement_one_pass"] = _agreement(reference["ids"], reference["one_pass_ids"])
    results[0]["times"] = default_times
    _emit({"duration": duration, "threads": args.threads, "variants": results, "cpu_support": support})


# ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.child")
    tasks = parser.add_subparsers(dest="task", required=True)
    engine = tasks.add_parser("engine")
    engine.add_argument("--methods", required=True, help="ours, seed or ours,seed")
    engine.add_argument("--files", required=True, help="comma-separated paths")
    engine.add_argument("--reps", required=True, help="comma-separated repetitions, one per file")
    engine.add_argument("--warmup", required=True)
    cold = tasks.add_parser("cold-start")
    cold.add_argument("--t0", type=float, required=True)
    memory = tasks.add_parser("memory")
    memory.add_argument("--workers", type=int, required=True)
    throughput = tasks.add_parser("throughput")
    throughput.add_argument("--workers", type=int, required=True)
    throughput.add_argument("--notes", required=True)
    throughput.add_argument("--warmup", required=True)
    new_lengths = tasks.add_parser("new-lengths")
    new_lengths.add_argument("--notes", type=int, required=True)
    variants = tasks.add_parser("variants")
    variants.add_argument("--reps", type=int, required=True)
    variants.add_argument("--quick", action="store_true")
    for sub in (engine, cold, memory, throughput, new_lengths, variants):
        sub.add_argument("--model", required=True)
    for sub in (engine, throughput, new_lengths, variants):
        sub.add_argument("--threads", type=int, required=True)
    for sub in (cold, memory, new_lengths, variants):
        sub.add_argument("--file", required=True)
    args = parser.parse_args(argv)
    handler = {"engine": task_engine, "cold-start": task_cold_start, "memory": task_memory,
               "throughput": task_throughput, "new-lengths": task_new_lengths, "variants": task_variants}[args.task]
    handler(args)


if __name__ == "__main__":
    main()
