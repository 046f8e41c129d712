"""The figures behind /stats, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.storage import Storage, StorageStats
from tests.storage_support import BOB, GROUP, FakeClock, add, job_request


async def test_stats(tmp_path: Path) -> None:
    clock = FakeClock()
    async with Storage.open(tmp_path / "bot.sqlite3", clock=clock) as storage:
        assert await storage.stats.summary() == StorageStats(0, 0, 0, 0.0, 0, 0, None)
        await storage.preferences.upsert_chat(GROUP, chat_type="group")
        await add(storage, "long ago", duration=100.0, processing_seconds=50.0)
        clock.advance(2 * 86400)
        await add(storage, "a", duration=10.0, processing_seconds=1.0)
        await add(storage, "b", duration=20.0, processing_seconds=4.0, user_id=BOB)
        await add(storage, "c", duration=30.0, processing_seconds=3.0)
        await add(storage, "cache copy", duration=30.0, processing_seconds=0.0)
        job, _ = await storage.jobs.create(job_request(9))
        await storage.jobs.create(job_request(10))
        await storage.jobs.mark_running(job.id)

        stats = await storage.stats.summary()
        assert (stats.users, stats.chats, stats.transcripts) == (2, 1, 5)
        assert stats.audio_seconds == 190.0
        assert (stats.queued_jobs, stats.running_jobs) == (1, 1)
        # 1/10, 4/20, 3/30: the long-ago one and the cache copy are left out.
        assert stats.median_real_time_factor_24h == pytest.approx(0.1)

        clock.advance(2 * 86400)
        assert (await storage.stats.summary()).median_real_time_factor_24h is None
