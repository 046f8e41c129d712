"""The cluster path (`ASR_BACKEND=ray`) against the local worker pool, on this one machine.

Everything runs in one child interpreter (`python -m bench.ray --child`), which is both the
bot side and the Ray driver: a local Ray instance (2 CPUs, no dashboard) with Serve on
loopback, the voicebot application deployed on it, and the bot's real `HttpBackend` under
the real scheduler posting voice notes to it. Figures:

- added latency per job: the median of n sequential jobs on a 10 s note through the Ray path
  (1 replica, 2 CPUs) minus the same through the local pool (1 worker, 2 threads);
- throughput (audio s per wall s) of the short-note set submitted at once, with 1 replica of
  2 CPUs and 2 replicas of 1 CPU, against the local pool's better layout (1×2 or 2×1);
- memory (PSS, each shared page split among the processes that map it) of the Ray head
  processes (GCS, raylet, Serve controller, proxy, gateway) and of one model replica, against
  one local worker;
- Ray start-up: `ray.init`, then Serve and the application until its replica is ready.

Not run when the `cluster` extra (Ray) is not installed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    Options,
    Row,
    Section,
    child_env,
    median,
    not_run,
    run_child,
    voice_note,
    voice_note_set,
)

LATENCY_NOTE_SECONDS = 10
#: (replicas, CPUs each) of the Ray throughput runs on the 2 cores.
RAY_LAYOUTS = ((1, 2.0), (2, 1.0))
#: (workers, threads each) of the local pool's throughput runs; the better one is the reference.
LOCAL_LAYOUTS = ((1, 2), (2, 1))


def run(opts: Options) -> Section:
    if importlib.util.find_spec("ray") is None:
        return not_run("ray", "the cluster extra is not installed (pip install -e .[cluster])")
    reps = opts.reps(20, 5)
    notes = [{"path": str(path), "seconds": seconds} for path, seconds in voice_note_set(12 if opts.quick else 40)]
    notes_file = Path(tempfile.mkstemp(prefix="ray-notes-", suffix=".json")[1])
    notes_file.write_text(json.dumps(notes))
    print(f"ray: latency x{reps}, throughput on {len(notes)} notes", file=sys.stderr, flush=True)
    try:
        data = run_child([PYTHON, "-m", "bench.ray", "--child", "--model", str(opts.model_dir),
                          "--reps", str(reps), "--note", str(voice_note(LATENCY_NOTE_SECONDS)),
                          "--notes", str(notes_file)],
                         env=child_env(RAY_USAGE_STATS_ENABLED="0"), timeout=3600, stream_stderr=True).json()
    finally:
        notes_file.unlink(missing_ok=True)
    return _section(data, reps, len(notes))


def _section(data: dict[str, Any], reps: int, count: int) -> Section:
    section = Section(data=data)
    local_ms, ray_ms = data["local_latency_ms"], data["ray_latency_ms"]
    section.add(Row("ray", f"{LATENCY_NOTE_SECONDS} s note latency: local 1×2 / Ray 1 replica (median)",
                    f"{local_ms:.0f} / {ray_ms:.0f} ms", reps))
    section.add(Row("ray", "added latency per job (Ray − local)", f"{ray_ms - local_ms:+.0f} ms", reps))
    best = max(data["local_throughput"], key=lambda layout: layout["throughput"])
    for layout in data["local_throughput"]:
        section.add(Row("ray", f"local {layout['layout']}: audio-s/wall-s", f"{layout['throughput']:.2f}", count))
    for layout in data["ray_throughput"]:
        ratio = layout["throughput"] / best["throughput"]
        section.add(Row("ray", f"Ray {layout['layout']}: audio-s/wall-s (× local {best['layout']})",
                        f"{layout['throughput']:.2f} ({ratio:.2f}×)", count))
    memory = data["memory"]
    section.add(Row("ray", "PSS: Ray head processes / one replica / one local worker",
                    f"{memory['ray_head_mb']:.0f} / {memory['replica_mb']:.0f} / {memory['local_worker_mb']:.0f} MB",
                    1))
    section.add(Row("ray", "start-up: ray.init / Serve + app ready",
                    f"{data['startup']['ray_init_s']:.1f} / {data['startup']['serve_ready_s']:.1f} s", 1))
    return section


# ----------------------------------------------------------------------------------------
# The child: the bot side and the Ray driver in one interpreter
# ----------------------------------------------------------------------------------------


def _settings(model: str, **overrides: Any) -> Any:
    from bench.common import default_settings

    return default_settings(asr_model=model, asr_device="cpu", **overrides)


def _request(model: str, path: str) -> Any:
    from bot.asr.types import TextOptions
    from bot.execution.base import TranscriptionRequest

    return TranscriptionRequest(audio=Path(path), options=TextOptions(model=model))


async def _latencies(settings: Any, model: str, note: str, reps: int) -> list[float]:
    """Sequential jobs on one note (after one to warm up): submit to result, in ms."""
    from bot.execution.factory import create_transcriber

    transcriber = create_transcriber(settings)
    await transcriber.start()
    await transcriber.transcribe(_request(model, note))
    times = []
    for _ in range(reps):
        began = time.perf_counter()
        await transcriber.transcribe(_request(model, note))
        times.append((time.perf_counter() - began) * 1000)
    await transcriber.shutdown()
    return times


async def _throughput(settings: Any, model: str, notes: list[dict[str, Any]], layout: str) -> dict[str, Any]:
    """Every note submitted at once, each by its own user; audio seconds per wall second."""
    from bot.execution.factory import create_transcriber

    transcriber = create_transcriber(settings)
    await transcriber.start()
    await transcriber.transcribe(_request(model, notes[0]["path"]))
    began = time.perf_counter()
    results = await asyncio.gather(*(transcriber.transcribe(_request(model, note["path"]), owner=index)
                                     for index, note in enumerate(notes)))
    wall = time.perf_counter() - began
    await transcriber.shutdown()
    audio = sum(result.duration for result in results)
    print(f"ray: {layout}: {audio / wall:.2f} audio-s/wall-s", file=sys.stderr, flush=True)
    return {"layout": layout, "audio_seconds": audio, "wall_seconds": wall, "throughput": audio / wall}


def _pss_mb(process: Any) -> float:
    return float(process.memory_full_info().pss) / 2**20


async def _local_worker_pss(settings: Any, model: str, note: str) -> float:
    """PSS of one local worker after a job (the forkserver's children are the workers)."""
    import psutil

    from bot.execution.factory import create_transcriber

    transcriber = create_transcriber(settings)
    await transcriber.start()
    await transcriber.transcribe(_request(model, note))
    workers = [grandchild for child in psutil.Process().children() for grandchild in child.children()]
    pss = max(_pss_mb(worker) for worker in workers)
    await transcriber.shutdown()
    return pss


def _ray_memory() -> dict[str, float]:
    """PSS of every Ray process (all descendants of this driver): the replica's, and the rest's."""
    import psutil

    replica = head = 0.0
    for process in psutil.Process().children(recursive=True):
        try:
            cmdline = " ".join(process.cmdline())
            pss = _pss_mb(process)
        except psutil.Error:
            continue
        if "ServeReplica:" in cmdline and "Transcriber" in cmdline:
            replica = max(replica, pss)
        else:
            head += pss
    return {"ray_head_mb": head, "replica_mb": replica}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _child(args: argparse.Namespace) -> dict[str, Any]:
    model, note, reps = args.model, args.note, args.reps
    notes = json.loads(Path(args.notes).read_text())
    data: dict[str, Any] = {}

    local = _settings(model, asr_workers=1, asr_threads_per_worker=2)
    data["local_latencies_ms"] = asyncio.run(_latencies(local, model, note, reps))
    data["local_latency_ms"] = median(data["local_latencies_ms"])
    data["local_throughput"] = [
        asyncio.run(_throughput(_settings(model, asr_workers=w, asr_threads_per_worker=t), model, notes, f"{w}×{t}"))
        for w, t in LOCAL_LAYOUTS]
    local_worker = asyncio.run(_local_worker_pss(local, model, note))

    import ray
    from ray import serve

    from bot.execution.ray.app import deploy

    temp_dir = tempfile.mkdtemp(prefix="ray-bench-", dir="/tmp")
    began = time.perf_counter()
    ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir, _node_ip_address="127.0.0.1",
             log_to_driver=False, configure_logging=False)
    initialised = time.perf_counter()
    port = _free_port()
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        ray_throughput = []
        for replicas, cpus in RAY_LAYOUTS:
            deploy(_settings(model, asr_replica_cpus=cpus, asr_min_replicas=replicas, asr_max_replicas=replicas,
                             asr_max_queued_requests=-1), name="bench", route_prefix="/bench")
            remote = _settings(model, asr_backend="ray", asr_server_url=f"http://127.0.0.1:{port}/bench",
                               asr_remote_concurrency=2 * replicas)
            if not ray_throughput:
                data["startup"] = {"ray_init_s": initialised - began, "serve_ready_s": time.perf_counter() - initialised}
                data["ray_latencies_ms"] = asyncio.run(_latencies(remote, model, note, reps))
                data["ray_latency_ms"] = median(data["ray_latencies_ms"])
                data["memory"] = {**_ray_memory(), "local_worker_mb": local_worker}
            ray_throughput.append(asyncio.run(_throughput(
                remote, model, notes, f"{replicas} replica{'s' if replicas > 1 else ''} × {cpus:g} CPU")))
            serve.delete("bench")
        data["ray_throughput"] = ray_throughput
    finally:
        serve.shutdown()
        ray.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)
    return data


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.ray")
    parser.add_argument("--child", action="store_true", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--note", required=True)
    parser.add_argument("--notes", required=True)
    parser.add_argument("--reps", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    print(json.dumps(_child(args)), flush=True)


if __name__ == "__main__":
    main()
