"""Storage on real SQLite files: migrations, the job queue, history, search, privacy, retention."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import bot.storage.db as storage_module
from bot.asr.types import Transcription, TranscriptionOptions, Word
from bot.telegram.render import snippet_html
from bot.storage.db import (
    JobRequest,
    JobStatus,
    Storage,
    StorageError,
    fts_query,
)
from bot.storage.schema import MIGRATIONS, SCHEMA_VERSION

START = 1_700_000_000.0
GROUP = -100_123
ALICE = 111_111_111
BOB = 222_222_222
OPTIONS = TranscriptionOptions(chunk_seconds=20.0, stride_seconds=2.5, device="cpu", batch_size=2)


class FakeClock:
    """A settable clock, so created_at order and retention cut-offs are exact."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_transcription(text: str, *, duration: float = 3.0, processing_seconds: float = 0.5) -> Transcription:
    words = tuple(Word(w, round(i * 0.5, 3), round(i * 0.5 + 0.4, 3)) for i, w in enumerate(text.split()))
    return Transcription(
        text=text,
        raw_text=text.upper(),
        words=words,
        duration=duration,
        model="facebook/wav2vec2-base-960h",
        options=OPTIONS,
        processing_seconds=processing_seconds,
    )


def job_request(message_id: int, *, user_id: int = ALICE, chat_id: int = ALICE) -> JobRequest:
    return JobRequest(
        chat_id=chat_id,
        message_id=message_id,
        user_id=user_id,
        chat_type="private" if chat_id > 0 else "supergroup",
        file_id=f"file-{message_id}",
        file_unique_id=f"uniq-{message_id}",
        media_kind="voice",
        file_size=12_345,
        duration=3.0,
        mime_type="audio/ogg",
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bot.sqlite3"


@pytest.fixture
async def storage(db_path: Path, clock: FakeClock) -> AsyncIterator[Storage]:
    async with Storage.open(db_path, clock=clock) as opened:
        yield opened


async def add(
    storage: Storage,
    text: str,
    *,
    user_id: int = ALICE,
    chat_id: int | None = None,
    message_id: int = 1,
    file_unique_id: str = "uniq",
    **kwargs: float,
) -> int:
    return await storage.add_transcript(
        user_id=user_id,
        chat_id=user_id if chat_id is None else chat_id,
        message_id=message_id,
        file_unique_id=file_unique_id,
        forward_origin=None,
        transcription=make_transcription(text, **kwargs),
    )


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to inspect the file behind the Storage's back (WAL allows it)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


# --- schema and connection ---------------------------------------------------------------


def test_migrations_are_numbered_in_order() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert SCHEMA_VERSION == len(MIGRATIONS) >= 2


async def test_open_creates_folder_and_full_schema(storage: Storage, db_path: Path) -> None:
    assert db_path.exists()
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        names = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
    assert {"users", "chats", "transcripts", "jobs", "transcripts_fts"} <= names
    assert {"transcripts_user_time", "transcripts_user_chat_time", "transcripts_file"} <= names


async def test_reopening_a_current_database_changes_nothing(db_path: Path) -> None:
    async with Storage.open(db_path) as first:
        await add(first, "kept across restarts")
    async with await Storage.open(db_path) as second:
        assert (await second.pragmas())["user_version"] == SCHEMA_VERSION
        page = await second.history_page(ALICE, chat_id=None, offset=0, limit=5)
        assert [item.text for item in page.items] == ["kept across restarts"]


async def test_upgrade_from_previous_schema_version(db_path: Path, clock: FakeClock) -> None:
    """A version-1 file (no full-text index) keeps its rows and becomes searchable."""
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as conn:
        for statement in MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("PRAGMA user_version = 1")
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
        assert (await storage.pragmas())["user_version"] == SCHEMA_VERSION
        assert await storage.get_store_history(ALICE) is False
        assert await storage.get_auto_transcribe(GROUP) is False
        (old,) = await storage.export_user(ALICE)
        assert old.transcription.text == "legacy walrus note"
        assert old.transcription.words == (Word("legacy", 0.0, 0.4),)
        assert old.transcription.options == TranscriptionOptions(chunk_seconds=30.0, stride_seconds=5.0)

        found = await storage.search(ALICE, "walrus", chat_id=None, offset=0, limit=5)
        assert [hit.id for hit in found.items] == [old.id]
        new_id = await add(storage, "fresh walrus", chat_id=GROUP, message_id=8)
        found = await storage.search(ALICE, "walrus", chat_id=GROUP, offset=0, limit=5)
        assert {hit.id for hit in found.items} == {old.id, new_id}


async def test_a_failed_migration_changes_nothing(db_path: Path) -> None:
    """Migrations run in one transaction: a step that fails leaves the file as it was."""
    db_path.parent.mkdir(parents=True)
    with raw(db_path) as conn:
        for statement in MIGRATIONS[0].statements:
            conn.execute(statement)
        conn.execute("CREATE TABLE transcripts_fts (x)")  # collides with migration 2
        conn.execute("PRAGMA user_version = 1")
    with pytest.raises(StorageError, match=r"migration 2 \(full-text search\) failed"):
        await Storage.open(db_path)
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
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
    with raw(db_path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1
        assert conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0


async def test_wal_foreign_keys_and_timeouts_are_on(storage: Storage, db_path: Path) -> None:
    pragmas = await storage.pragmas()
    assert pragmas["journal_mode"] == "wal"
    assert pragmas["foreign_keys"] == 1
    assert pragmas["synchronous"] == 1  # NORMAL
    assert pragmas["busy_timeout"] == 5000
    with raw(db_path) as conn:  # WAL is a property of the file, seen by any connection
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


async def test_foreign_keys_are_enforced(storage: Storage, db_path: Path) -> None:
    """forget relies on them; a row pointing at a missing transcript must be refused."""
    job, _ = await storage.create_job(job_request(1))
    with pytest.raises(sqlite3.IntegrityError):
        await storage.finish_job(job.id, status=JobStatus.DONE, transcript_id=999_999)
    assert (await storage.get_job(job.id)).status is JobStatus.QUEUED  # type: ignore[union-attr]


async def test_ping_and_close(db_path: Path) -> None:
    storage = await Storage.open(db_path)
    await storage.ping()
    await storage.close()
    await storage.close()
    with pytest.raises(StorageError, match="not writable"):
        await storage.ping()


# --- settings ------------------------------------------------------------------------------


async def test_settings_default_on_and_survive_profile_updates(storage: Storage) -> None:
    assert await storage.get_auto_transcribe(GROUP) is True
    assert await storage.get_store_history(ALICE) is True

    await storage.set_auto_transcribe(GROUP, False)
    await storage.upsert_chat(GROUP, chat_type="supergroup", title="Team")
    assert await storage.get_auto_transcribe(GROUP) is False

    await storage.set_store_history(ALICE, False)
    await storage.upsert_user(ALICE, username="alice", first_name="Alice")
    assert await storage.get_store_history(ALICE) is False
    await storage.set_store_history(ALICE, True)
    assert await storage.get_store_history(ALICE) is True


# --- jobs ----------------------------------------------------------------------------------


async def test_create_job_is_idempotent_for_a_duplicated_update(storage: Storage) -> None:
    first, created = await storage.create_job(job_request(5))
    assert created and first.status is JobStatus.QUEUED and first.attempts == 0
    again, created_again = await storage.create_job(job_request(5))
    assert not created_again and again == first

    results = await asyncio.gather(*(storage.create_job(job_request(6)) for _ in range(20)))
    assert sum(created for _, created in results) == 1
    assert len({job.id for job, _ in results}) == 1
    assert await storage.count_jobs(JobStatus.QUEUED) == 2


async def test_job_life_cycle(storage: Storage, clock: FakeClock) -> None:
    job, _ = await storage.create_job(job_request(1))
    clock.advance(1)
    running = await storage.mark_job_running(job.id)
    assert running is not None and running.status is JobStatus.RUNNING and running.attempts == 1
    assert running.updated_at == START + 1
    await storage.set_job_placeholder(job.id, 4242)
    assert await storage.finish_job(job.id, status="failed", error="decode error")
    done = await storage.get_job(job.id)
    assert done is not None and done.finished
    assert (done.status, done.error, done.placeholder_message_id) == (JobStatus.FAILED, "decode error", 4242)

    # A finished job is final: no late overwrite, no re-run.
    assert not await storage.finish_job(job.id, status=JobStatus.DONE)
    assert await storage.mark_job_running(job.id) is None
    assert await storage.get_job(999) is None
    with pytest.raises(ValueError):
        await storage.finish_job(job.id, status=JobStatus.RUNNING)


async def test_unfinished_jobs_are_resumed_after_a_crash(
    storage: Storage, db_path: Path, tmp_path: Path, clock: FakeClock
) -> None:
    jobs = []
    for message_id in (1, 2, 3, 4):
        job, _ = await storage.create_job(job_request(message_id))
        jobs.append(job)
        clock.advance(1)
    await storage.mark_job_running(jobs[1].id)
    await storage.mark_job_running(jobs[2].id)
    await storage.finish_job(jobs[2].id, status=JobStatus.DONE)
    # The process dies here, jobs[1] still "running": what it leaves on disk is the file
    # and its un-checkpointed WAL, copied now, without the clean close.
    crashed = tmp_path / "after-crash" / "bot.sqlite3"
    crashed.parent.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(f"{db_path}{suffix}", f"{crashed}{suffix}")
    assert Path(f"{crashed}-wal").stat().st_size > 0

    async with Storage.open(crashed, clock=clock) as storage:
        pending = await storage.unfinished_jobs()
        assert [(j.id, j.status) for j in pending] == [
            (jobs[0].id, JobStatus.QUEUED),
            (jobs[1].id, JobStatus.RUNNING),
            (jobs[3].id, JobStatus.QUEUED),
        ]
        resumed = await storage.mark_job_running(jobs[1].id)
        assert resumed is not None and resumed.attempts == 2
        assert await storage.count_jobs("running") == 1


async def test_complete_job_with_transcript_is_atomic(storage: Storage) -> None:
    job, _ = await storage.create_job(job_request(1))
    await storage.mark_job_running(job.id)
    fields = {
        "user_id": ALICE,
        "chat_id": ALICE,
        "message_id": 1,
        "file_unique_id": "u1",
        "forward_origin": None,
    }

    broken = Transcription(
        text=None,  # type: ignore[arg-type]  # violates NOT NULL: the insert fails
        raw_text="x",
        words=(),
        duration=1.0,
        model="m",
        options=OPTIONS,
        processing_seconds=0.1,
    )
    with pytest.raises(sqlite3.IntegrityError):
        await storage.complete_job_with_transcript(job.id, transcription=broken, **fields)
    still = await storage.get_job(job.id)
    assert still is not None and still.status is JobStatus.RUNNING and still.transcript_id is None
    assert await storage.export_user(ALICE) == []

    transcript_id = await storage.complete_job_with_transcript(
        job.id, transcription=make_transcription("hello there"), **fields
    )
    assert transcript_id is not None
    done = await storage.get_job(job.id)
    assert done is not None and (done.status, done.transcript_id) == (JobStatus.DONE, transcript_id)

    cancelled, _ = await storage.create_job(job_request(2))
    await storage.finish_job(cancelled.id, status=JobStatus.CANCELLED)
    assert (
        await storage.complete_job_with_transcript(
            cancelled.id, transcription=make_transcription("too late"), **fields
        )
        is None
    )
    assert (
        await storage.complete_job_with_transcript(
            987_654, transcription=make_transcription("gone"), **fields
        )
        is None
    )
    assert [r.transcription.text for r in await storage.export_user(ALICE)] == ["hello there"]


async def test_cancelled_writers_leave_the_connection_usable(storage: Storage) -> None:
    tasks = [asyncio.create_task(add(storage, f"note {i}", message_id=i)) for i in range(50)]
    await asyncio.sleep(0)
    for task in tasks[::3]:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await add(storage, "after the storm", message_id=999)
    page = await storage.history_page(ALICE, chat_id=None, offset=0, limit=1)
    assert page.items[0].text == "after the storm"
    # Whatever was not cancelled is there whole: every stored row is also indexed.
    notes = await storage.search(ALICE, "note", chat_id=None, offset=0, limit=1)
    assert notes.total == page.total - 1 >= len(tasks) - len(tasks[::3])


# --- cache ---------------------------------------------------------------------------------


async def test_find_cached_returns_the_newest_copy(storage: Storage, clock: FakeClock) -> None:
    assert await storage.find_cached("voice-abc") is None
    await add(storage, "first take", file_unique_id="voice-abc")
    clock.advance(10)
    newest = await add(
        storage, "second take", file_unique_id="voice-abc", duration=4.0, processing_seconds=2.0
    )

    cached = await storage.find_cached("voice-abc")
    assert cached is not None and cached.transcript_id == newest and cached.created_at == START + 10
    assert cached.transcription.text == "second take"
    assert cached.transcription.duration == 4.0
    assert cached.transcription.words == make_transcription("second take").words
    assert cached.transcription.options == OPTIONS
    assert cached.transcription.processing_seconds == 0.0

    copy_id = await storage.add_transcript(
        user_id=BOB,
        chat_id=BOB,
        message_id=3,
        file_unique_id="voice-abc",
        forward_origin='{"type": "user", "sender_user_name": "Alice"}',
        transcription=cached.transcription,
    )
    record = await storage.get_transcript(copy_id, user_id=BOB)
    assert record is not None and record.transcription == cached.transcription


# --- history and privacy ------------------------------------------------------------------


async def test_history_pages_newest_first_with_totals(storage: Storage, clock: FakeClock) -> None:
    for i in range(25):
        await add(storage, f"note number {i}", message_id=i)
        if i % 2:
            clock.advance(1)  # some share a created_at: id breaks the tie
    first = await storage.history_page(ALICE, chat_id=None, offset=0, limit=10)
    assert first.total == 25 and first.has_more
    assert [item.text for item in first.items] == [f"note number {i}" for i in range(24, 14, -1)]
    last = await storage.history_page(ALICE, chat_id=None, offset=20, limit=10)
    assert [item.message_id for item in last.items] == [4, 3, 2, 1, 0] and not last.has_more
    beyond = await storage.history_page(ALICE, chat_id=None, offset=30, limit=10)
    assert beyond.items == () and beyond.total == 25
    empty = await storage.history_page(BOB, chat_id=None, offset=0, limit=10)
    assert (empty.items, empty.total) == ((), 0)
    with pytest.raises(ValueError):
        await storage.history_page(ALICE, chat_id=None, offset=-1, limit=10)


async def test_group_view_and_ownership_are_private(storage: Storage) -> None:
    alice_private = await add(storage, "alice private secret", message_id=1)
    alice_group = await add(storage, "alice group secret", chat_id=GROUP, message_id=2)
    bob_group = await add(storage, "bob group secret", user_id=BOB, chat_id=GROUP, message_id=3)
    bob_private = await add(storage, "bob private secret", user_id=BOB, message_id=4)

    in_group = await storage.history_page(ALICE, chat_id=GROUP, offset=0, limit=10)
    assert [item.id for item in in_group.items] == [alice_group] and in_group.total == 1
    everywhere = await storage.history_page(ALICE, chat_id=None, offset=0, limit=10)
    assert {item.id for item in everywhere.items} == {alice_private, alice_group}
    bob_sees = await storage.history_page(BOB, chat_id=None, offset=0, limit=10)
    assert {item.id for item in bob_sees.items} == {bob_group, bob_private}

    assert await storage.get_transcript(bob_group, user_id=ALICE) is None
    assert await storage.get_transcript(bob_private, user_id=ALICE, chat_id=GROUP) is None
    assert await storage.get_transcript(alice_private, user_id=ALICE, chat_id=GROUP) is None
    mine = await storage.get_transcript(alice_group, user_id=ALICE, chat_id=GROUP)
    assert mine is not None and mine.transcription.text == "alice group secret"

    found = await storage.search(ALICE, "secret", chat_id=GROUP, offset=0, limit=10)
    assert [hit.id for hit in found.items] == [alice_group]
    found = await storage.search(ALICE, "secret", chat_id=None, offset=0, limit=10)
    assert {hit.id for hit in found.items} == {alice_private, alice_group}

    assert not await storage.delete_transcript(bob_group, user_id=ALICE)
    assert await storage.delete_transcript(alice_group, user_id=ALICE)
    assert await storage.get_transcript(alice_group, user_id=ALICE) is None
    assert (await storage.search(ALICE, "group", chat_id=None, offset=0, limit=10)).total == 0


async def test_items_carry_the_stored_chat_title(storage: Storage) -> None:
    untitled, unknown = GROUP - 1, GROUP - 2
    await storage.upsert_chat(ALICE, chat_type="private")
    await storage.upsert_chat(GROUP, chat_type="supergroup", title="Old name")
    await storage.upsert_chat(GROUP, chat_type="supergroup", title="Team <&>")  # renamed: the latest wins
    await storage.upsert_chat(untitled, chat_type="group", title="")
    private = await add(storage, "kiwi private", message_id=1)
    titled = await add(storage, "kiwi titled", chat_id=GROUP, message_id=2)
    empty = await add(storage, "kiwi empty title", chat_id=untitled, message_id=3)
    no_row = await add(storage, "kiwi no chat row", chat_id=unknown, message_id=4)
    expected = {private: None, titled: "Team <&>", empty: None, no_row: None}

    page = await storage.history_page(ALICE, chat_id=None, offset=0, limit=10)
    assert {item.id: item.chat_title for item in page.items} == expected
    found = await storage.search(ALICE, "kiwi", chat_id=None, offset=0, limit=10)
    assert {hit.id: hit.chat_title for hit in found.items} == expected
    in_group = await storage.history_page(ALICE, chat_id=GROUP, offset=0, limit=10)
    assert [(item.id, item.chat_title) for item in in_group.items] == [(titled, "Team <&>")]
    for transcript_id, title in expected.items():
        record = await storage.get_transcript(transcript_id, user_id=ALICE)
        assert record is not None and record.chat_title == title
    assert {r.id: r.chat_title for r in await storage.export_user(ALICE)} == expected


# --- search --------------------------------------------------------------------------------


async def test_search_ranks_repeated_terms_higher(storage: Storage) -> None:
    once = await add(storage, "the pelican flew over the harbour today", message_id=1)
    twice = await add(storage, "the pelican saw another pelican near today", message_id=2)
    await add(storage, "nothing relevant in this one at all", message_id=3)
    page = await storage.search(ALICE, "Pelican", chat_id=None, offset=0, limit=10)
    assert [hit.id for hit in page.items] == [twice, once] and page.total == 2
    assert page.items[0].score < page.items[1].score
    assert snippet_html(page.items[0].snippet).count("<b>pelican</b>") == 2


async def test_search_matching_rules(storage: Storage) -> None:
    await add(storage, "Meet at the café tomorrow morning", message_id=1)
    await add(storage, "transcription works", message_id=2)
    assert (await storage.search(ALICE, "cafe", chat_id=None, offset=0, limit=5)).total == 1
    assert (await storage.search(ALICE, "cafe tomorrow", chat_id=None, offset=0, limit=5)).total == 1
    assert (await storage.search(ALICE, "cafe works", chat_id=None, offset=0, limit=5)).total == 0
    assert (await storage.search(ALICE, "transcr", chat_id=None, offset=0, limit=5)).total == 0
    assert (await storage.search(ALICE, "transcr*", chat_id=None, offset=0, limit=5)).total == 1


async def test_search_snippet_is_escaped_html(storage: Storage) -> None:
    await add(storage, "if a < b & c > d then the otter <b>wins</b>", message_id=1)
    (hit,) = (await storage.search(ALICE, "otter", chat_id=None, offset=0, limit=5)).items
    assert snippet_html(hit.snippet) == "if a &lt; b &amp; c &gt; d then the <b>otter</b> &lt;b&gt;wins&lt;/b&gt;"
    assert hit.text == "if a < b & c > d then the otter <b>wins</b>"  # raw, the caller escapes


@pytest.mark.parametrize(
    "query",
    ['"foo', "AND OR", "*", "NEAR(a b)", "a:b", "-foo", "foo)", "''", '"', "^x", "NOT", "(", "", "   ", "🙂"],
)
async def test_hostile_queries_do_not_raise(storage: Storage, query: str) -> None:
    await add(storage, "foo and or near a b x not", message_id=1)
    page = await storage.search(ALICE, query, chat_id=None, offset=0, limit=5)
    assert page.total == len(page.items) <= 1


async def test_search_pages(storage: Storage, clock: FakeClock) -> None:
    for i in range(12):
        await add(storage, f"heron {i}", message_id=i)
        clock.advance(1)
    first = await storage.search(ALICE, "heron", chat_id=None, offset=0, limit=5)
    rest = await storage.search(ALICE, "heron", chat_id=None, offset=5, limit=10)
    assert first.total == rest.total == 12 and first.has_more and not rest.has_more
    assert len({hit.id for hit in first.items + rest.items}) == 12


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", '"hello" "world"'),
        ('say "hi', '"say" """hi"'),
        ("AND OR NOT", '"AND" "OR" "NOT"'),
        ("trans* x", '"trans"* "x"'),
        ("* - :: ()", None),
        ("", None),
    ],
)
def test_fts_query_quotes_every_term(text: str, expected: str | None) -> None:
    assert fts_query(text) == expected


def test_fts_query_caps_the_number_of_terms() -> None:
    query = fts_query(" ".join(f"w{i}" for i in range(100)))
    assert query is not None and query.count('"') == 32


# --- export, forget, retention -------------------------------------------------------------


async def test_export_round_trips_everything(storage: Storage, clock: FakeClock) -> None:
    originals = [make_transcription(f"entry {i} with words", duration=1.5 + i) for i in range(3)]
    for i, transcription in enumerate(originals):
        await storage.add_transcript(
            user_id=ALICE,
            chat_id=GROUP if i == 1 else ALICE,
            message_id=100 + i,
            file_unique_id=f"f{i}",
            forward_origin='{"type": "hidden_user", "sender_user_name": "Zoë"}' if i == 2 else None,
            transcription=transcription,
        )
        clock.advance(60)
    await add(storage, "not alice's", user_id=BOB)

    records = await storage.export_user(ALICE)
    assert [r.transcription for r in records] == originals
    assert [(r.chat_id, r.message_id, r.file_unique_id) for r in records] == [
        (ALICE, 100, "f0"),
        (GROUP, 101, "f1"),
        (ALICE, 102, "f2"),
    ]
    assert records[2].forward_origin == '{"type": "hidden_user", "sender_user_name": "Zoë"}'
    assert [r.created_at for r in records] == [START, START + 60, START + 120]
    exported = json.loads(json.dumps([r.to_dict() for r in records]))
    assert exported[0]["transcription"]["words"][1] == {"word": "0", "start": 0.5, "end": 0.9}
    assert exported[0]["transcription"]["options"]["batch_size"] == 2


async def test_forget_leaves_no_row_of_the_user(storage: Storage, db_path: Path) -> None:
    await storage.upsert_user(ALICE, username="alice", first_name="Alice")
    await storage.upsert_user(BOB, username="bob")
    await storage.upsert_chat(ALICE, chat_type="private")
    await storage.upsert_chat(GROUP, chat_type="supergroup", title="Team")
    await storage.set_auto_transcribe(ALICE, False)
    alice_job, _ = await storage.create_job(job_request(1))
    await storage.complete_job_with_transcript(
        alice_job.id,
        user_id=ALICE,
        chat_id=ALICE,
        message_id=1,
        file_unique_id="a1",
        forward_origin=None,
        transcription=make_transcription("zebracorn private words"),
    )
    await storage.create_job(job_request(2, chat_id=GROUP))
    await add(storage, "zebracorn in the group", chat_id=GROUP, message_id=2)
    bob_job, _ = await storage.create_job(job_request(3, user_id=BOB, chat_id=GROUP))
    bob_id = await add(storage, "bob keeps zebracorn", user_id=BOB, chat_id=GROUP, message_id=3)

    assert await storage.forget_user(ALICE) == 2

    with raw(db_path) as conn:
        tables = [
            row[0]
            for row in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            if not row[0].startswith(("transcripts_fts", "sqlite_"))
        ]
        assert {"users", "chats", "transcripts", "jobs"} <= set(tables)
        for table in tables:
            columns = [row[1] for row in conn.execute(f"PRAGMA table_info({table})")]
            for column in columns:
                hits = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (ALICE,)).fetchone()[
                    0
                ]
                assert hits == 0, f"{table}.{column} still holds Alice's id"
        fts_rows = conn.execute(
            "SELECT rowid FROM transcripts_fts WHERE transcripts_fts MATCH 'zebracorn'"
        ).fetchall()
        assert fts_rows == [(bob_id,)]
        conn.execute("INSERT INTO transcripts_fts (transcripts_fts) VALUES ('integrity-check')")
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1

    assert await storage.get_store_history(ALICE) is True  # back to defaults
    assert await storage.get_auto_transcribe(ALICE) is True
    assert await storage.get_auto_transcribe(GROUP) is True  # the group is not Alice's
    assert await storage.get_job(bob_job.id) is not None
    bob_page = await storage.search(BOB, "zebracorn", chat_id=None, offset=0, limit=5)
    assert [hit.id for hit in bob_page.items] == [bob_id]
    assert await storage.forget_user(ALICE) == 0


async def test_purge_older_than(
    storage: Storage, clock: FakeClock, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(storage_module, "_PURGE_BATCH", 3)  # exercise several batches
    old_job, _ = await storage.create_job(job_request(1))
    await storage.finish_job(old_job.id, status=JobStatus.DONE)
    stuck_job, _ = await storage.create_job(job_request(2))
    for i in range(7):
        await add(storage, f"ancient kraken {i}", message_id=10 + i)
    clock.advance(10 * 86400)
    fresh = await add(storage, "fresh kraken", message_id=20)

    assert await storage.purge_older_than(5) == 7
    assert [r.id for r in await storage.export_user(ALICE)] == [fresh]
    assert (await storage.search(ALICE, "kraken", chat_id=None, offset=0, limit=10)).total == 1
    assert await storage.get_job(old_job.id) is None
    assert await storage.get_job(stuck_job.id) is not None  # unfinished work is never purged
    assert await storage.purge_older_than(5) == 0
    with raw(db_path) as conn:
        conn.execute("INSERT INTO transcripts_fts (transcripts_fts) VALUES ('integrity-check')")
    with pytest.raises(ValueError):
        await storage.purge_older_than(0)


# --- concurrency and stats -----------------------------------------------------------------


async def test_a_thousand_concurrent_inserts_lose_nothing(storage: Storage) -> None:
    ids = await asyncio.gather(
        *(
            add(storage, f"burst {i} capybara", user_id=ALICE if i % 2 else BOB, message_id=i)
            for i in range(1000)
        )
    )
    assert len(set(ids)) == 1000
    alice = await storage.history_page(ALICE, chat_id=None, offset=0, limit=1)
    bob = await storage.history_page(BOB, chat_id=None, offset=0, limit=1)
    assert alice.total == bob.total == 500
    assert (await storage.search(ALICE, "capybara", chat_id=None, offset=0, limit=1)).total == 500
    assert (await storage.stats()).transcripts == 1000


async def test_stats(storage: Storage, clock: FakeClock) -> None:
    await storage.upsert_chat(GROUP, chat_type="group")
    await add(storage, "long ago", duration=100.0, processing_seconds=50.0)
    clock.advance(2 * 86400)
    await add(storage, "a", duration=10.0, processing_seconds=1.0)
    await add(storage, "b", duration=20.0, processing_seconds=4.0, user_id=BOB)
    await add(storage, "c", duration=30.0, processing_seconds=3.0)
    await add(storage, "cache copy", duration=30.0, processing_seconds=0.0)
    job, _ = await storage.create_job(job_request(9))
    await storage.create_job(job_request(10))
    await storage.mark_job_running(job.id)

    stats = await storage.stats()
    assert (stats.users, stats.chats, stats.transcripts) == (2, 1, 5)
    assert stats.audio_seconds == 190.0
    assert (stats.queued_jobs, stats.running_jobs) == (1, 1)
    assert stats.median_processing_seconds_24h == 3.0
    assert stats.median_duration_24h == 20.0
    assert stats.median_real_time_factor_24h == pytest.approx(0.1)

    clock.advance(2 * 86400)
    assert (await storage.stats()).median_duration_24h is None
