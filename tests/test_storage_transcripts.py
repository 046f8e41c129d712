"""Stored transcripts on real SQLite files: the cache keyed on text options and punctuation model,
the language of the text, history pages, ownership, export and retention."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

import bot.storage.transcripts as transcripts_module
from bot.asr.types import TextOptions
from bot.storage import CacheKey, JobStatus, Storage
from tests.storage_support import (
    ALICE,
    BOB,
    GROUP,
    KEY,
    MODEL,
    OPTIONS,
    START,
    TEXT_OPTIONS,
    FakeClock,
    add,
    job_request,
    job_status,
    make_transcription,
    raw,
)

# --- cache -----------------------------------------------------------------------------------


async def test_find_cached_returns_the_newest_copy(storage: Storage, clock: FakeClock) -> None:
    assert await storage.transcripts.find_cached("voice-abc", KEY) is None
    await add(storage, "first take", file_unique_id="voice-abc")
    clock.advance(10)
    await add(storage, "second take", file_unique_id="voice-abc", duration=4.0, processing_seconds=2.0)

    cached = await storage.transcripts.find_cached("voice-abc", KEY)
    assert cached == make_transcription("second take", duration=4.0, processing_seconds=0.0)
    assert cached.options == OPTIONS and cached.model == MODEL

    copy_id = await storage.transcripts.add(
        user_id=BOB,
        chat_id=BOB,
        message_id=3,
        file_unique_id="voice-abc",
        forward_origin='{"type": "user", "sender_user_name": "Alice"}',
        transcription=cached,
        key=KEY,
    )
    record = await storage.transcripts.get(copy_id, user_id=BOB)
    assert record is not None and record.transcription == cached


async def test_a_new_model_misses_the_cache_of_the_old_one(storage: Storage, clock: FakeClock) -> None:
    """After ASR_MODEL changes, a re-sent file is transcribed again: the old model's text
    does not answer a request for the new one, and each model then keeps its own copy."""
    old = CacheKey(TextOptions(model="models/a"), punctuation_model=None)
    new = CacheKey(TextOptions(model="models/b"), punctuation_model=None)
    await add(storage, "text from a", file_unique_id="note", key=old)
    assert await storage.transcripts.find_cached("note", new) is None

    clock.advance(5)
    await add(storage, "text from b", file_unique_id="note", key=new, message_id=2)
    from_new = await storage.transcripts.find_cached("note", new)
    from_old = await storage.transcripts.find_cached("note", old)
    assert from_new is not None and (from_new.text, from_new.model) == ("text from b", "models/b")
    assert from_old is not None and (from_old.text, from_old.model) == ("text from a", "models/a")


@pytest.mark.parametrize(
    "other",
    [
        TextOptions(model=MODEL, language="de"),
        TextOptions(model=MODEL, decoder="beam"),
        TextOptions(model=MODEL, hotwords=("Kubernetes",)),
        TextOptions(model=MODEL, postprocess=()),
    ],
    ids=["language", "decoder", "hotwords", "postprocess"],
)
async def test_every_text_option_is_part_of_the_cache_key(storage: Storage, other: TextOptions) -> None:
    await add(storage, "default options", file_unique_id="note")
    assert await storage.transcripts.find_cached("note", CacheKey(other, punctuation_model=None)) is None
    assert await storage.transcripts.find_cached("note", CacheKey(TextOptions(model=MODEL), None)) is not None


async def test_the_punctuation_model_is_part_of_the_cache_key(storage: Storage, clock: FakeClock) -> None:
    """Only PUNCTUATION_MODEL differs: a file transcribed while it was off is not answered from the
    cache once it is on (nor with another punctuation model), and each keeps its own copy."""
    punctuated = CacheKey(TEXT_OPTIONS, punctuation_model="models/punctuation")
    other = CacheKey(TEXT_OPTIONS, punctuation_model="models/other-punctuation")
    await add(storage, "bare text", file_unique_id="note")
    assert await storage.transcripts.find_cached("note", punctuated) is None
    assert await storage.transcripts.find_cached("note", other) is None

    clock.advance(5)
    await add(storage, "Punctuated, text.", file_unique_id="note", key=punctuated, message_id=2)
    from_punctuated = await storage.transcripts.find_cached("note", punctuated)
    from_bare = await storage.transcripts.find_cached("note", KEY)
    assert from_punctuated is not None and from_punctuated.text == "Punctuated, text."
    assert from_bare is not None and from_bare.text == "bare text"
    assert await storage.transcripts.find_cached("note", other) is None


# --- the language of the text ----------------------------------------------------------------


async def test_the_language_is_stored_and_read_back_everywhere(storage: Storage, clock: FakeClock) -> None:
    """Requested or detected (the request asked for none), the language of the text is stored with it:
    a cache hit returns it, and history, search, the opened transcript and the export carry it."""
    detected = await add(storage, "guten tag walrus", file_unique_id="de-note", language="de")
    clock.advance(1)
    unknown = await add(storage, "plain walrus", file_unique_id="plain", message_id=2)
    requested_key = CacheKey(TextOptions(model=MODEL, language="en"), punctuation_model=None)
    clock.advance(1)
    requested = await add(
        storage, "hello walrus", file_unique_id="en-note", key=requested_key, message_id=3, language="en"
    )
    languages = {detected: "de", unknown: None, requested: "en"}

    hit = await storage.transcripts.find_cached("de-note", KEY)
    assert hit is not None and (hit.text, hit.language, hit.options.language) == ("guten tag walrus", "de", None)
    hit = await storage.transcripts.find_cached("en-note", requested_key)
    assert hit is not None and hit.language == "en"
    page = await storage.transcripts.history_page(ALICE, chat_id=None, offset=0, limit=10)
    assert {item.id: item.language for item in page.items} == languages
    found = await storage.search.find(ALICE, "walrus", chat_id=None, offset=0, limit=10)
    assert {item.id: item.language for item in found.items} == languages
    for transcript_id, language in languages.items():
        record = await storage.transcripts.get(transcript_id, user_id=ALICE)
        assert record is not None and record.transcription.language == language
    exported = json.loads(json.dumps([r.to_dict() for r in await storage.transcripts.export_user(ALICE)]))
    assert [record["transcription"]["language"] for record in exported] == ["de", None, "en"]


# --- history and privacy ---------------------------------------------------------------------


async def test_history_pages_newest_first_with_totals(storage: Storage, clock: FakeClock) -> None:
    for i in range(25):
        await add(storage, f"note number {i}", message_id=i)
        if i % 2:
            clock.advance(1)  # some share a created_at: id breaks the tie
    first = await storage.transcripts.history_page(ALICE, chat_id=None, offset=0, limit=10)
    assert first.total == 25 and first.has_more
    assert [item.text for item in first.items] == [f"note number {i}" for i in range(24, 14, -1)]
    last = await storage.transcripts.history_page(ALICE, chat_id=None, offset=20, limit=10)
    assert [item.message_id for item in last.items] == [4, 3, 2, 1, 0] and not last.has_more
    beyond = await storage.transcripts.history_page(ALICE, chat_id=None, offset=30, limit=10)
    assert beyond.items == () and beyond.total == 25
    empty = await storage.transcripts.history_page(BOB, chat_id=None, offset=0, limit=10)
    assert (empty.items, empty.total) == ((), 0)
    with pytest.raises(ValueError):
        await storage.transcripts.history_page(ALICE, chat_id=None, offset=-1, limit=10)


async def test_group_view_and_ownership_are_private(storage: Storage) -> None:
    alice_private = await add(storage, "alice private secret", message_id=1)
    alice_group = await add(storage, "alice group secret", chat_id=GROUP, message_id=2)
    bob_group = await add(storage, "bob group secret", user_id=BOB, chat_id=GROUP, message_id=3)
    bob_private = await add(storage, "bob private secret", user_id=BOB, message_id=4)

    in_group = await storage.transcripts.history_page(ALICE, chat_id=GROUP, offset=0, limit=10)
    assert [item.id for item in in_group.items] == [alice_group] and in_group.total == 1
    everywhere = await storage.transcripts.history_page(ALICE, chat_id=None, offset=0, limit=10)
    assert {item.id for item in everywhere.items} == {alice_private, alice_group}
    bob_sees = await storage.transcripts.history_page(BOB, chat_id=None, offset=0, limit=10)
    assert {item.id for item in bob_sees.items} == {bob_group, bob_private}

    assert await storage.transcripts.get(bob_group, user_id=ALICE) is None
    assert await storage.transcripts.get(bob_private, user_id=ALICE, chat_id=GROUP) is None
    assert await storage.transcripts.get(alice_private, user_id=ALICE, chat_id=GROUP) is None
    mine = await storage.transcripts.get(alice_group, user_id=ALICE, chat_id=GROUP)
    assert mine is not None and mine.transcription.text == "alice group secret"


async def test_items_carry_the_stored_chat_title(storage: Storage) -> None:
    untitled, unknown = GROUP - 1, GROUP - 2
    await storage.preferences.upsert_chat(ALICE, chat_type="private")
    await storage.preferences.upsert_chat(GROUP, chat_type="supergroup", title="Old name")
    await storage.preferences.upsert_chat(GROUP, chat_type="supergroup", title="Team <&>")  # renamed: latest wins
    await storage.preferences.upsert_chat(untitled, chat_type="group", title="")
    private = await add(storage, "kiwi private", message_id=1)
    titled = await add(storage, "kiwi titled", chat_id=GROUP, message_id=2)
    empty = await add(storage, "kiwi empty title", chat_id=untitled, message_id=3)
    no_row = await add(storage, "kiwi no chat row", chat_id=unknown, message_id=4)
    expected = {private: None, titled: "Team <&>", empty: None, no_row: None}

    page = await storage.transcripts.history_page(ALICE, chat_id=None, offset=0, limit=10)
    assert {item.id: item.chat_title for item in page.items} == expected
    found = await storage.search.find(ALICE, "kiwi", chat_id=None, offset=0, limit=10)
    assert {hit.id: hit.chat_title for hit in found.items} == expected
    in_group = await storage.transcripts.history_page(ALICE, chat_id=GROUP, offset=0, limit=10)
    assert [(item.id, item.chat_title) for item in in_group.items] == [(titled, "Team <&>")]
    for transcript_id, title in expected.items():
        record = await storage.transcripts.get(transcript_id, user_id=ALICE)
        assert record is not None and record.chat_title == title
    assert {r.id: r.chat_title for r in await storage.transcripts.export_user(ALICE)} == expected


# --- export, retention, concurrency ----------------------------------------------------------


async def test_export_round_trips_everything(storage: Storage, clock: FakeClock) -> None:
    originals = [make_transcription(f"entry {i} with words", duration=1.5 + i) for i in range(3)]
    for i, transcription in enumerate(originals):
        await storage.transcripts.add(
            user_id=ALICE,
            chat_id=GROUP if i == 1 else ALICE,
            message_id=100 + i,
            file_unique_id=f"f{i}",
            forward_origin='{"type": "hidden_user", "sender_user_name": "Zoë"}' if i == 2 else None,
            transcription=transcription,
            key=KEY,
        )
        clock.advance(60)
    await add(storage, "not alice's", user_id=BOB)

    records = await storage.transcripts.export_user(ALICE)
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


async def test_purge_older_than(
    storage: Storage, clock: FakeClock, db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(transcripts_module, "_PURGE_BATCH", 3)  # exercise several batches
    old_job, _ = await storage.jobs.create(job_request(1))
    await storage.jobs.finish(old_job.id, status=JobStatus.DONE)
    stuck_job, _ = await storage.jobs.create(job_request(2))
    for i in range(7):
        await add(storage, f"ancient kraken {i}", message_id=10 + i)
    clock.advance(10 * 86400)
    fresh = await add(storage, "fresh kraken", message_id=20)

    assert await storage.transcripts.purge_older_than(5) == 7
    assert [r.id for r in await storage.transcripts.export_user(ALICE)] == [fresh]
    assert (await storage.search.find(ALICE, "kraken", chat_id=None, offset=0, limit=10)).total == 1
    assert job_status(db_path, old_job.id) is None
    assert job_status(db_path, stuck_job.id) == "queued"  # unfinished work is never purged
    assert await storage.transcripts.purge_older_than(5) == 0
    with raw(db_path) as conn:
        conn.execute("INSERT INTO transcripts_fts (transcripts_fts) VALUES ('integrity-check')")
    with pytest.raises(ValueError):
        await storage.transcripts.purge_older_than(0)


async def test_a_thousand_concurrent_inserts_lose_nothing(storage: Storage) -> None:
    ids = await asyncio.gather(
        *(
            add(storage, f"burst {i} capybara", user_id=ALICE if i % 2 else BOB, message_id=i)
            for i in range(1000)
        )
    )
    assert len(set(ids)) == 1000
    alice = await storage.transcripts.history_page(ALICE, chat_id=None, offset=0, limit=1)
    bob = await storage.transcripts.history_page(BOB, chat_id=None, offset=0, limit=1)
    assert alice.total == bob.total == 500
    assert (await storage.search.find(ALICE, "capybara", chat_id=None, offset=0, limit=1)).total == 500
    assert (await storage.stats.summary()).transcripts == 1000
