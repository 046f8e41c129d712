"""The connection owner on real SQLite files: migrations, connection settings, transactions, errors."""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

import bot.storage.db as db_module
from bot.asr.types import TextOptions, TranscriptionOptions, Word
from bot.storage import CacheKey, Storage, StorageError
from bot.storage.db import Connection, Database
from bot.storage.schema import MIGRATIONS, SCHEMA_VERSION
from tests.storage_support import ALICE, BOB, GROUP, START, FakeClock, add, job_request, raw


@pytest.fixture
async def database(db_path: Path, clock: FakeClock) -> AsyncIterator[Database]:
    db = await Database.open(db_path, clock=clock)
    try:
        yield db
    finally:
        await db.close()


def _schema_at(path: Path, version: int) -> None:
    """Build an empty file at an older schema version, the way that version's code left it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with raw(path) as conn:
        for migration in MIGRATIONS[:version]:
            for function in migration.functions:
                conn.create_function(function.name, function.arguments, function.function)
            for statement in migration.statements:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {version}")


def _user_version(path: Path) -> int:
    with raw(path) as conn:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])


# --- schema ----------------------------------------------------------------------------------


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 3


async def test_open_creates_folder_and_full_schema(storage: Storage, db_path: Path) -> None:
    assert db_path.exists()
    assert _user_version(db_path) == SCHEMA_VERSION
    with raw(db_path) as conn:
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        index = [row[2] for row in conn.execute("PRAGMA index_info(transcripts_file_options)")]
    assert {"users", "chats", "transcripts", "jobs", "transcripts_fts"} <= names
    assert {"transcripts_user_time", "transcripts_user_chat_time", "transcripts_file_options"} <= names
    assert "transcripts_file" not in names  # replaced: every cache lookup names the options too
    assert index == ["file_unique_id", "text_options_key", "created_at"]


async def test_reopening_a_current_database_changes_nothing(db_path: Path) -> None:
    async with Storage.open(db_path) as first:
        await add(first, "kept across restarts")
    async with await Storage.open(db_path) as second:
        page = await second.transcripts.history_page(ALICE, chat_id=None, offset=0, limit=5)
        assert [item.text for item in page.items] == ["kept across restarts"]
    assert _user_version(db_path) == SCHEMA_VERSION


async def test_upgrade_from_version_1(db_path: Path, clock: FakeClock) -> None:
    """A version-1 file (no full-text index) keeps its rows and becomes searchable."""
    _schema_at(db_path, 1)
    with raw(db_path) as conn:
        conn.execute(
            "INSERT INTO users (id, username, store_history, created_at) VALUES (?, 'alice', 0, ?)",
            (ALICE, START),
        )
        conn.execute("INSERT INTO chats (id, type, auto_transcribe) VALUES (?, 'supergroup', 0)", (GROUP,))
        conn.execute(
            "INSERT INTO transcripts (user_id, chat_id, message_id, file_unique_id, duration, text,"
            " raw_text, words, model, options, processing_seconds, created_at)"
            " VALUES (?, ?, 7, 'old-file', 2.0, 'legacy walrus note', 'LEGACY WALRUS NOTE',"
            " '[[\"legacy\",0.0,0.4]]', 'old-model', ?, 0.3, ?)",
            (ALICE, GROUP, json.dumps({"chunk_seconds": 30.0, "stride_seconds": 5.0}), START - 60),
        )

    async with Storage.open(db_path, clock=clock) as storage:
        assert await storage.preferences.store_history(ALICE) is False
        assert await storage.preferences.auto_transcribe(GROUP) is False
        (old,) = await storage.transcripts.export_user(ALICE)
        assert old.transcription.text == "legacy walrus note"
        assert old.transcription.words == (Word("Legacy", 0.0, 0.4),)
        assert old.transcription.options == TranscriptionOptions(
            chunk_seconds=30.0, stride_seconds=5.0, postprocess=("sentence_case",)
        )

        found = await storage.search.find(ALICE, "walrus", chat_id=None, offset=0, limit=5)
        assert [hit.id for hit in found.items] == [old.id]
        new_id = await add(storage, "fresh walrus", chat_id=GROUP, message_id=8)
        found = await storage.search.find(ALICE, "walrus", chat_id=GROUP, offset=0, limit=5)
        assert {hit.id for hit in found.items} == {old.id, new_id}
    assert _user_version(db_path) == SCHEMA_VERSION


async def test_upgrade_from_version_2_keeps_the_cache_of_the_same_model(db_path: Path) -> None:
    """Transcripts made before the cache key existed get the key their request had: their
    model with every other text option at its default. They still answer that request,
    and no longer answer one for another model or other options."""
    _schema_at(db_path, 2)
    with raw(db_path) as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (?, ?)", (ALICE, START))
        for file_unique_id, model in (("note-a", "old-model"), ("note-b", "other/model ü")):
            conn.execute(
                "INSERT INTO transcripts (user_id, chat_id, message_id, file_unique_id, duration, text,"
                " raw_text, words, model, options, processing_seconds, created_at)"
                " VALUES (?, ?, 1, ?, 2.0, 'old text', 'OLD TEXT', '[]', ?, ?, 0.3, ?)",
                (ALICE, ALICE, file_unique_id, model, json.dumps({"chunk_seconds": 30.0, "stride_seconds": 5.0}),
                 START),
            )

    def key(options: TextOptions) -> CacheKey:
        return CacheKey(options, punctuation_model=None)

    async with Storage.open(db_path) as storage:
        for file_unique_id, model in (("note-a", "old-model"), ("note-b", "other/model ü")):
            hit = await storage.transcripts.find_cached(file_unique_id, key(TextOptions(model=model)))
            assert hit is not None and hit.text == "old text" and hit.model == model
        assert await storage.transcripts.find_cached("note-a", key(TextOptions(model="new-model"))) is None
        german = key(TextOptions(model="old-model", language="de"))
        assert await storage.transcripts.find_cached("note-a", german) is None
    with raw(db_path) as conn:
        keys = dict(conn.execute("SELECT file_unique_id, text_options_key FROM transcripts"))
    assert keys == {"note-a": key(TextOptions(model="old-model")).encode(),
                    "note-b": key(TextOptions(model="other/model ü")).encode()}


async def test_upgrade_from_version_3_post_processes_the_words_like_the_text(db_path: Path) -> None:
    """Before version 4 words kept the model's capitals (subtitles re-cased them); after it they read
    like their text, and the options say so. Rows that already name their steps are left alone."""
    _schema_at(db_path, 3)
    words = json.dumps([["HELLO", 0.0, 0.4], ["I", 0.5, 0.6], ["AM", 0.7, 0.9], ["HERE", 1.0, 1.3]])
    with raw(db_path) as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (?, ?)", (ALICE, START))
        for message_id, options in ((1, {"chunk_seconds": 30.0, "stride_seconds": 5.0}),
                                    (2, {"chunk_seconds": 30.0, "stride_seconds": 5.0, "postprocess": []})):
            conn.execute(
                "INSERT INTO transcripts (user_id, chat_id, message_id, file_unique_id, duration, text, raw_text,"
                " words, model, options, processing_seconds, created_at, text_options_key)"
                " VALUES (?, ?, ?, 'f', 2.0, 'Hello I am here', 'HELLO I AM HERE', ?, 'm', ?, 0.3, ?, '')",
                (ALICE, ALICE, message_id, words, json.dumps(options), START + message_id),
            )

    async with Storage.open(db_path) as storage:
        cased, kept_raw = await storage.transcripts.export_user(ALICE)  # oldest first
    assert [w.word for w in cased.transcription.words] == ["Hello", "I", "am", "here"]
    assert cased.transcription.options.postprocess == ("sentence_case",)
    assert [w.word for w in kept_raw.transcription.words] == ["HELLO", "I", "AM", "HERE"]
    assert kept_raw.transcription.options.postprocess == ()


async def test_upgrade_from_version_5_stores_languages_and_keys_on_the_punctuation_model(db_path: Path) -> None:
    """Version 6 adds the language of the text (a requested one is known for old rows, a detected one
    was never stored) and names the punctuation model in the cache key. Old transcripts that were not
    punctuated get "no punctuation", which is exact: a bot still without PUNCTUATION_MODEL keeps its
    cache, one that turned it on transcribes them again. A punctuated one does not say by which model:
    it stays in the history and answers no lookup."""
    _schema_at(db_path, 5)
    # Keys as versions 3 to 5 wrote them (`TextOptions.cache_key()` of the day); "before-languages"
    # is from before TextOptions had `languages`, and reads as the default (no restriction).
    v5_key = '{"decoder":"greedy","hotwords":[],"language":%s,"languages":[],"model":"m","postprocess":null}'
    rows = (
        ("bare", v5_key % "null", {"postprocess": ["sentence_case"]}),
        ("german", v5_key % '"de"', {"postprocess": ["sentence_case"], "language": "de"}),
        ("punctuated", v5_key % "null", {"postprocess": ["punctuate"]}),
        ("before-languages", '{"decoder":"greedy","hotwords":[],"language":null,"model":"m","postprocess":null}',
         {"postprocess": ["sentence_case"]}),
    )
    with raw(db_path) as conn:
        conn.execute("INSERT INTO users (id, created_at) VALUES (?, ?)", (ALICE, START))
        for message_id, (file_unique_id, key, options) in enumerate(rows):
            conn.execute(
                "INSERT INTO transcripts (user_id, chat_id, message_id, file_unique_id, duration, text, raw_text,"
                " words, model, options, processing_seconds, created_at, text_options_key)"
                " VALUES (?, ?, ?, ?, 2.0, ?, 'OLD', '[]', 'm', ?, 0.3, ?, ?)",
                (ALICE, ALICE, message_id, file_unique_id, f"old {file_unique_id}",
                 json.dumps({"chunk_seconds": 30.0, "stride_seconds": 5.0, **options}), START + message_id, key),
            )

    bare = CacheKey(TextOptions(model="m"), punctuation_model=None)
    german = CacheKey(TextOptions(model="m", language="de"), punctuation_model=None)
    punctuated = CacheKey(TextOptions(model="m"), punctuation_model="models/punctuation")
    async with Storage.open(db_path) as storage:
        for file_unique_id, key in (("bare", bare), ("german", german), ("before-languages", bare)):
            hit = await storage.transcripts.find_cached(file_unique_id, key)
            assert hit is not None and hit.text == f"old {file_unique_id}"
            assert hit.language == ("de" if file_unique_id == "german" else None)
            now_punctuated = CacheKey(key.options, punctuation_model="models/punctuation")
            assert await storage.transcripts.find_cached(file_unique_id, now_punctuated) is None
        assert await storage.transcripts.find_cached("punctuated", bare) is None
        assert await storage.transcripts.find_cached("punctuated", punctuated) is None
        records = await storage.transcripts.export_user(ALICE)
        assert [(r.file_unique_id, r.transcription.language) for r in records] == [
            ("bare", None), ("german", "de"), ("punctuated", None), ("before-languages", None)
        ]
    with raw(db_path) as conn:
        keys = dict(conn.execute("SELECT file_unique_id, text_options_key FROM transcripts"))
    assert keys == {"bare": bare.encode(), "german": german.encode(), "punctuated": v5_key % "null",
                    "before-languages": bare.encode()}
    assert _user_version(db_path) == SCHEMA_VERSION


async def test_a_failed_migration_changes_nothing(db_path: Path) -> None:
    """Migrations run in one transaction: a step that fails leaves the file as it was."""
    _schema_at(db_path, 1)
    with raw(db_path) as conn:
        conn.execute("CREATE TABLE transcripts_fts (x)")  # collides with migration 2
    with pytest.raises(StorageError, match=r"migration 2 \(full-text search\) failed"):
        await Storage.open(db_path)
    assert _user_version(db_path) == 1
    with raw(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master WHERE type = 'trigger'").fetchone()[0] == 0


async def test_newer_schema_is_refused_with_a_clear_message(db_path: Path) -> None:
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    expected = (
        f"database schema version {SCHEMA_VERSION + 1} is newer than this bot supports"
        f" ({SCHEMA_VERSION}); upgrade the bot"
    )
    with pytest.raises(StorageError, match=re.escape(expected)):
        await Storage.open(db_path)
    assert _user_version(db_path) == SCHEMA_VERSION + 1
    with raw(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


async def test_a_file_that_cannot_be_opened_raises_storage_error(tmp_path: Path) -> None:
    (tmp_path / "not-a-folder").write_text("")
    with pytest.raises(StorageError, match="cannot create the folder"):
        await Storage.open(tmp_path / "not-a-folder" / "bot.sqlite3")
    garbage = tmp_path / "garbage.sqlite3"
    garbage.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match="cannot open"):
        await Storage.open(garbage)


# --- connections ---------------------------------------------------------------------------


async def test_wal_foreign_keys_and_timeouts_are_on(database: Database, db_path: Path) -> None:
    async def settings(conn: Connection) -> dict[str, object]:
        names = ("journal_mode", "synchronous", "foreign_keys", "busy_timeout")
        return {name: await conn.scalar(f"PRAGMA {name}") for name in names}

    assert await database.write(settings) == {
        "journal_mode": "wal",
        "synchronous": 1,  # NORMAL
        "foreign_keys": 1,
        "busy_timeout": 5000,
    }
    with raw(db_path) as conn:  # WAL is a property of the file, seen by any connection
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_foreign_keys_are_enforced(database: Database, db_path: Path) -> None:
    """forget and retention rely on them: a row pointing at a missing user is refused."""

    async def orphan(conn: Connection) -> int:
        return await conn.execute(
            "INSERT INTO jobs (chat_id, message_id, user_id, chat_type, file_id, file_unique_id, media_kind,"
            " created_at, updated_at) VALUES (1, 1, 999, 'private', 'f', 'u', 'voice', 0, 0)"
        )

    with pytest.raises(StorageError, match="FOREIGN KEY constraint failed") as caught:
        await database.write(orphan)
    assert isinstance(caught.value.__cause__, sqlite3.IntegrityError)
    with raw(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM jobs").fetchone()[0] == 0


async def test_a_write_is_all_or_nothing(database: Database, db_path: Path) -> None:
    class Abandoned(Exception):
        pass

    async def half_then_fail(conn: Connection) -> None:
        await conn.execute("INSERT INTO users (id, created_at) VALUES (1, 0)")
        raise Abandoned

    async def half_then_bad_sql(conn: Connection) -> None:
        await conn.execute("INSERT INTO users (id, created_at) VALUES (2, 0)")
        await conn.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(Abandoned):  # not a database failure: passed on as it is
        await database.write(half_then_fail)
    with pytest.raises(StorageError, match="no such table"):
        await database.write(half_then_bad_sql)
    with raw(db_path) as conn:
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 0

    async def whole(conn: Connection) -> int:
        await conn.execute("INSERT INTO users (id, created_at) VALUES (3, 0)")
        return await conn.execute("UPDATE users SET username = 'x' WHERE id = 3")

    assert await database.write(whole) == 1
    assert await database.scalar("SELECT username FROM users WHERE id = 3") == "x"


async def test_a_read_sees_one_snapshot(storage: Storage, database: Database) -> None:
    """Statements in one `read` agree with each other even when a write commits between them."""
    await storage.preferences.set_store_history(ALICE, True)

    async def count_twice(conn: Connection) -> tuple[int, int]:
        before = await conn.scalar("SELECT count(*) FROM users")
        await storage.preferences.set_store_history(BOB, False)  # another connection commits
        return before, await conn.scalar("SELECT count(*) FROM users")

    assert await database.read(count_twice) == (1, 1)
    assert await database.scalar("SELECT count(*) FROM users") == 2


async def test_a_single_query_never_runs_inside_another_callers_read(storage: Storage, database: Database) -> None:
    """A query issued while another task's `read` is open waits for it, and then sees the
    commits made meanwhile rather than that transaction's older snapshot."""
    await storage.preferences.set_store_history(ALICE, True)
    inside, release = asyncio.Event(), asyncio.Event()

    async def held_open(conn: Connection) -> int:
        count = await conn.scalar("SELECT count(*) FROM users")
        inside.set()
        await release.wait()
        return count

    reading = asyncio.create_task(database.read(held_open))
    await inside.wait()
    await storage.preferences.set_store_history(BOB, False)
    query = asyncio.create_task(database.scalar("SELECT count(*) FROM users"))
    rows = asyncio.create_task(database.fetchall("SELECT id FROM users ORDER BY id"))
    await asyncio.sleep(0.05)
    release.set()
    assert await reading == 1
    assert await query == 2
    assert [row[0] for row in await rows] == [ALICE, BOB]


async def test_cancelled_writers_leave_the_connection_usable(storage: Storage) -> None:
    tasks = [asyncio.create_task(add(storage, f"note {i}", message_id=i)) for i in range(50)]
    await asyncio.sleep(0)
    for task in tasks[::3]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await add(storage, "after the storm", message_id=999)
    page = await storage.transcripts.history_page(ALICE, chat_id=None, offset=0, limit=1)
    assert page.items[0].text == "after the storm"
    # Whatever was not cancelled is there whole: every stored row is also indexed.
    notes = await storage.search.find(ALICE, "note", chat_id=None, offset=0, limit=1)
    assert notes.total == page.total - 1 >= len(tasks) - len(tasks[::3])


# --- failures raise StorageError -------------------------------------------------------------


async def test_a_locked_database_raises_storage_error(
    db_path: Path, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process holding the write lock past the busy timeout: every write fails with
    StorageError (never the driver's own type), reads still work, and all recovers after."""
    monkeypatch.setattr(db_module, "_BUSY_TIMEOUT_MS", 50)
    async with Storage.open(db_path, clock=clock) as storage:
        lock = sqlite3.connect(db_path, isolation_level=None)
        try:
            lock.execute("BEGIN IMMEDIATE")
            writes = (
                storage.jobs.create(job_request(1)),
                storage.preferences.set_auto_transcribe(GROUP, False),
                storage.transcripts.purge_older_than(1),
                storage.ping(),
            )
            for write in writes:
                with pytest.raises(StorageError, match="database is locked"):
                    await write
            assert await storage.preferences.auto_transcribe(GROUP) is True
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        job, created = await storage.jobs.create(job_request(1))
        assert created and job.id > 0
        await storage.ping()


async def test_a_closed_storage_raises_storage_error(db_path: Path) -> None:
    storage = await Storage.open(db_path)
    await storage.ping()
    await storage.close()
    await storage.close()  # safe twice
    calls = (
        storage.ping(),
        storage.jobs.create(job_request(1)),
        storage.jobs.unfinished(),
        storage.transcripts.find_cached("uniq", CacheKey(TextOptions(model="m"), punctuation_model=None)),
        storage.transcripts.history_page(ALICE, chat_id=None, offset=0, limit=5),
        storage.search.find(ALICE, "word", chat_id=None, offset=0, limit=5),
        storage.preferences.store_history(ALICE),
        storage.stats.summary(),
    )
    for call in calls:
        with pytest.raises(StorageError):
            await call
