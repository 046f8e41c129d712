"""The health server: liveness, readiness per check state, and the Prometheus exposition."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.ops import metrics
from bot.ops.health import HealthServer

METRIC_NAMES = {
    "jobs_total",
    "queue_depth",
    "audio_seconds_total",
    "real_time_factor",
    "job_latency_seconds",
    "worker_restarts_total",
    "cache_hits_total",
    "storage_errors_total",
    "workers_ready",
}

Checks = dict[str, bool]


@pytest.fixture
def checks() -> Checks:
    """What the readiness callback reports; tests flip entries."""
    return {"workers": True, "database": True, "telegram": True}


@pytest.fixture
async def base_url(checks: Checks) -> AsyncIterator[str]:
    async def readiness() -> Checks:
        return dict(checks)

    server = HealthServer("127.0.0.1", 0, readiness=readiness)
    await server.start()
    assert server.port > 0
    yield f"http://127.0.0.1:{server.port}"
    await server.stop()


async def _get(url: str) -> tuple[int, str, str]:
    async with aiohttp.ClientSession() as session, session.get(url) as response:
        return response.status, response.headers.get("Content-Type", ""), await response.text()


def _samples() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    exposition = metrics.exposition().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
    }


async def test_healthz_is_ok(base_url: str) -> None:
    assert await _get(f"{base_url}/healthz") == (200, "text/plain; charset=utf-8", "ok")


async def test_readyz_200_when_all_checks_pass(base_url: str) -> None:
    status, content_type, body = await _get(f"{base_url}/readyz")
    assert (status, content_type) == (200, "application/json; charset=utf-8")
    assert json.loads(body) == {"workers": True, "database": True, "telegram": True}


@pytest.mark.parametrize("failing", ["workers", "database", "telegram"])
async def test_readyz_503_when_any_check_fails(base_url: str, checks: Checks, failing: str) -> None:
    checks[failing] = False
    status, _, body = await _get(f"{base_url}/readyz")
    assert status == 503
    assert json.loads(body) == {**checks, failing: False}


async def test_readyz_503_when_the_check_itself_raises() -> None:
    async def broken() -> Checks:
        raise RuntimeError("database locked")

    server = HealthServer("127.0.0.1", 0, readiness=broken)
    await server.start()
    try:
        status, _, body = await _get(f"http://127.0.0.1:{server.port}/readyz")
    finally:
        await server.stop()
    assert (status, json.loads(body)) == (503, {"readiness_check": False})


async def test_metrics_lists_every_metric(base_url: str) -> None:
    status, content_type, body = await _get(f"{base_url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain")
    families = {family.name for family in text_string_to_metric_families(body)}
    # The text parser reports counters by their name without the `_total` suffix.
    assert {name.removesuffix("_total") for name in METRIC_NAMES} <= families
    for outcome in metrics.OUTCOMES:
        assert f'jobs_total{{outcome="{outcome}"}}' in body


Bump = Callable[[], None]


@pytest.mark.parametrize(
    ("bump", "sample"),
    [
        (lambda: metrics.WORKER_RESTARTS.inc(), ("worker_restarts_total", ())),
        (lambda: metrics.CACHE_HITS.inc(), ("cache_hits_total", ())),
        (lambda: metrics.STORAGE_ERRORS.inc(), ("storage_errors_total", ())),
        (lambda: metrics.QUEUE_DEPTH.inc(), ("queue_depth", ())),
        (lambda: metrics.WORKERS_READY.inc(), ("workers_ready", ())),
    ],
)
async def test_a_change_shows_up_in_the_scrape(base_url: str, bump: Bump, sample: tuple[str, tuple[()]]) -> None:
    async def scrape() -> float:
        _, _, body = await _get(f"{base_url}/metrics")
        return next(
            s.value
            for family in text_string_to_metric_families(body)
            for s in family.samples
            if (s.name, tuple(s.labels.items())) == sample
        )

    before = await scrape()
    bump()
    assert await scrape() == before + 1


async def test_record_job_updates_outcome_latency_audio_and_rtf() -> None:
    before = _samples()
    metrics.record_job("done", latency_seconds=3.0, audio_seconds=10.0, processing_seconds=2.0)
    metrics.record_job("refused", latency_seconds=0.2)
    after = _samples()

    def delta(name: str, **labels: str) -> float:
        key = (name, tuple(sorted(labels.items())))
        return after[key] - before.get(key, 0.0)

    assert delta("jobs_total", outcome="done") == 1
    assert delta("jobs_total", outcome="refused") == 1
    assert delta("jobs_total", outcome="failed") == 0
    assert delta("job_latency_seconds_count") == 2
    assert delta("job_latency_seconds_sum") == pytest.approx(3.2)
    assert delta("audio_seconds_total") == 10
    assert delta("real_time_factor_count") == 1
    assert delta("real_time_factor_sum") == pytest.approx(0.2)
    assert delta("real_time_factor_bucket", le="0.2") == 1


async def test_port_before_start_is_an_error() -> None:
    async def ready() -> Checks:
        return {}

    server = HealthServer("127.0.0.1", 0, readiness=ready)
    with pytest.raises(RuntimeError):
        _ = server.port


async def test_stop_releases_the_port(checks: Checks) -> None:
    async def ready() -> Checks:
        return checks

    first = HealthServer("127.0.0.1", 0, readiness=ready)
    await first.start()
    port = first.port
    await first.stop()
    second = HealthServer("127.0.0.1", port, readiness=ready)
    await second.start()
    try:
        assert second.port == port
    finally:
        await second.stop()

