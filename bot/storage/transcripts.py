"""Stored transcripts: the requester's history, the cache of re-sent files, export and retention.

Each row keeps the text, its language, the word timings and the options it was made with,
and its cache key (`CacheKey`: the text options the request asked for and the engine's
punctuation model), so a re-sent file is answered from the cache only with text made the
way the new request wants it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields
from typing import Any, Generic, TypeVar

from bot.asr.types import Transcription, TranscriptionOptions, Word
from bot.storage.cache_key import CacheKey
from bot.storage.db import Connection, Database, Row

T = TypeVar("T")

_PURGE_BATCH = 2000


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
    #: The language of the text, requested or detected (`Transcription.language`); None when unknown.
    language: str | None
    created_at: float
    #: The chat's stored title (see `Preferences.upsert_chat`), to name a group in the private
    #: view; None for private chats and for chats whose title is unknown or empty.
    chat_title: str | None


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
class Page(Generic[T]):
    """One page of a newest-first (or best-first) listing, and the number of items in all pages."""

    items: tuple[T, ...]
    total: int
    offset: int
    limit: int

    @property
    def has_more(self) -> bool:
        """Whether a page follows this one."""
        return self.offset + len(self.items) < self.total


class Transcripts:
    """The `transcripts` table, scoped to their owner except for the content-keyed cache."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def add(
        self,
        *,
        user_id: int,
        chat_id: int,
        message_id: int,
        file_unique_id: str,
        forward_origin: str | None,
        transcription: Transcription,
        key: CacheKey,
    ) -> int:
        """Store a transcript for `user_id`, made for a request with cache key `key`; returns its id.

        For work without a job row; a job's transcript is stored by `Jobs.complete`. Whether
        the user wants history kept (`Preferences.store_history`) is the caller's check.
        """
        now = self._db.clock()

        async def insert(tx: Connection) -> int:
            await ensure_user(tx, user_id, now)
            return await insert_transcript(
                tx,
                user_id=user_id,
                chat_id=chat_id,
                message_id=message_id,
                file_unique_id=file_unique_id,
                forward_origin=forward_origin,
                transcription=transcription,
                key=key,
                now=now,
            )

        return await self._db.write(insert)

    async def find_cached(self, file_unique_id: str, key: CacheKey) -> Transcription | None:
        """The newest transcript of this exact content made with the same cache key, by anyone.

        `file_unique_id` is the same for every forward of a file, so a re-forwarded note
        is answered without downloading it, unless it now asks for other text (another
        model, language, decoder, punctuation model...); the stored language comes with it.
        Sharing across users reveals nothing: the asker holds the same audio.
        `processing_seconds` is 0.0: stored as the new requester's copy it records
        (truthfully) that no model time was spent, and keeps cache hits out of the
        real-time-factor median in stats.
        """
        rows = await self._db.fetchall(
            "SELECT * FROM transcripts WHERE file_unique_id = ? AND text_options_key = ?"
            " ORDER BY created_at DESC, id DESC LIMIT 1",
            (file_unique_id, key.encode()),
        )
        return _transcription(rows[0], processing_seconds=0.0) if rows else None

    async def get(self, transcript_id: int, *, user_id: int, chat_id: int | None = None) -> TranscriptRecord | None:
        """The user's transcript with this id; None if it is someone else's (or, with `chat_id`,
        from another chat). Ownership is part of the query, not checked afterwards."""
        rows = await self._db.fetchall(
            f"SELECT *, {chat_title_column('transcripts')} FROM transcripts"
            " WHERE id = ? AND user_id = ? AND (? IS NULL OR chat_id = ?)",
            (transcript_id, user_id, chat_id, chat_id),
        )
        return _record(rows[0]) if rows else None

    async def history_page(
        self, user_id: int, *, chat_id: int | None, offset: int, limit: int
    ) -> Page[TranscriptSummary]:
        """One page of the user's transcripts, newest first.

        chat_id None lists all of them (the private-chat view); a chat id lists only
        this user's transcripts from that chat (the group view: never other members',
        never the user's private ones). The page and its total come from one statement,
        so they agree (see `page_of`).
        """
        check_page(offset, limit)
        where, params = owner_filter(user_id, chat_id)
        count = f"SELECT count(*) FROM transcripts WHERE {where}"
        # Deferred join: OFFSET is walked on the covering index alone and only the page's
        # rows are read from the table, so a page 100,000 deep still takes milliseconds.
        rows = await self._db.fetchall(
            f"SELECT ({count}) AS total, {SUMMARY_COLUMNS} FROM transcripts WHERE id IN ("
            f" SELECT id FROM transcripts WHERE {where}"
            "  ORDER BY created_at DESC, id DESC LIMIT ? OFFSET ?)"
            " ORDER BY created_at DESC, id DESC",
            (*params, *params, limit, offset),
        )
        items = tuple(TranscriptSummary(**summary_fields(row)) for row in rows)
        return await page_of(self._db, items, rows, count, params, offset=offset, limit=limit)

    async def export_user(self, user_id: int) -> list[TranscriptRecord]:
        """Everything stored for the user, oldest first (for /export)."""
        rows = await self._db.fetchall(
            f"SELECT *, {chat_title_column('transcripts')} FROM transcripts"
            " WHERE user_id = ? ORDER BY created_at, id",
            (user_id,),
        )
        return [_record(row) for row in rows]

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
        cutoff = self._db.clock() - days * 86400.0

        async def delete_batch(tx: Connection) -> int:
            return await tx.execute(
                "DELETE FROM transcripts WHERE id IN (SELECT id FROM transcripts WHERE created_at < ? LIMIT ?)",
                (cutoff, _PURGE_BATCH),
            )

        async def delete_finished_jobs(tx: Connection) -> None:
            await tx.execute(
                "DELETE FROM jobs WHERE status IN ('done', 'failed', 'cancelled') AND updated_at < ?", (cutoff,)
            )

        deleted = 0
        while True:
            batch = await self._db.write(delete_batch)
            deleted += batch
            if batch < _PURGE_BATCH:
                break
        await self._db.write(delete_finished_jobs)
        return deleted


# --- shared with jobs and search ----------------------------------------------------------


async def ensure_user(tx: Connection, user_id: int, now: float) -> None:
    """Create a bare users row if missing (transcripts and jobs reference it); keeps an existing one."""
    await tx.execute("INSERT INTO users (id, created_at) VALUES (?, ?) ON CONFLICT (id) DO NOTHING", (user_id, now))


async def insert_transcript(
    tx: Connection,
    *,
    user_id: int,
    chat_id: int,
    message_id: int,
    file_unique_id: str,
    forward_origin: str | None,
    transcription: Transcription,
    key: CacheKey,
    now: float,
) -> int:
    """Insert one transcript row (the user row must exist); returns its id."""
    row = await tx.fetchone(
        "INSERT INTO transcripts (user_id, chat_id, message_id, forward_origin, file_unique_id, duration, text,"
        " raw_text, words, model, language, options, text_options_key, processing_seconds, created_at)"
        " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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
            transcription.language,
            json.dumps(asdict(transcription.options), sort_keys=True),
            key.encode(),
            transcription.processing_seconds,
            now,
        ),
    )
    assert row is not None  # RETURNING yields the inserted row
    return int(row[0])


def chat_title_column(table: str) -> str:
    """The `chat_title` column, a primary-key lookup. Like snippet() it is computed only for rows
    that reach the result or, in search, enter the top-N sort (a few hundred for a common word,
    not every match), so pages cost what they did. NULLIF: an empty title is no title."""
    return f"(SELECT NULLIF(title, '') FROM chats WHERE chats.id = {table}.chat_id) AS chat_title"


_SUMMARY_FIELDS = tuple(f.name for f in fields(TranscriptSummary))


def summary_columns(table: str) -> str:
    """The SELECT list that `summary_fields` reads, for `table` (a name or an alias)."""
    return ", ".join(
        chat_title_column(table) if name == "chat_title" else f"{table}.{name}" for name in _SUMMARY_FIELDS
    )


SUMMARY_COLUMNS = summary_columns("transcripts")


def summary_fields(row: Row) -> dict[str, Any]:
    """A `TranscriptSummary`'s fields from a row selected with `summary_columns`."""
    return {name: row[name] for name in _SUMMARY_FIELDS}


def owner_filter(user_id: int, chat_id: int | None, *, table: str = "") -> tuple[str, tuple[int, ...]]:
    """WHERE clause scoping rows to one user, and to one chat when given.

    Two fixed shapes rather than `(? IS NULL OR chat_id = ?)`, so the planner picks the
    (user_id, chat_id, ...) index for the group view.
    """
    prefix = f"{table}." if table else ""
    if chat_id is None:
        return f"{prefix}user_id = ?", (user_id,)
    return f"{prefix}user_id = ? AND {prefix}chat_id = ?", (user_id, chat_id)


async def page_of(
    db: Database,
    items: tuple[T, ...],
    rows: list[Row],
    count: str,
    params: tuple[Any, ...],
    *,
    offset: int,
    limit: int,
) -> Page[T]:
    """A `Page` of `items`, made from `rows` that each carry the `total` of all pages.

    The total is a column of the page's own statement (an uncorrelated subquery SQLite runs
    once), so items and total come from one snapshot without a read transaction's extra
    round trips. Only a page past the end has no row to carry it: then `count` runs alone.
    """
    total = rows[0]["total"] if rows else await db.scalar(count, params)
    return Page(items, int(total), offset, limit)


def check_page(offset: int, limit: int) -> None:
    """Refuse a page that cannot exist (a caller bug, raised as ValueError)."""
    if offset < 0 or limit < 1:
        raise ValueError(f"bad page: offset={offset}, limit={limit}")


# --- rows to results ------------------------------------------------------------------------

_OPTION_FIELDS = frozenset(f.name for f in fields(TranscriptionOptions))


def _encode_words(words: Iterable[Word]) -> str:
    """Words as compact JSON `[[word, start, end], ...]`, far smaller than one object per word."""
    return json.dumps([[w.word, w.start, w.end] for w in words], ensure_ascii=False, separators=(",", ":"))


def _decode_words(data: str) -> tuple[Word, ...]:
    return tuple(Word(word, float(start), float(end)) for word, start, end in json.loads(data))


def _decode_options(data: str) -> TranscriptionOptions:
    """Options from JSON, ignoring keys this version no longer has (rows outlive code)."""
    raw: dict[str, Any] = json.loads(data)
    known: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in raw.items() if k in _OPTION_FIELDS}
    return TranscriptionOptions(**known)


def _transcription(row: Row, *, processing_seconds: float | None = None) -> Transcription:
    return Transcription(
        text=row["text"],
        raw_text=row["raw_text"],
        words=_decode_words(row["words"]),
        duration=row["duration"],
        model=row["model"],
        options=_decode_options(row["options"]),
        processing_seconds=row["processing_seconds"] if processing_seconds is None else processing_seconds,
        language=row["language"],
    )


def _record(row: Row) -> TranscriptRecord:
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
