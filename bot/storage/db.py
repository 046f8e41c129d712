"""The one owner of the SQLite connections: opening, migrating, and running reads and writes.

Like datasette's `Database`, one object owns the file: a single *write* connection behind
an `asyncio.Lock`, so write transactions never interleave (SQLite allows one writer
anyway; queuing in-process is cheaper than SQLITE_BUSY retries), and a separate read-only
connection for queries. In WAL mode a reader sees a consistent committed snapshot and
neither blocks nor is blocked by the writer, so `/history` never observes half of a
transaction and never waits behind a long purge.

Each write is one function run inside one transaction (`write`), committed or rolled back
as a whole. A read is one statement (its own snapshot), or several that must agree run
in one read transaction (`read`), so they see one snapshot. The repositories (`jobs`,
`transcripts`, `search`, `preferences`, `stats`) hold the domain queries and go through
these two doors only; every driver failure leaves here as `StorageError`.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from contextlib import asynccontextmanager, contextmanager, suppress
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from bot.storage.errors import StorageError
from bot.storage.schema import MIGRATIONS, SCHEMA_VERSION

log = logging.getLogger(__name__)

#: RETURNING (used for atomic insert-or-get) arrived in SQLite 3.35.
MIN_SQLITE_VERSION = (3, 35, 0)

_BUSY_TIMEOUT_MS = 5000
# Reads through a memory map skip a copy per page; it roughly halves a search that
# checks tens of thousands of matches. Address space only, not memory in use.
_READER_MMAP_BYTES = 256 * 1024 * 1024

#: A result row: columns by name (`row["id"]`) or position. Repositories turn rows into
#: frozen dataclasses, so nothing above storage depends on column layout.
Row = sqlite3.Row

T = TypeVar("T")

# aiosqlite re-raises sqlite3's exceptions, and raises ValueError on a closed connection.
_DRIVER_ERRORS = (sqlite3.Error, ValueError)


@contextmanager
def _wrapped(context: str | None = None) -> Iterator[None]:
    """Turn a driver failure into `StorageError` with the driver's message (after `context`,
    when given), keeping the driver's exception as the cause."""
    try:
        yield
    except _DRIVER_ERRORS as exc:
        raise StorageError(str(exc) if context is None else f"{context}: {exc}") from exc


class Connection:
    """Statements on one connection, as `write` and `read` functions receive it.

    Every call runs its statement to completion and returns plain values: never a
    half-read cursor, which on the reader would pin its WAL snapshot and hide later commits.
    """

    def __init__(self, connection: aiosqlite.Connection) -> None:
        self._connection = connection

    async def execute(self, sql: str, params: Iterable[Any] = ()) -> int:
        """Run a statement; returns the number of rows it changed."""
        cursor = await self._connection.execute(sql, tuple(params))
        try:
            return cursor.rowcount
        finally:
            await cursor.close()

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """Run a statement and return all its rows."""
        return list(await self._connection.execute_fetchall(sql, tuple(params)))

    async def fetchone(self, sql: str, params: Iterable[Any] = ()) -> Row | None:
        """The first row, or None."""
        rows = await self.fetchall(sql, params)
        return rows[0] if rows else None

    async def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """The first column of the first row, or None when there is no row."""
        row = await self.fetchone(sql, params)
        return None if row is None else row[0]


class Database:
    """The open database file. Create with `await Database.open(path)`."""

    def __init__(
        self,
        path: Path,
        writer: aiosqlite.Connection,
        reader: aiosqlite.Connection,
        clock: Callable[[], float],
    ) -> None:
        """Private: use `Database.open`, which configures and migrates the connections."""
        self.path = path
        #: UTC unix seconds; every stored time comes from here (tests pass a fake clock).
        self.clock = clock
        self._writer = writer
        self._reader = reader
        self._write_lock = asyncio.Lock()
        # The reader serves one caller at a time (see `_on_reader`).
        self._read_lock = asyncio.Lock()
        self._closed = False

    @classmethod
    async def open(cls, path: Path, *, clock: Callable[[], float] = time.time) -> Database:
        """Open (creating it and its folder if needed) and migrate the database at `path`.

        Raises `StorageError` if the file cannot be opened or migrated, or its schema is
        newer than this code.
        """
        path = Path(path).resolve()
        if sqlite3.sqlite_version_info < MIN_SQLITE_VERSION:
            raise StorageError(
                f"SQLite {sqlite3.sqlite_version} is too old; "
                f"{'.'.join(map(str, MIN_SQLITE_VERSION))} or newer is required"
            )
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create the folder for {path}: {exc}") from exc
        with _wrapped(f"cannot open {path}"):
            return await cls._connect(path, clock)

    @classmethod
    async def _connect(cls, path: Path, clock: Callable[[], float]) -> Database:
        writer = await aiosqlite.connect(path, isolation_level=None)
        reader: aiosqlite.Connection | None = None
        try:
            writer.row_factory = sqlite3.Row
            mode = await Connection(writer).scalar("PRAGMA journal_mode = WAL")
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
        with _wrapped(f"closing {self.path}"):
            try:
                await self._reader.close()
                async with self._write_lock:
                    # Recommended before closing a long-lived connection: refreshes planner stats.
                    await self._writer.execute("PRAGMA optimize")
            finally:
                await self._writer.close()

    async def write(self, function: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `function` in one write transaction under the write lock and return its result:
        committed, or rolled back on any error (a driver error is raised as `StorageError`).

        BEGIN IMMEDIATE takes SQLite's write lock up front, so a transaction that reads
        then writes cannot fail half-way with SQLITE_BUSY against another process. BEGIN
        is inside the `try`: a task cancelled while it is queued must still roll back, or
        the connection would stay in a transaction for the next writer.
        """
        with _wrapped():
            async with self._write_lock:
                try:
                    await self._writer.execute("BEGIN IMMEDIATE")
                    result = await function(Connection(self._writer))
                    await self._writer.execute("COMMIT")
                except BaseException:
                    await _rollback_quietly(self._writer)
                    raise
                return result

    @asynccontextmanager
    async def _on_reader(self) -> AsyncIterator[Connection]:
        """The reader, to this caller alone: the one door of `read`, `fetchall` and `scalar`,
        so a single query never runs inside another caller's read transaction (it would see
        that transaction's older snapshot)."""
        with _wrapped():
            async with self._read_lock:
                yield Connection(self._reader)

    async def read(self, function: Callable[[Connection], Awaitable[T]]) -> T:
        """Run `function`'s queries on the reader in one read transaction: they all see the
        same committed snapshot (figures from two queries agree), and writers go on meanwhile.
        Costs two round trips more than a single statement: for one query use `fetchall`."""
        async with self._on_reader() as reader:
            try:
                await reader.execute("BEGIN")
                result = await function(reader)
                await reader.execute("COMMIT")
            except BaseException:
                await _rollback_quietly(self._reader)
                raise
            return result

    async def fetchall(self, sql: str, params: Iterable[Any] = ()) -> list[Row]:
        """One query on the reader (its own snapshot): all its rows."""
        async with self._on_reader() as reader:
            return await reader.fetchall(sql, params)

    async def scalar(self, sql: str, params: Iterable[Any] = ()) -> Any:
        """One query on the reader: the first column of the first row, or None."""
        async with self._on_reader() as reader:
            return await reader.scalar(sql, params)

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
        except _DRIVER_ERRORS as exc:
            raise StorageError(f"database {self.path} is not writable: {exc}") from exc


async def _migrate(db: aiosqlite.Connection, path: Path) -> None:
    """Bring the file to SCHEMA_VERSION in one transaction, or refuse a newer file.

    The version is read inside BEGIN IMMEDIATE so two processes starting together
    cannot both apply the same migration.
    """
    try:
        await db.execute("BEGIN IMMEDIATE")
        current = int(await Connection(db).scalar("PRAGMA user_version"))
        if current > SCHEMA_VERSION:
            raise StorageError(
                f"{path}: database schema version {current} is newer than this bot supports"
                f" ({SCHEMA_VERSION}); upgrade the bot"
            )
        for migration in MIGRATIONS:
            if migration.version <= current:
                continue
            try:
                for function in migration.functions:
                    await db.create_function(
                        function.name, function.arguments, function.function, deterministic=True
                    )
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
    """Roll back, tolerating "no transaction is active" and a closed connection.

    Always issued rather than checking `in_transaction`: if the caller was cancelled
    while BEGIN was still queued on the connection's thread, the flag is not yet set,
    but the ROLLBACK queued after it will still undo it.
    """
    with suppress(sqlite3.OperationalError, ValueError):
        await db.execute("ROLLBACK")
