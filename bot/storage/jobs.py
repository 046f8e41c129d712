"""The durable job queue: every accepted file is a row before any work starts.

A row outlives the process, so a job that was queued or running when the bot stopped is
resumed at start-up, and a Telegram update delivered twice makes one job, not two.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from enum import StrEnum

from bot.asr.types import Transcription
from bot.storage.cache_key import CacheKey
from bot.storage.db import Connection, Database, Row
from bot.storage.transcripts import ensure_user, insert_transcript


class JobStatus(StrEnum):
    """Life cycle of a job: queued -> running -> done | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


_FINISHED = (JobStatus.DONE, JobStatus.FAILED, JobStatus.CANCELLED)


@dataclass(frozen=True)
class JobRequest:
    """What the bot knows about an incoming file when it accepts it, before any work."""

    chat_id: int
    message_id: int
    user_id: int
    chat_type: str
    file_id: str
    file_unique_id: str
    media_kind: str
    file_size: int | None = None
    duration: float | None = None
    mime_type: str | None = None
    forward_origin: str | None = None


@dataclass(frozen=True)
class Job:
    """A row of the durable queue."""

    id: int
    chat_id: int
    message_id: int
    user_id: int
    chat_type: str
    file_id: str
    file_unique_id: str
    file_size: int | None
    duration: float | None
    media_kind: str
    mime_type: str | None
    forward_origin: str | None
    placeholder_message_id: int | None
    status: JobStatus
    attempts: int
    error: str | None
    transcript_id: int | None
    created_at: float
    updated_at: float


_JOB_FIELDS = tuple(f.name for f in fields(Job))


def _job(row: Row) -> Job:
    values = {name: row[name] for name in _JOB_FIELDS}
    values["status"] = JobStatus(values["status"])
    return Job(**values)


class Jobs:
    """The `jobs` table: create, run, finish, resume."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def create(self, request: JobRequest) -> tuple[Job, bool]:
        """Record an accepted file before any work starts; returns (job, created).

        Telegram may deliver an update twice (webhook retries, restarts): the second
        call finds the job for the same (chat_id, message_id) and returns it with
        created=False, in whatever state it is, so the file is processed once.
        """
        now = self._db.clock()

        async def insert_or_get(tx: Connection) -> tuple[Job, bool]:
            await ensure_user(tx, request.user_id, now)
            inserted = await tx.fetchone(
                "INSERT INTO jobs (chat_id, message_id, user_id, chat_type, file_id, file_unique_id,"
                " file_size, duration, media_kind, mime_type, forward_origin, created_at, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (chat_id, message_id) DO NOTHING RETURNING *",
                (
                    request.chat_id,
                    request.message_id,
                    request.user_id,
                    request.chat_type,
                    request.file_id,
                    request.file_unique_id,
                    request.file_size,
                    request.duration,
                    request.media_kind,
                    request.mime_type,
                    request.forward_origin,
                    now,
                    now,
                ),
            )
            if inserted is not None:
                return _job(inserted), True
            existing = await tx.fetchone(
                "SELECT * FROM jobs WHERE chat_id = ? AND message_id = ?", (request.chat_id, request.message_id)
            )
            assert existing is not None  # the conflict that skipped the insert is this row
            return _job(existing), False

        return await self._db.write(insert_or_get)

    async def mark_running(self, job_id: int) -> Job | None:
        """Mark a queued (or resumed running) job as running and count the attempt.

        Returns the updated job, or None when it must not run: it is gone (forgotten) or
        already finished (cancelled while it waited). Nothing is changed then.
        """
        now = self._db.clock()

        async def start(tx: Connection) -> Row | None:
            return await tx.fetchone(
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = ?"
                " WHERE id = ? AND status IN ('queued', 'running') RETURNING *",
                (now, job_id),
            )

        row = await self._db.write(start)
        return None if row is None else _job(row)

    async def set_placeholder(self, job_id: int, message_id: int) -> None:
        """Remember the "transcribing..." message, so a resumed job edits it instead of posting anew."""
        now = self._db.clock()

        async def update(tx: Connection) -> None:
            await tx.execute(
                "UPDATE jobs SET placeholder_message_id = ?, updated_at = ? WHERE id = ?", (message_id, now, job_id)
            )

        await self._db.write(update)

    async def finish(self, job_id: int, *, status: JobStatus | str, error: str | None = None) -> bool:
        """Move an unfinished job to done, failed or cancelled.

        A finished job is never changed again (a late "done" must not overwrite a
        cancel), so this returns False when the job was already finished or is gone.
        """
        final = JobStatus(status)
        if final not in _FINISHED:
            raise ValueError(f"finish needs done, failed or cancelled, not {final!s}")
        now = self._db.clock()

        async def update(tx: Connection) -> int:
            return await tx.execute(
                "UPDATE jobs SET status = ?, error = ?, updated_at = ? WHERE id = ? AND status IN ('queued', 'running')",
                (final.value, error, now, job_id),
            )

        return await self._db.write(update) == 1

    async def complete(self, job_id: int, transcription: Transcription, *, key: CacheKey) -> int | None:
        """Store the job's transcript and mark the job done in one transaction; returns the transcript id.

        The transcript belongs to the job's requester, chat and message (read from its row),
        and is keyed for the cache on `key` (the request's text options and the engine's punctuation model).
        Both happen or neither, so a crash in between cannot leave a finished job without
        its transcript (resumed and transcribed twice) or the reverse. Returns None and
        stores nothing when the job is gone or already finished: the user ran /forget
        or cancelled while it ran, and that wish wins over the result.
        """
        now = self._db.clock()

        async def store_and_finish(tx: Connection) -> int | None:
            row = await tx.fetchone(
                "SELECT user_id, chat_id, message_id, file_unique_id, forward_origin FROM jobs"
                " WHERE id = ? AND status IN ('queued', 'running')",
                (job_id,),
            )
            if row is None:
                return None
            transcript_id = await insert_transcript(
                tx,
                user_id=row["user_id"],
                chat_id=row["chat_id"],
                message_id=row["message_id"],
                file_unique_id=row["file_unique_id"],
                forward_origin=row["forward_origin"],
                transcription=transcription,
                key=key,
                now=now,
            )
            await tx.execute(
                "UPDATE jobs SET status = 'done', error = NULL, transcript_id = ?, updated_at = ? WHERE id = ?",
                (transcript_id, now, job_id),
            )
            return transcript_id

        return await self._db.write(store_and_finish)

    async def unfinished(self) -> list[Job]:
        """Jobs queued or running (left running by a crash), oldest first: resumed at start-up."""
        rows = await self._db.fetchall(
            "SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at, id"
        )
        return [_job(row) for row in rows]
