"""Prometheus metrics, served on /metrics by `bot.ops.health.HealthServer`.

They live in their own `REGISTRY` rather than prometheus-client's global one, so tests that
import the bot several times, or build several servers, each see only these series.
"""

from __future__ import annotations

from typing import Literal, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

Outcome = Literal["done", "cached", "failed", "cancelled", "refused", "timeout"]
OUTCOMES: tuple[Outcome, ...] = get_args(Outcome)

REGISTRY = CollectorRegistry()

JOBS = Counter(
    "jobs_total",
    "Transcription requests by how they ended.",
    ["outcome"],
    registry=REGISTRY,
)
QUEUE_DEPTH = Gauge("queue_depth", "Jobs waiting for a worker.", registry=REGISTRY)
AUDIO_SECONDS = Counter("audio_seconds_total", "Seconds of audio transcribed.", registry=REGISTRY)
REAL_TIME_FACTOR = Histogram(
    "real_time_factor",
    "Processing time divided by audio duration (below 1 is faster than real time).",
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 5.0),
    registry=REGISTRY,
)
JOB_LATENCY = Histogram(
    "job_latency_seconds",
    "Time from receiving an update to sending its final reply.",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800),
    registry=REGISTRY,
)
WORKER_RESTARTS = Counter("worker_restarts_total", "Worker processes restarted after dying.", registry=REGISTRY)
CACHE_HITS = Counter("cache_hits_total", "Files answered from an earlier transcript.", registry=REGISTRY)
STORAGE_ERRORS = Counter("storage_errors_total", "Failed database operations.", registry=REGISTRY)
WORKERS_READY = Gauge("workers_ready", "Worker processes with the model loaded.", registry=REGISTRY)

# Every outcome is exported from the start (as 0), so rate() and alerts work before the first
# failure instead of seeing the series appear out of nowhere.
for _outcome in OUTCOMES:
    JOBS.labels(outcome=_outcome)


def record_job(
    outcome: Outcome, *, latency_seconds: float, audio_seconds: float = 0.0, processing_seconds: float = 0.0
) -> None:
    """Account for one finished request: its outcome, its latency and, when audio was
    transcribed, the audio length and the real-time factor (processing / audio)."""
    JOBS.labels(outcome=outcome).inc()
    JOB_LATENCY.observe(latency_seconds)
    if audio_seconds > 0:
        AUDIO_SECONDS.inc(audio_seconds)
        if processing_seconds > 0:
            REAL_TIME_FACTOR.observe(processing_seconds / audio_seconds)


def exposition() -> bytes:
    """The registry in Prometheus text format, as served on /metrics."""
    return generate_latest(REGISTRY)
