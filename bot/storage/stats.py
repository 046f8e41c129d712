"""Totals and recent speed for the operators' /stats."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from bot.storage.db import Connection, Database


@dataclass(frozen=True)
class StorageStats:
    """Counts, and the median real-time factor (model time / audio duration) of transcriptions
    made by the model in the last 24 hours (cache copies excluded; None when there were none)."""

    users: int
    chats: int
    transcripts: int
    audio_seconds: float
    queued_jobs: int
    running_jobs: int
    median_real_time_factor_24h: float | None


class Stats:
    """Read-only figures over the whole database."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def summary(self) -> StorageStats:
        """Totals and the last 24 hours' median, from one snapshot."""
        since = self._db.clock() - 86400.0

        async def collect(db: Connection) -> StorageStats:
            counts = await db.fetchone(
                "SELECT (SELECT count(*) FROM users) AS users,"
                " (SELECT count(*) FROM chats) AS chats,"
                " (SELECT count(*) FROM transcripts) AS transcripts,"
                " (SELECT coalesce(sum(duration), 0.0) FROM transcripts) AS audio_seconds,"
                " (SELECT count(*) FROM jobs WHERE status = 'queued') AS queued,"
                " (SELECT count(*) FROM jobs WHERE status = 'running') AS running",
            )
            assert counts is not None  # an aggregate query always yields one row
            # Cache copies are stored with processing_seconds 0: no model ran for them.
            recent = await db.fetchall(
                "SELECT processing_seconds / duration FROM transcripts"
                " WHERE created_at >= ? AND processing_seconds > 0 AND duration > 0",
                (since,),
            )
            factors = [row[0] for row in recent]
            return StorageStats(
                users=counts["users"],
                chats=counts["chats"],
                transcripts=counts["transcripts"],
                audio_seconds=float(counts["audio_seconds"]),
                queued_jobs=counts["queued"],
                running_jobs=counts["running"],
                median_real_time_factor_24h=statistics.median(factors) if factors else None,
            )

        return await self._db.read(collect)
