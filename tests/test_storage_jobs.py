"""The durable job queue on real SQLite files: idempotent creation, life cycle, resume, completion."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import pytest

from bot.asr.types import TextOptions, Transcription
from bot.storage import CacheKey, JobStatus, Storage, StorageError
from tests.storage_support import (
    ALICE,
    GROUP,
    KEY,
    OPTIONS,
    START,
    FakeClock,
    job_request,
    job_status,
    make_transcription,
    raw,
)


async def test_create_is_idempotent_for_a_duplicated_update(storage: Storage) -> None:
    first, created = await storage.jobs.create(job_request(5))
    assert created and first.status is JobStatus.QUEUED and first.attempts == 0
    again, created_again = await storage.jobs.create(job_request(5))
    assert not created_again and again == first

    results = await asyncio.gather(*(storage.jobs.create(job_request(6)) for _ in range(20)))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert [job.message_id for job in await storage.jobs.unfinished()] == [5, 6]


async def test_job_life_cycle(storage: Storage, clock: FakeClock, db_path: Path) -> None:
    job, _ = await storage.jobs.create(job_request(1))
    assert (job.created_at, job.file_unique_id, job.mime_type) == (START, "uniq-1", "audio/ogg")
    clock.advance(1)
    running = await storage.jobs.mark_running(job.id)
    assert running is not None and running.status is JobStatus.RUNNING and running.attempts == 1
    assert running.updated_at == START + 1
    await storage.jobs.set_placeholder(job.id, 4242)
    assert await storage.jobs.finish(job.id, status="failed", error="decode error")
    with raw(db_path) as conn:
        row = conn.execute("SELECT status, error, placeholder_message_id FROM jobs WHERE id = ?", (job.id,))
        assert row.fetchone() == ("failed", "decode error", 4242)

    # A finished job is final: no late overwrite.
    assert not await storage.jobs.finish(job.id, status=JobStatus.DONE)
    assert job_status(db_path, job.id) == "failed"
    assert not await storage.jobs.finish(987_654, status=JobStatus.DONE)
    with pytest.raises(ValueError):
        await storage.jobs.finish(job.id, status=JobStatus.RUNNING)


async def test_mark_running_refuses_a_job_that_must_not_run(storage: Storage, db_path: Path) -> None:
    """None, and nothing changed, for a job cancelled while it waited, one whose row /forget
    deleted, and one already done or failed: the pipeline must then not run it."""
    cancelled, _ = await storage.jobs.create(job_request(1))
    assert await storage.jobs.finish(cancelled.id, status=JobStatus.CANCELLED)
    assert await storage.jobs.mark_running(cancelled.id) is None
    with raw(db_path) as conn:
        row = conn.execute("SELECT status, attempts FROM jobs WHERE id = ?", (cancelled.id,)).fetchone()
    assert row == ("cancelled", 0)

    forgotten, _ = await storage.jobs.create(job_request(2))
    await storage.preferences.forget_user(ALICE)
    assert await storage.jobs.mark_running(forgotten.id) is None
    assert job_status(db_path, forgotten.id) is None

    for final in (JobStatus.DONE, JobStatus.FAILED):
        job, _ = await storage.jobs.create(job_request(3 if final is JobStatus.DONE else 4))
        assert await storage.jobs.mark_running(job.id) is not None
        assert await storage.jobs.finish(job.id, status=final)
        assert await storage.jobs.mark_running(job.id) is None
        assert job_status(db_path, job.id) == final.value

    waiting, _ = await storage.jobs.create(job_request(5))
    started = await storage.jobs.mark_running(waiting.id)
    assert started is not None and started.id == waiting.id and started.status is JobStatus.RUNNING


async def test_unfinished_jobs_are_resumed_after_a_crash(
    storage: Storage, db_path: Path, tmp_path: Path, clock: FakeClock
) -> None:
    jobs = []
    for message_id in (1, 2, 3, 4):
        job, _ = await storage.jobs.create(job_request(message_id))
        jobs.append(job)
        clock.advance(1)
    await storage.jobs.mark_running(jobs[1].id)
    await storage.jobs.mark_running(jobs[2].id)
    await storage.jobs.finish(jobs[2].id, status=JobStatus.DONE)
    # The process dies here, jobs[1] still "running": what it leaves on disk is the file
    # and its un-checkpointed WAL, copied now, without the clean close.
    crashed = tmp_path / "after-crash" / "bot.sqlite3"
    crashed.parent.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{db_path}{suffix}", f"{crashed}{suffix}")
    assert Path(f"{crashed}-wal").stat().st_size > 0

    async with Storage.open(crashed, clock=clock) as reopened:
        pending = await reopened.jobs.unfinished()
        assert [(j.id, j.status) for j in pending] == [
            (jobs[0].id, JobStatus.QUEUED),
            (jobs[1].id, JobStatus.RUNNING),
            (jobs[3].id, JobStatus.QUEUED),
        ]
        resumed = await reopened.jobs.mark_running(jobs[1].id)
        assert resumed is not None and resumed.attempts == 2


async def test_complete_stores_the_transcript_for_the_jobs_message(storage: Storage, db_path: Path) -> None:
    job, _ = await storage.jobs.create(job_request(7, chat_id=GROUP))
    await storage.jobs.mark_running(job.id)
    key = CacheKey(TextOptions(model="some/model", language="en"), punctuation_model="models/punctuation")
    made = make_transcription("hello there", language="en")
    transcript_id = await storage.jobs.complete(job.id, made, key=key)
    assert transcript_id is not None

    (record,) = await storage.transcripts.export_user(ALICE)
    assert (record.id, record.chat_id, record.message_id, record.file_unique_id) == (
        transcript_id, GROUP, 7, "uniq-7",
    )
    assert record.transcription == made and record.transcription.language == "en"
    with raw(db_path) as conn:
        done = conn.execute("SELECT status, transcript_id FROM jobs WHERE id = ?", (job.id,)).fetchone()
        stored_key = conn.execute("SELECT text_options_key FROM transcripts WHERE id = ?", (transcript_id,)).fetchone()
    assert done == ("done", transcript_id)
    assert stored_key == (key.encode(),)


async def test_complete_is_atomic_and_loses_to_a_cancel(storage: Storage, db_path: Path) -> None:
    job, _ = await storage.jobs.create(job_request(1))
    await storage.jobs.mark_running(job.id)
    broken = Transcription(
        text=None,  # type: ignore[arg-type]  # violates NOT NULL: the insert fails
        raw_text="x",
        words=(),
        duration=1.0,
        model="m",
        options=OPTIONS,
        processing_seconds=0.1,
    )
    with pytest.raises(StorageError, match="NOT NULL"):
        await storage.jobs.complete(job.id, broken, key=KEY)
    assert job_status(db_path, job.id) == "running"
    assert await storage.transcripts.export_user(ALICE) == []

    cancelled, _ = await storage.jobs.create(job_request(2))
    await storage.jobs.finish(cancelled.id, status=JobStatus.CANCELLED)
    assert await storage.jobs.complete(cancelled.id, make_transcription("too late"), key=KEY) is None
    assert await storage.jobs.complete(987_654, make_transcription("gone"), key=KEY) is None
    assert job_status(db_path, cancelled.id) == "cancelled"
    assert await storage.transcripts.export_user(ALICE) == []
