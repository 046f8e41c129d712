"""Two Ray nodes on loopback (`ray.cluster_utils.Cluster`), the replica's node removed mid-job: a child process.

`python -m tests.ray_two_nodes MODEL AUDIO` starts a head node with no CPU for replicas and two
worker nodes with one CPU each, so the one model replica (one CPU) runs on one of the workers and
the other has room for it. The bot side is the real `HttpBackend` under the real `Scheduler`. At
the job's first progress report the replica's node is removed (`Cluster.remove_node`); Serve
starts the replica again on the other node, and the job must be retried there and answered once.
Prints one JSON object on stdout for tests/test_ray_two_nodes.py to assert on.

It runs in a process of its own because a process holds one Ray: the test session's shared
instance (`tests.ray_cluster`) lives in the pytest process. Every node is started on 127.0.0.1,
and what the cluster's processes listen on is reported so the test can check that none listens
beyond loopback.
"""

from __future__ import annotations

import os

# Before Ray is imported. No usage report from tests; and "localhost" stays loopback: with cluster mode
# on (Linux's default), `ray.init(address="127.0.0.1:...")` swaps the address for the machine's
# outward IP (`ray._private.services.resolve_ip_for_localhost`), where nothing listens.
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"

import asyncio
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import ray
from ray import serve
from ray.cluster_utils import Cluster

from bot.asr.types import Progress, TextOptions, Transcription
from bot.errors import VoiceBotError
from bot.execution.backend import Attempt, BackendEvents
from bot.execution.base import TranscriptionRequest
from bot.execution.ray.app import deploy
from bot.execution.remote.backend import HttpBackend
from bot.execution.scheduler import Scheduler
from bot.settings import load_settings
from tests.ray_cluster import TEST_SETTINGS, free_port

APP = "two-nodes"
#: What every node gets: loopback only, a small object store, no dashboard.
NODE_ARGS: dict[str, Any] = {
    "node_ip_address": "127.0.0.1",
    "object_store_memory": 80 * 2**20,
    "include_dashboard": False,
}
#: A worker node: room for exactly one replica.
WORKER_ARGS: dict[str, Any] = {**NODE_ARGS, "num_cpus": 1}
JOB_TIMEOUT_SECONDS = 120.0


class ReportLog:
    """Forwards the backend's reports to the scheduler and keeps a list of them: (kind, attempt number or 0)."""

    def __init__(self, scheduler: BackendEvents) -> None:
        self.scheduler = scheduler
        self.reports: list[tuple[str, int]] = []

    def worker_ready(self, slot: int) -> None:
        self.scheduler.worker_ready(slot)

    def job_progress(self, slot: int, attempt: Attempt, progress: Progress) -> None:
        self.reports.append(("progress", attempt.number))
        self.scheduler.job_progress(slot, attempt, progress)

    def job_done(self, slot: int, attempt: Attempt, result: Transcription) -> None:
        self.reports.append(("done", attempt.number))
        self.scheduler.job_done(slot, attempt, result)

    def job_failed(self, slot: int, attempt: Attempt, error: VoiceBotError) -> None:
        self.reports.append(("failed", attempt.number))
        self.scheduler.job_failed(slot, attempt, error)

    def worker_lost(self, slot: int, reason: str) -> None:
        self.reports.append(("lost", 0))
        self.scheduler.worker_lost(slot, reason)


class RecordingBackend(HttpBackend):
    """The real `HttpBackend`, its reports going through a `ReportLog` on their way to the scheduler."""

    log: ReportLog

    async def open(self, events: BackendEvents) -> None:
        self.log = ReportLog(events)
        await super().open(self.log)


def replica_node(cluster: Cluster) -> Any:
    """The worker node whose raylet is the parent of the application's model replica process."""
    for process in psutil.process_iter(["cmdline", "ppid"]):
        if any(f"ServeReplica:{APP}:Transcriber" in part for part in process.info["cmdline"] or ()):
            for node in cluster.worker_nodes:
                if node.all_processes["raylet"][0].process.pid == process.info["ppid"]:
                    return node
    raise RuntimeError("the model replica runs on no worker node")


def listeners() -> set[tuple[str, str, int]]:
    """What this process and its descendants (every node's processes) listen on: (process, address, port)."""
    me = psutil.Process()
    found = set()
    for process in (me, *me.children(recursive=True)):
        try:
            name = process.name()
            connections = process.net_connections(kind="inet")
        except psutil.Error:  # it ended meanwhile
            continue
        found |= {(name, conn.laddr.ip, conn.laddr.port) for conn in connections if conn.status == psutil.CONN_LISTEN}
    return found


async def transcribe_while_moving(cluster: Cluster, url: str, audio: Path, model: str) -> dict[str, Any]:
    """Send the job; at its first progress report remove the node its replica runs on."""
    backend = RecordingBackend(url, slots=1, max_audio_seconds=3600.0, max_file_mb=20.0)
    scheduler = Scheduler(backend, job_timeout=JOB_TIMEOUT_SECONDS)
    await scheduler.start()
    moved: dict[str, float] = {}
    moving: list[asyncio.Task[None]] = []
    started = time.monotonic()

    async def move() -> None:
        victim = replica_node(cluster)
        moved["removing_at"] = time.monotonic() - started
        await asyncio.to_thread(cluster.remove_node, victim)
        moved["removed_at"] = time.monotonic() - started

    def on_progress(progress: Progress) -> None:
        if not moving:
            moved["progress_at"] = time.monotonic() - started
            moving.append(asyncio.get_running_loop().create_task(move()))

    request = TranscriptionRequest(audio=audio, options=TextOptions(model=model))
    try:
        result = await asyncio.wait_for(scheduler.transcribe(request, on_progress=on_progress), JOB_TIMEOUT_SECONDS)
        moved["answered_at"] = time.monotonic() - started
        await asyncio.gather(*moving)
        await asyncio.sleep(2.0)  # a late duplicate would arrive now
    finally:
        await scheduler.shutdown()
    reports = backend.log.reports
    return {
        "text": result.text,
        "duration": result.duration,
        "reports": [report for i, report in enumerate(reports) if i == 0 or reports[i - 1] != report],
        "results_of_attempts": [number for kind, number in reports if kind == "done"],
        "seconds": moved,
    }


def main(model: Path, audio: Path) -> dict[str, Any]:
    temp_dir = Path(tempfile.mkdtemp(prefix="ray2-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    # Cluster() records the head's address in $RAY_TMPDIR/ray (default /tmp/ray, absent on a fresh machine).
    os.environ["RAY_TMPDIR"] = str(temp_dir)
    (temp_dir / "ray").mkdir()
    cluster = Cluster(initialize_head=True, head_node_args={**NODE_ARGS, "num_cpus": 0, "temp_dir": str(temp_dir)})
    try:
        for _ in range(2):
            cluster.add_node(**WORKER_ARGS)
        ray.init(address=cluster.address, _node_ip_address="127.0.0.1", log_to_driver=False, configure_logging=False)
        port = free_port()
        serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
        settings = load_settings(**{"asr_model": str(model), **TEST_SETTINGS, "asr_replica_cpus": 1.0})
        deploy(settings, name=APP, route_prefix=f"/{APP}")
        listening = listeners()
        outcome = asyncio.run(transcribe_while_moving(cluster, f"http://127.0.0.1:{port}/{APP}", audio,
                                                      settings.asr_model))
        listening |= listeners()
        return {**outcome, "listening": sorted(listening), "nodes_alive": sum(node["Alive"] for node in ray.nodes())}
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]))))
