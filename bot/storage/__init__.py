"""SQLite storage: one connection owner (`db`) and a repository per domain.

The composition root opens a `Storage` and hands it on; callers use its repositories
(`storage.jobs.create(...)`, `storage.transcripts.find_cached(file_unique_id, key)`) and catch
`StorageError`, the only exception a database failure raises. Methods return frozen
dataclasses, never rows, so callers cannot depend on column layout and results are safe
to pass between tasks. Times are UTC unix seconds (float). Text is returned raw: no
output format's markup is made here (search snippets mark matches with `MARK_OPEN` and
`MARK_CLOSE`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Coroutine, Generator
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from bot.storage.cache_key import CacheKey
from bot.storage.db import Database
from bot.storage.errors import StorageError
from bot.storage.jobs import Job, JobRequest, Jobs, JobStatus
from bot.storage.preferences import Preferences
from bot.storage.search import MARK_CLOSE, MARK_OPEN, Search, SearchHit
from bot.storage.stats import Stats, StorageStats
from bot.storage.transcripts import Page, TranscriptRecord, Transcripts, TranscriptSummary

__all__ = [
    "MARK_CLOSE",
    "MARK_OPEN",
    "CacheKey",
    "Job",
    "JobRequest",
    "JobStatus",
    "Page",
    "SearchHit",
    "Storage",
    "StorageError",
    "StorageStats",
    "TranscriptRecord",
    "TranscriptSummary",
]


class Storage:
    """The bot's database and its repositories. Create with `await Storage.open(path)` or
    `async with Storage.open(path) as storage:`."""

    def __init__(self, db: Database) -> None:
        """Private: use `Storage.open`."""
        self.path = db.path
        self._db = db
        self.jobs = Jobs(db)
        self.transcripts = Transcripts(db)
        self.search = Search(db)
        self.preferences = Preferences(db)
        self.stats = Stats(db)

    @classmethod
    def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> _StorageOpener:
        """Open (creating it and its folder if needed) and migrate the database at `path`.

        Await it, or use it as `async with Storage.open(path) as storage:`. `clock` returns
        UTC unix seconds; tests pass a fake one to control stored times. Raises
        `StorageError` if the file cannot be opened or migrated, or its schema is newer
        than this code.
        """
        return _StorageOpener(cls._open(path, clock))

    @classmethod
    async def _open(cls, path: Path, clock: Callable[[], float]) -> Storage:
        return cls(await Database.open(path, clock=clock))

    async def close(self) -> None:
        """Close the database; safe to call twice."""
        await self._db.close()

    async def ping(self) -> None:
        """Readiness check: raises `StorageError` unless the file can be locked for writing now."""
        await self._db.ping()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()


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
