"""Health, readiness and Prometheus metrics of the running bot, scraped over HTTP."""

from __future__ import annotations

import json
import re
import socket
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import wait_answer, wait_ready
from tests.fake_telegram import FakeTelegram

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def sample(metrics: str, name: str) -> float:
    """The value of one sample line, e.g. `jobs_total{outcome="done"}`."""
    match = re.search(rf"^{re.escape(name)} ([0-9.e+-]+)$", metrics, re.MULTILINE)
    assert match, f"{name} not in metrics"
    return float(match.group(1))


async def test_health_readiness_and_metrics_follow_the_jobs(
    telegram: FakeTelegram, start_bot, speech_ogg: Path, tmp_path: Path
) -> None:
    port = free_port()
    bot = start_bot(METRICS_PORT=str(port), LOG_FORMAT="json")
    await wait_ready(telegram, bot)
    base = f"http://127.0.0.1:{port}"
    assert get(f"{base}/healthz")[0] == 200
    status, body = get(f"{base}/readyz")
    assert status == 200 and json.loads(body) == {"workers": True, "database": True, "telegram": True}

    before = get(f"{base}/metrics")[1]
    file = telegram.add_file(speech_ogg.read_bytes())
    for user in (1, 2):  # the second is the same content: a cache hit
        update = telegram.send_voice(user, user, file, duration=5)
        await wait_answer(telegram, user, update["message"]["message_id"])
    after = get(f"{base}/metrics")[1]
    (tmp_path / "scrape.txt").write_text(after)

    assert sample(after, 'jobs_total{outcome="done"}') == sample(before, 'jobs_total{outcome="done"}') + 1
    assert sample(after, 'jobs_total{outcome="cached"}') == sample(before, 'jobs_total{outcome="cached"}') + 1
    assert sample(after, "cache_hits_total") == 1
    assert sample(after, "audio_seconds_total") == pytest.approx(5, abs=1.5)
    assert sample(after, "job_latency_seconds_count") == 2
    assert sample(after, "real_time_factor_count") == 1
    assert sample(after, "workers_ready") == 1

    # Every job is logged once as a JSON line with its outcome; the token never appears.
    assert await bot.stop() == 0
    lines = [json.loads(line) for line in bot.log.splitlines() if line.startswith("{")]
    outcomes = sorted(line["outcome"] for line in lines if line.get("job_id") and "outcome" in line)
    assert outcomes == ["cached", "done"]
    assert telegram.token.split(":")[1] not in bot.log
