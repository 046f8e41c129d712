"""Users' and chats' settings, and /forget, on real SQLite files."""

from __future__ import annotations

from pathlib import Path

from bot.storage import Storage
from tests.storage_support import (
    ALICE,
    BOB,
    GROUP,
    KEY,
    add,
    job_request,
    job_status,
    make_transcription,
    raw,
)


async def test_settings_default_on_and_survive_chat_updates(storage: Storage) -> None:
    assert await storage.preferences.auto_transcribe(GROUP) is True
    assert await storage.preferences.store_history(ALICE) is True

    await storage.preferences.set_auto_transcribe(GROUP, False)
    await storage.preferences.upsert_chat(GROUP, chat_type="supergroup", title="Team")
    assert await storage.preferences.auto_transcribe(GROUP) is False
    await storage.preferences.set_auto_transcribe(GROUP, True)
    assert await storage.preferences.auto_transcribe(GROUP) is True

    await storage.preferences.set_store_history(ALICE, False)
    await add(storage, "a transcript creates no new user row", user_id=ALICE)
    assert await storage.preferences.store_history(ALICE) is False
    assert await storage.preferences.store_history(BOB) is True
    await storage.preferences.set_store_history(ALICE, True)
    assert await storage.preferences.store_history(ALICE) is True


async def test_chat_language_defaults_to_auto_survives_chat_updates_and_is_forgotten(storage: Storage) -> None:
    assert await storage.preferences.language(GROUP) is None
    await storage.preferences.set_language(GROUP, "en,ru")
    await storage.preferences.upsert_chat(GROUP, chat_type="supergroup", title="Renamed")
    assert await storage.preferences.language(GROUP) == "en,ru"
    assert await storage.preferences.auto_transcribe(GROUP) is True
    await storage.preferences.set_language(GROUP, None)
    assert await storage.preferences.language(GROUP) is None
    await storage.preferences.set_language(ALICE, "de")  # a private chat: the user's own choice
    assert await storage.preferences.language(ALICE) == "de"
    await storage.preferences.forget_user(ALICE)
    assert await storage.preferences.language(ALICE) is None


async def test_forget_leaves_no_row_of_the_user(storage: Storage, db_path: Path) -> None:
    await storage.preferences.set_store_history(BOB, True)
    await storage.preferences.upsert_chat(ALICE, chat_type="private")
    await storage.preferences.upsert_chat(GROUP, chat_type="supergroup", title="Team")
    await storage.preferences.set_auto_transcribe(ALICE, False)
    alice_job, _ = await storage.jobs.create(job_request(1))
    await storage.jobs.complete(alice_job.id, make_transcription("zebracorn private words"), key=KEY)
    await storage.jobs.create(job_request(2, chat_id=GROUP))
    await add(storage, "zebracorn in the group", chat_id=GROUP, message_id=2)
    bob_job, _ = await storage.jobs.create(job_request(3, user_id=BOB, chat_id=GROUP))
    bob_id = await add(storage, "bob keeps zebracorn", user_id=BOB, chat_id=GROUP, message_id=3)

    assert await storage.preferences.forget_user(ALICE) == 2

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
                hits = conn.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (ALICE,)).fetchone()[0]
                assert hits == 0, f"{table}.{column} still holds Alice's id"
        fts_rows = conn.execute("SELECT rowid FROM transcripts_fts WHERE transcripts_fts MATCH 'zebracorn'").fetchall()
        assert fts_rows == [(bob_id,)]
        conn.execute("INSERT INTO transcripts_fts (transcripts_fts) VALUES ('integrity-check')")
        assert conn.execute("SELECT count(*) FROM users").fetchone()[0] == 1

    assert await storage.preferences.store_history(ALICE) is True  # back to defaults
    assert await storage.preferences.auto_transcribe(ALICE) is True
    assert await storage.preferences.auto_transcribe(GROUP) is True  # the group is not Alice's
    assert job_status(db_path, bob_job.id) == "queued"
    bob_page = await storage.search.find(BOB, "zebracorn", chat_id=None, offset=0, limit=5)
    assert [hit.id for hit in bob_page.items] == [bob_id]
    assert await storage.preferences.forget_user(ALICE) == 0
