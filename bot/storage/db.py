"""SQLite storage: users, chat settings, the durable job queue, transcripts and search.

One `Storage` object owns the database, the way datasette owns its: a single *write*
connection behind an `asyncio.Lock`, so write transactions never interleave (SQLite
allows one writer anyway; queuing in-process is cheaper than SQLITE_BUSY retries), and
a separate read-only connection for queries. In WAL mode a reader sees a consistent
committed snapshot and neither blocks nor is blocked by the writer, so `/history`
never observes half of a transaction and never waits behind a long purge.

Every public write method is one transaction, committed or rolled back as a whole
(`purge_older_than` is the documented exception: it commits in batches). Methods
return frozen dataclasses, never `sqlite3.Row`, so callers cannot depend on column
layout and results are safe to pass between tasks.

Times are UTC unix seconds (float). Text fields are returned raw, except
`SearchHit.snippet`, whose matches are wrapped in `MARK_OPEN`/`MARK_CLOSE`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
import statistics
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Generator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import asdict, dataclass, fields
from enum import StrEnum
from pathlib import Path
from types import TracebackType
from typing import Any, Generic, Self, TypeVar

import aiosqlite

from bot.asr.types import Transcription, TranscriptionOptions, Word
from bot.storage.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

#: RETURNING (used for atomic insert-or-get) arrived in SQLite 3.35.
MIN_SQLITE_VERSION = (3, 35, 0)

_BUSY_TIMEOUT_MS = 5000
# Reads through a memory map skip a copy per page; it roughly halves a search that
# checks tens of thousands of matches. Address space only, not memory in use.
_READER_MMAP_BYTES = 256 * 1024 * 1024
_PURGE_BATCH = 2000
_MAX_QUERY_TERMS = 16
_SNIPPET_TOKENS = 16
#: Snippet markers around each match: control characters never produced by the ASR model,
#: so a renderer can escape the text around them and then mark the matches its own way.
MARK_OPEN, MARK_CLOSE = "\x02", "\x03"
_WORD_CHAR = re.compile(r"\w")

T = TypeVar("T")


class StorageError(Exception):
    """The database cannot be used: unknown schema version, failed migration, not writable.

    Defined here rather than in `bot.errors` because it is an operator-facing start-up
    or readiness failure, not something explained to a chat user.
    """


class JobStatus(StrEnum):
    """Life cycle of a job: queued -> running -> done | failed | cancelled."""

    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


_UNFINISHED = (JobStatus.QUEUED, JobStatus.RUNNING)
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

    @property
    def finished(self) -> bool:
        """True once the job reached done, failed or cancelled (it will not run again)."""
        return self.status in _FINISHED


@dataclass(frozen=True)
class TranscriptSummary:
    """A history entry: enough to list it, without the word timings (kept out for speed)."""

    id: int
    user_id: int
    chat_id: int
    message_id: int
    forward_origin: str | None
    duration: float
    text: str
    created_at: float
    #: The chat's stored title (see `upsert_chat`), to name a group in the private view;
    #: None for private chats and for chats whose title is unknown or empty.
    chat_title: str | None


@dataclass(frozen=True)
class SearchHit(TranscriptSummary):
    """A search result.

    `snippet` is the matched text around the hits, raw, each matched term between
    `MARK_OPEN` and `MARK_CLOSE`. `score` is bm25 (lower is a better match).
    """

    snippet: str
    score: float


@dataclass(frozen=True)
class TranscriptRecord:
    """A stored transcript in full, as it was made (words with timings, options)."""

    id: int
    user_id: int
    chat_id: int
    message_id: int
    file_unique_id: str
    forward_origin: str | None
    created_at: float
    transcription: Transcription
    #: As in `TranscriptSummary`.
    chat_title: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for /export."""
        data = asdict(self)
        data["transcription"] = self.transcription.to_dict()
        return data


@dataclass(frozen=True)
class CachedTranscript:
    """The newest transcript of a file's content, to answer a re-sent note without the model.

    `transcription.processing_seconds` is 0.0: storing it as the new requester's copy
    records (truthfully) that no model time was spent, and keeps cache hits out of the
    processing-time medians in `stats`.
    """

    transcript_id: int
    created_at: float
    transcription: Transcription


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a newest-first listing, and the number of items in all pages."""

    items: tuple[T, ...]
    total: int
    offset: int
    limit: int

    @property
    def has_more(self) -> bool:
        """Whether a page follows this one."""
        return self.offset + len(self.items) < self.total


@dataclass(frozen=True)
class StorageStats:
    """Counts for /stats and metrics. The medians cover transcriptions made by the model
    in the last 24 hours (cache copies excluded) and are None when there were none."""

    users: int
    chats: int
    transcripts: int
    audio_seconds: float
    queued_jobs: int
    running_jobs: int
    median_processing_seconds_24h: float | None
    median_duration_24h: float | None
    median_real_time_factor_24h: float | None


class Storage:
    """The bot's database. Create with `await Storage.open(path)` or `async with Storage.open(path)`."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        clock: Callable[[], float],
    ) -> None:
        """Private: use `Storage.open`, which configures and migrates the connections."""
        self.path = path
        self._writer = writer
        self._reader = reader
        self._clock = clock
        self._write_lock = asyncio.Lock()
        self._closed = False

    # --- life cycle -------------------------------------------------------------------

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> _StorageOpener:
        """Open (creating it and its folder if needed) and migrate the database at `path`.

        Await it, or use it as `async with Storage.open(path) as storage:`.
        `clock` returns UTC unix seconds; tests pass a fake one to control `created_at`.
        Raises `StorageError` if the file's schema is newer than this code.
        """
        path = Path(path).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        return _StorageOpener(cls._open(path, clock))

    @classmethod
    async def _open(cls, path: Path, clock: Callable[[], float]) -> Storage:
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StorageError(
                f"SQLite {sqlite3.sqlite_version} is too old; "
                f"{'.'.join(map(str, MIN_SQLITE_VERSION))} or newer is required"
            )
        writer = await aiosqlite.connect(path, isolation_level=None)
        reader: aiosqlite.Connection | None = None
        try:
            writer.row_factory = sqlite3.Row
            mode = await _scalar(writer, "PRAGMA journal_mode = WAL")
            if str(mode).lower() != "wal":
                log.warning("SQLite refused WAL mode for %s (got %r); readers will block writers", path, mode)
            await writer.execute("PRAGMA synchronous = NORMAL")
            await writer.execute("PRAGMA foreign_keys = ON")
            await writer.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            await _migrate(writer, path)
            # Opened after migrating, so the file and its WAL index already exist.
            reader = await aiosqlite.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
            reader.row_factory = sqlite3.Row
            await reader.execute(f"PRAGMA busy_timeout = {_BUSY_TIMEOUT_MS}")
            await reader.execute(f"PRAGMA mmap_size = {_READER_MMAP_BYTES}")
        except BaseException:
            if reader is not None:
                await reader.close()
            await writer.close()
            raise
        return cls(path, writer, reader, clock)

    async def close(self) -> None:
        """Close both connections; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        try:
            await self._reader.close()
            async with self._write_lock:
                # Recommended before closing a long-lived connection: refreshes planner stats.
                await self._writer.execute("PRAGMA optimize")
        finally:
            await self._writer.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """One write transaction under the write lock: committed, or rolled back on any error.

        BEGIN IMMEDIATE takes SQLite's write lock up front, so a transaction that reads
        then writes cannot fail half-way with SQLITE_BUSY against another process. BEGIN
        is inside the `try`: a task cancelled while it is queued must still roll back, or
        the connection would stay in a transaction for the next writer.
        """
        async with self._write_lock:
            try:
                await self._writer.execute("BEGIN IMMEDIATE")
                yield self._writer
                await self._writer.execute("COMMIT")
            except BaseException:
                await _rollback_quietly(self._writer)
                raise

    async def ping(self) -> None:
        """Readiness check: prove the file can be locked for writing right now.

        Raises `StorageError` if it cannot (disk gone read-only, another process
        holding the write lock past the busy timeout, connection closed).
        """
        try:
            async with self._write_lock:
                try:
                    await self._writer.execute("BEGIN IMMEDIATE")
                finally:
                    await _rollback_quietly(self._writer)
        except (sqlite3.Error, ValueError) as exc:
            raise StorageError(f"database {self.path} is not writable: {exc}") from exc

    async def pragmas(self) -> dict[str, int | str]:
        """The write connection's settings and schema version, for diagnostics and tests."""
        names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout", "user_version")
        async with self._write_lock:
            return {name: await _scalar(self._writer, f"PRAGMA {name}") for name in names}

    # --- users and chats --------------------------------------------------------------

    async def upsert_user(
        self, user_id: int, *, username: str | None = None, first_name: str | None = None
    ) -> None:
        """Record the user's current Telegram profile (None clears a removed username)."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO users (id, username, first_name, created_at) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET"
                " username = excluded.username, first_name = excluded.first_name",
                (user_id, username, first_name, self._clock()),
            )

    async def upsert_chat(self, chat_id: int, *, chat_type: str, title: str | None = None) -> None:
        """Record a chat's type and title, keeping its settings."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO chats (id, type, title) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET type = excluded.type, title = excluded.title",
                (chat_id, chat_type, title),
            )

    async def get_auto_transcribe(self, chat_id: int) -> bool:
        """Whether voice notes in the chat are transcribed unasked (True for unknown chats)."""
        value = await _scalar(self._reader, "SELECT auto_transcribe FROM chats WHERE id = ?", (chat_id,))
        return True if value is None else bool(value)

    async def set_auto_transcribe(self, chat_id: int, enabled: bool) -> None:
        """Turn automatic transcription in a chat on or off."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO chats (id, auto_transcribe) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET auto_transcribe = excluded.auto_transcribe",
                (chat_id, int(enabled)),
            )

    async def get_store_history(self, user_id: int) -> bool:
        """Whether the user's transcripts are kept (True for unknown users).

        Storage does not enforce it: the caller decides not to call `add_transcript`.
        """
        value = await _scalar(self._reader, "SELECT store_history FROM users WHERE id = ?", (user_id,))
        return True if value is None else bool(value)

    async def set_store_history(self, user_id: int, enabled: bool) -> None:
        """Opt the user in or out of history. Opting out keeps what is stored; see `forget_user`."""
        async with self._transaction() as db:
            await db.execute(
                "INSERT INTO users (id, store_history, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET store_history = excluded.store_history",
                (user_id, int(enabled), self._clock()),
            )

    # --- jobs -------------------------------------------------------------------------

    async def create_job(self, request: JobRequest) -> tuple[Job, bool]:
        """Record an accepted file before any work starts; returns (job, created).

        Telegram may deliver an update twice (webhook retries, restarts): the second
        call finds the job for the same (chat_id, message_id) and returns it with
        created=False, in whatever state it is, so the file is processed once.
        """
        now = self._clock()
        async with self._transaction() as db:
            await _ensure_user(db, request.user_id, now)
            rows = await _fetchall(
                db,
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
            if rows:
                return _job(rows[0]), True
            existing = await _fetchall(
                db,
                "SELECT * FROM jobs WHERE chat_id = ? AND message_id = ?",
                (request.chat_id, request.message_id),
            )
            return _job(existing[0]), False

    async def mark_job_running(self, job_id: int) -> Job | None:
        """Mark a queued (or resumed running) job as running and count the attempt.

        Returns the updated job, or None if it is gone or already finished (cancelled
        while waiting, or forgotten): then it must not run.
        """
        async with self._transaction() as db:
            rows = await _fetchall(
                db,
                "UPDATE jobs SET status = 'running', attempts = attempts + 1, updated_at = ?"
                " WHERE id = ? AND status IN ('queued', 'running') RETURNING *",
                (self._clock(), job_id),
            )
        return _job(rows[0]) if rows else None

    async def set_job_placeholder(self, job_id: int, message_id: int) -> None:
        """Remember the "transcribing..." message, so a resumed job edits it instead of posting anew."""
        async with self._transaction() as db:
            await db.execute(
                "UPDATE jobs SET placeholder_message_id = ?, updated_at = ? WHERE id = ?",
                (message_id, self._clock(), job_id),
            )

    async def finish_job(
        self,
        job_id: int,
        *,
        status: JobStatus | str,
        error: str | None = None,
        transcript_id: int | None = None,
    ) -> bool:
        """Move an unfinished job to done, failed or cancelled.

        A finished job is never changed again (a late "done" must not overwrite a
        cancel), so this returns False when the job was already finished or is gone.
        """
        final = JobStatus(status)
        if final not in _FINISHED:
            raise ValueError(f"finish_job needs done, failed or cancelled, not {final!s}")
        async with self._transaction() as db:
            cursor = await db.execute(
                "UPDATE jobs SET status = ?, error = ?, transcript_id = ?, updated_at = ?"
                " WHERE id = ? AND status IN ('queued', 'running')",
                (final.value, error, transcript_id, self._clock(), job_id),
            )
            return cursor.rowcount == 1

    async def get_job(self, job_id: int) -> Job | None:
        """The job with this id, if it exists."""
        rows = await _fetchall(self._reader, "SELECT * FROM jobs WHERE id = ?", (job_id,))
        return _job(rows[0]) if rows else None

    async def unfinished_jobs(self) -> list[Job]:
        """Jobs queued or running (left running by a crash), oldest first: resumed at start-up."""
        rows = await _fetchall(
            self._reader,
            "SELECT * FROM jobs WHERE status IN ('queued', 'running') ORDER BY created_at, id",
        )
        return [_job(row) for row in rows]

    async def count_jobs(self, status: JobStatus | str) -> int:
        """How many jobs are in this state."""
        value = await _scalar(
            self._reader, "SELECT count(*) FROM jobs WHERE status = ?", (JobStatus(status).value,)
        )
        return int(value)

    # --- transcripts ------------------------------------------------------------------

    async def add_transcript(
        self,
        *,
        user_id: int,
        chat_id: int,
        message_id: int,
        file_unique_id: str,
        forward_origin: str | None,
        transcription: Transcription,
    ) -> int:
        """Store a transcript for `user_id`; returns its id.

        Whether the user wants history kept (`get_store_history`) is the caller's check.
        """
        now = self._clock()
        async with self._transaction() as db:
            await _ensure_user(db, user_id, now)
            return await _insert_transcript(
                db, user_id, chat_id, message_id, file_unique_id, forward_origin, transcription, now
            )

    async def complete_job_with_transcript(
        self,
        job_id: int,
        *,
        user_id: int,
        chat_id: int,
        message_id: int,
        file_unique_id: str,
        forward_origin: str | None,
        transcription: Transcription,
    ) -> int | None:
        """Store the transcript and mark the job done in one transaction; returns the transcript id.

        Both happen or neither, so a crash in between cannot leave a finished job without
        its transcript (resumed and transcribed twice) or the reverse. Returns None and
        stores nothing when the job is gone or already finished: the user ran /forget
        or cancelled while it ran, and that wish wins over the result.
        """
        now = self._clock()
        async with self._transaction() as db:
            status = await _scalar(db, "SELECT status FROM jobs WHERE id = ?", (job_id,))
            if status is None or JobStatus(status) in _FINISHED:
                return None
            await _ensure_user(db, user_id, now)
            transcript_id = await _insert_transcript(
                db, user_id, chat_id, message_id, file_unique_id, forward_origin, transcription, now
            )
            await db.execute(
                "UPDATE jobs SET status = 'done', error = NULL, transcript_id = ?, updated_at = ?"
                " WHERE id = ?",
                (transcript_id, now, job_id),
            )
            return transcript_id

    async def find_cached(self, file_unique_id: str) -> CachedTranscript | None:
        """The newest transcript of this exact content, by anyone, or None.

        `file_unique_id` is the same for every forward of a file, so a re-forwarded note
        is answered without downloading it. Sharing across users reveals nothing: the
        asker holds the same audio.
        """
        rows = await _fetchall(
            self._reader,
            "SELECT * FROM transcripts WHERE file_unique_id = ? ORDER BY created_at DESC, id DESC LIMIT 1",
            (file_unique_id,),
        )
        if not rows:
            return None
        row = rows[0]
        return CachedTranscript(
            transcript_id=row["id"],
            created_at=row["created_at"],
            transcription=_transcription(row, processing_seconds=0.0),
        )

    async def get_transcript(
        self, transcript_id: int, *, user_id: int, chat_id: int | None = None
    ) -> TranscriptRecord | None:
        """The user's transcript with this id; None if it is someone else's (or, with `chat_id`,
        from another chat). Ownership is part of the query, not checked afterwards."""
        rows = await _fetchall(
            self._reader,
            f"SELECT *, {_CHAT_TITLE.format(table='transcripts')} FROM transcripts"
            " WHERE id = ? AND user_id = ? AND (? IS NULL OR chat_id = ?)",
            (transcript_id, user_id, chat_id, chat_id),
        )
        return _record(rows[0]) if rows else None

    async def delete_transcript(self, transcript_id: int, *, user_id: int) -> bool:
        """Delete one of the user's transcripts; False if there is no such transcript of theirs."""
        async with self._transaction() as db:
            cursor = await db.execute(
                "DELETE FROM transcripts WHERE id = ? AND user_id = ?", (transcript_id, user_id)
            )
            return cursor.rowcount == 1

    async def history_page(
        self, user_id: int, *, chat_id: int | None, offset: int, limit: int
    ) -> Page[TranscriptSummary]:
        """One page of the user's transcripts, newest first.

        chat_id None lists all of them (the private-chat view); a chat id lists only
        this user's transcripts from that chat (the group view: never other members',
        never the user's private ones).
        """
        _check_page(offset, limit)
        where, params = _owner_filter(user_id, chat_id)
        total = await _scalar(self._reader, f"SELECT count(*) FROM transcripts WHERE {where}", params)
        # Deferred join: OFFSET is walked on the covering index alone and only the page's
        # rows are read from the table, so a page 100,000 deep still takes milliseconds.
        rows = await _fetchall(
            self._reader,
            f"SELECT {_SUMMARY_COLUMNS} FROM transcripts WHERE id IN ("
            f" SELECT id FROM transcripts WHERE {where}"
            "  ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?)"
            " ORDER BY created_at DESC, id DESC",
            (*params, limit, offset),
        )
        return Page(tuple(_summary(row) for row in rows), int(total), offset, limit)

    async def search(
        self, user_id: int, query: str, *, chat_id: int | None, offset: int, limit: int
    ) -> Page[SearchHit]:
        """Full-text search in the user's transcripts (same scoping as `history_page`),
        best match first (bm25), each with an HTML snippet.

        The query is user text, never FTS5 syntax: see `fts_query`. A query with no
        searchable word gives an empty page. Cost grows with the number of matches, since
        all are ranked: well under a millisecond for a rare word, about 0.1 s for a word
        in 33,000 of one user's transcripts (bench/bench_history.py).
        """
        _check_page(offset, limit)
        match = fts_query(query)
        if match is None:
            return Page((), 0, offset, limit)
        where, params = _owner_filter(user_id, chat_id, table="t")
        # CROSS JOIN fixes the loop order: the index yields the matches, and each is
        # checked for ownership by primary key. Left to itself the planner may walk the
        # user's 100,000 rows and probe the index once per row: seconds instead of ms.
        join = (
            "FROM transcripts_fts CROSS JOIN transcripts AS t ON t.id = transcripts_fts.rowid"
            f" WHERE transcripts_fts MATCH ? AND {where}"
        )
        total = await _scalar(self._reader, f"SELECT count(*) {join}", (match, *params))
        rows = await _fetchall(
            self._reader,
            f"SELECT {_SUMMARY_COLUMNS_T},"
            " snippet(transcripts_fts, 0, ?, ?, '…', ?) AS snippet,"
            " bm25(transcripts_fts) AS score"
            f" {join} ORDER BY score, t.created_at DESC, t.id DESC LIMIT ? OFFSET ?",
            (MARK_OPEN, MARK_CLOSE, _SNIPPET_TOKENS, match, *params, limit, offset),
        )
        hits = tuple(
            SearchHit(**_summary_fields(row), snippet=row["snippet"], score=row["score"])
            for row in rows
        )
        return Page(hits, int(total), offset, limit)

    async def export_user(self, user_id: int) -> list[TranscriptRecord]:
        """Everything stored for the user, oldest first (for /export)."""
        rows = await _fetchall(
            self._reader,
            f"SELECT *, {_CHAT_TITLE.format(table='transcripts')} FROM transcripts"
            " WHERE user_id = ? ORDER BY created_at, id",
            (user_id,),
        )
        return [_record(row) for row in rows]

    async def forget_user(self, user_id: int) -> int:
        """Delete every row about the user: transcripts (and their index entries), jobs,
        settings, the user row and their private chat's row. Returns transcripts deleted.

        The private chat's id equals the user's id in Telegram (group ids are negative),
        so its settings row is theirs too. One transaction: all of it or nothing.
        """
        async with self._transaction() as db:
            await db.execute("DELETE FROM jobs WHERE user_id = ? OR chat_id = ?", (user_id, user_id))
            cursor = await db.execute("DELETE FROM transcripts WHERE user_id = ?", (user_id,))
            deleted = cursor.rowcount
            await db.execute("DELETE FROM users WHERE id = ?", (user_id,))
            await db.execute("DELETE FROM chats WHERE id = ?", (user_id,))
            return deleted

    async def purge_older_than(self, days: float) -> int:
        """Retention: delete transcripts older than `days` (and finished jobs as old);
        returns transcripts deleted.

        Commits every few thousand rows, so a first purge of a large history does not
        hold the write lock (and every new job) for seconds; a crash part-way leaves a
        partial purge, which the next run completes. `days` must be positive: the
        setting's 0 ("keep forever") must never reach here and delete everything.
        """
        if days <= 0:
            raise ValueError("days must be positive")
        cutoff = self._clock() - days * 86400.0
        deleted = 0
        while True:
            async with self._transaction() as db:
                cursor = await db.execute(
                    "DELETE FROM transcripts WHERE id IN"
                    " (SELECT id FROM transcripts WHERE created_at < ? LIMIT ?)",
                    (cutoff, _PURGE_BATCH),
                )
            deleted += cursor.rowcount
            if cursor.rowcount < _PURGE_BATCH:
                break
        async with self._transaction() as db:
            await db.execute(
                "DELETE FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND updated_at < ?",
                (cutoff,),
            )
        return deleted

    async def stats(self) -> StorageStats:
        """Totals and the last 24 hours' medians (see `StorageStats`)."""
        (counts,) = await _fetchall(
            self._reader,
            "SELECT (SELECT count(*) FROM users) AS users,"
            " (SELECT count(*) FROM chats) AS chats,"
            " (SELECT count(*) FROM transcripts) AS transcripts,"
            " (SELECT coalesce(sum(duration), 0.0) FROM transcripts) AS audio_seconds,"
            " (SELECT count(*) FROM jobs WHERE status = 'queued') AS queued,"
            " (SELECT count(*) FROM jobs WHERE status = 'running') AS running",
        )
        recent = await _fetchall(
            self._reader,
            "SELECT processing_seconds, duration FROM transcripts"
            " WHERE created_at >= ? AND processing_seconds > 0",
            (self._clock() - 86400.0,),
        )
        processing = [row["processing_seconds"] for row in recent]
        durations = [row["duration"] for row in recent]
        factors = [row["processing_seconds"] / row["duration"] for row in recent if row["duration"] > 0]
        return StorageStats(
            users=counts["users"],
            chats=counts["chats"],
            transcripts=counts["transcripts"],
            audio_seconds=float(counts["audio_seconds"]),
            queued_jobs=counts["queued"],
            running_jobs=counts["running"],
            median_processing_seconds_24h=_median(processing),
            median_duration_24h=_median(durations),
            median_real_time_factor_24h=_median(factors),
        )


class _StorageOpener:
    """What `Storage.open` returns: awaitable, or usable directly in `async with`
    (which closes the storage on exit), like `aiosqlite.connect`."""

    def __init__(self, opening: Coroutine[Any, Any, Storage]) -> None:
        self._opening = opening
        self._storage: Storage | None = None

    def __await__(self) -> Generator[Any, None, Storage]:
        return self._opening.__await__()

    async def __aenter__(self) -> Storage:
        self._storage = await self._opening
        return self._storage

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._storage is not None:
            await self._storage.close()


# --- user text to FTS5 -------------------------------------------------------------------


def fts_query(text: str) -> str | None:
    """Turn what a user typed into a safe FTS5 query, or None if nothing is searchable.

    Each whitespace-separated term becomes a quoted phrase (inner quotes doubled), so
    FTS5 operators and syntax in user text (`AND`, `NEAR(`, `"`, `-`, `:`) are plain
    words and can never raise a syntax error. Terms are ANDed. A trailing `*` is kept
    as a prefix search (`transcr*`). Terms without a letter or digit are dropped, and
    at most 16 terms are used.
    """
    phrases: list[str] = []
    for term in text.split():
        prefix = term.endswith("*")
        core = term.rstrip("*")
        if not _WORD_CHAR.search(core):
            continue
        phrases.append('"' + core.replace('"', '""') + '"' + ("*" if prefix else ""))
        if len(phrases) == _MAX_QUERY_TERMS:
            break
    return " ".join(phrases) or None


# --- helpers -----------------------------------------------------------------------------

_SUMMARY_FIELDS = tuple(f.name for f in fields(TranscriptSummary))
#: The `chat_title` column, a primary-key lookup. Like snippet() it is computed only for rows
#: that reach the result or, in search, enter the top-N sort (a few hundred for a common
#: word, not every match), so pages cost what they did. NULLIF: an empty title is no title.
_CHAT_TITLE = "(SELECT NULLIF(title, '') FROM chats WHERE chats.id = {table}.chat_id) AS chat_title"


def _summary_columns(table: str) -> str:
    """The SELECT list that `_summary_fields` reads, for `table` (a name or an alias)."""
    return ", ".join(
        _CHAT_TITLE.format(table=table) if name == "chat_title" else f"{table}.{name}" for name in _SUMMARY_FIELDS
    )


_SUMMARY_COLUMNS = _summary_columns("transcripts")
_SUMMARY_COLUMNS_T = _summary_columns("t")
_OPTION_FIELDS = frozenset(f.name for f in fields(TranscriptionOptions))


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION in one transaction, or refuse a newer file.

    The version is read inside BEGIN IMMEDIATE so two processes starting together
    cannot both apply the same migration.
    """
    try:
        await db.execute("BEGIN IMMEDIATE")
        current = int(await _scalar(db, "PRAGMA user_version"))
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"{path}: database schema version {current} is newer than this bot supports"
                f" ({SCHEMA_VERSION}); upgrade the bot"
            )
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            try:
                for statement in migration.statements:
                    await db.execute(statement)
            except sqlite3.Error as exc:
                raise StorageError(
                    f"{path}: migration {migration.version} ({migration.name}) failed: {exc}"
                ) from exc
            log.info(
                "database %s migrated to schema version %d (%s)", path, migration.version, migration.name
            )
        if current < SCHEMA_VERSION:
            await db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        await db.execute("COMMIT")
    except BaseException:
        await _rollback_quietly(db)
        raise


async def _rollback_quietly(db: aiosqlite.Connection) -> None:
    """Roll back, tolerating "no transaction is active".

    Always issued rather than checking `in_transaction`: if the caller was cancelled
    while BEGIN was still queued on the connection's thread, the flag is not yet set,
    but the ROLLBACK queued after it will still undo it.
    """
    with suppress(sqlite3.OperationalError):
        await db.execute("ROLLBACK")


async def _fetchall(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
    """Run a statement to completion and return its rows.

    Always fetching everything (never a half-read cursor) matters for the reader: an
    open cursor would pin its WAL snapshot and hide later commits.
    """
    return list(await db.execute_fetchall(sql, tuple(params)))


async def _scalar(db: aiosqlite.Connection, sql: str, params: Iterable[Any] = ()) -> Any:
    """The first column of the first row, or None when there is no row."""
    rows = await _fetchall(db, sql, params)
    return rows[0][0] if rows else None


async def _ensure_user(db: aiosqlite.Connection, user_id: int, now: float) -> None:
    """Create a bare users row if missing (transcripts and jobs reference it); keeps an existing one."""
    await db.execute(
        "INSERT INTO users (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (user_id, now)
    )


async def _insert_transcript(
    db: aiosqlite.Connection,
    user_id: int,
    chat_id: int,
    message_id: int,
    file_unique_id: str,
    forward_origin: str | None,
    transcription: Transcription,
    now: float,
) -> int:
    rows = await _fetchall(
        db,
        "INSERT INTO transcripts (user_id, chat_id, message_id, forward_origin, file_unique_id,"
        " duration, text, raw_text, words, model, options, processing_seconds, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
        (
            user_id,
            chat_id,
            message_id,
            forward_origin,
            file_unique_id,
            transcription.duration,
            transcription.text,
            transcription.raw_text,
            _encode_words(transcription.words),
            transcription.model,
            json.dumps(asdict(transcription.options), sort_keys=True),
            transcription.processing_seconds,
            now,
        ),
    )
    return int(rows[0][0])


def _encode_words(words: Iterable[Word]) -> str:
    """Words as compact JSON `[[word, start, end], ...]`, far smaller than one object per word."""
    return json.dumps([[w.word, w.start, w.end] for w in words], ensure_ascii=False, separators=(",", ":"))


def _decode_words(data: str) -> tuple[Word, ...]:
    return tuple(Word(word, float(start), float(end)) for word, start, end in json.loads(data))


def _decode_options(data: str) -> TranscriptionOptions:
    """Options from JSON, ignoring keys this version no longer has (rows outlive code)."""
    raw = json.loads(data)
    return TranscriptionOptions(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in _OPTION_FIELDS}
    )


def _transcription(row: sqlite3.Row, *, processing_seconds: float | None = None) -> Transcription:
    return Transcription(
        text=row["text"],
        raw_text=row["raw_text"],
        words=_decode_words(row["words"]),
        duration=row["duration"],
        model=row["model"],
        options=_decode_options(row["options"]),
        processing_seconds=row["processing_seconds"] if processing_seconds is None else processing_seconds,
    )


def _record(row: sqlite3.Row) -> TranscriptRecord:
    return TranscriptRecord(
        id=row["id"],
        user_id=row["user_id"],
        chat_id=row["chat_id"],
        message_id=row["message_id"],
        file_unique_id=row["file_unique_id"],
        forward_origin=row["forward_origin"],
        created_at=row["created_at"],
        transcription=_transcription(row),
        chat_title=row["chat_title"],
    )


def _summary_fields(row: sqlite3.Row) -> dict[str, Any]:
    return {name: row[name] for name in _SUMMARY_FIELDS}


def _summary(row: sqlite3.Row) -> TranscriptSummary:
    return TranscriptSummary(**_summary_fields(row))


def _job(row: sqlite3.Row) -> Job:
    values = {f.name: row[f.name] for f in fields(Job)}
    values["status"] = JobStatus(values["status"])
    return Job(**values)


def _owner_filter(user_id: int, chat_id: int | None, *, table: str = "") -> tuple[str, tuple[int, ...]]:
    """WHERE clause scoping rows to one user, and to one chat when given.

    Two fixed shapes rather than `(? IS NULL OR chat_id = ?)`, so the planner picks the
    (user_id, chat_id, ...) index for the group view.
    """
    prefix = f"{table}." if table else ""
    if chat_id is None:
        return f"{prefix}user_id = ?", (user_id,)
    return f"{prefix}user_id = ? AND {prefix}chat_id = ?", (user_id, chat_id)


def _check_page(offset: int, limit: int) -> None:
    if offset < 0 or limit < 1:
        raise ValueError(f"bad page: offset={offset}, limit={limit}")


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None
