"""/history, /search, /export, /forget, /privacy and /stats end to end, with privacy first.

The real bot process runs against the fake Bot API server. Paging and search tests seed
the SQLite file through `Storage` before the bot starts (much faster than transcribing);
the forget/privacy test makes its transcripts from real voice notes. Every test also
checks that another user, pressing real or forged buttons, gets nothing that isn't theirs.
"""

from __future__ import annotations

import asyncio
import json
import re
import sqlite3
from contextlib import closing
from pathlib import Path

import pytest

from bot.asr.types import TextOptions, Transcription, TranscriptionOptions, Word
from bot.storage import CacheKey, Storage
from bot.telegram import replies
from tests.conftest import BotProcess, wait_answer, wait_ready
from tests.fake_telegram import FakeTelegram, SentMessage

pytestmark = pytest.mark.slow

ALICE, BOB, CAROL, ADMIN = 1001, 1002, 1003, 1009
GROUP = -100555
START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
ORIGIN = json.dumps({"type": "hidden_user", "name": "Dana Example", "date": "2023-11-14T20:00:00+00:00"})
NOT_YOURS = "This list belongs to someone else. Send the command yourself to see yours."
ITEM_IDS = re.compile(r"^#(\d+) · ", re.MULTILINE)


def transcription(text: str) -> Transcription:
    words = tuple(Word(word, round(i * 0.5, 3), round(i * 0.5 + 0.4, 3)) for i, word in enumerate(text.split()))
    return Transcription(
        text=text, raw_text=text.upper(), words=words, duration=3.0 + len(words), model="tiny",
        options=TranscriptionOptions(chunk_seconds=20.0, stride_seconds=2.5), processing_seconds=0.5,
    )


async def seed(path: Path, items: list[tuple[int, int, str]]) -> list[int]:
    """Store (user, chat, text) transcripts a minute apart, oldest first; returns their ids."""
    now = [START]
    ids = []
    async with Storage.open(path, clock=lambda: now[0]) as storage:
        for index, (user_id, chat_id, text) in enumerate(items):
            now[0] = START + 60 * index
            ids.append(await storage.transcripts.add(
                user_id=user_id, chat_id=chat_id, message_id=100 + index, file_unique_id=f"seed-{index}",
                forward_origin=ORIGIN if "forwarded" in text else None, transcription=transcription(text),
                key=CacheKey(TextOptions(model="tiny"), punctuation_model=None),
            ))
    return ids


async def ask(telegram: FakeTelegram, chat_id: int, user_id: int, text: str, *, count: int = 1) -> list[SentMessage]:
    """Send `text` and return the bot's next `count` new messages in the chat."""
    before = len(telegram.sent_messages(chat_id, include_deleted=True))
    telegram.send_text(chat_id, user_id, text)
    return await telegram.wait_for(
        lambda s: (new := s.sent_messages(chat_id, include_deleted=True)[before:]) and len(new) >= count and new
    )


async def press(
    telegram: FakeTelegram, chat_id: int, user_id: int, message: SentMessage, data: str, *, strict: bool = True
) -> str | None:
    """Press a button and wait for the bot to answer the press; returns the answer's text."""
    before = len(telegram.calls("answerCallbackQuery"))
    telegram.press_button(chat_id, user_id, message.message_id, data, strict=strict)
    [answer, *_] = await telegram.wait_for(lambda s: s.calls("answerCallbackQuery")[before:])
    return answer.params.get("text")


async def press_and_edit(
    telegram: FakeTelegram, chat_id: int, user_id: int, message: SentMessage, data: str
) -> SentMessage:
    """Press a button on a list and return the list after the bot edited it."""
    edits = len(current(telegram, chat_id, message.message_id).history)
    await press(telegram, chat_id, user_id, message, data)
    return await telegram.wait_for(
        lambda s: (now := current(s, chat_id, message.message_id)) and len(now.history) > edits and now
    )


def current(telegram: FakeTelegram, chat_id: int, message_id: int) -> SentMessage:
    [message] = [m for m in telegram.sent_messages(chat_id, include_deleted=True) if m.message_id == message_id]
    return message


def listed(message: SentMessage) -> list[int]:
    return [int(found) for found in ITEM_IDS.findall(message.text or "")]


async def test_history_pages_scopes_and_refuses_other_users(
    telegram: FakeTelegram, start_bot, tmp_path: Path
) -> None:
    items = [(ALICE, ALICE, f"alice private note {i}" + (" forwarded" if i == 11 else "")) for i in range(12)]
    items += [(ALICE, GROUP, f"alice team note {i}") for i in range(2)]
    items += [(BOB, GROUP, "bob team secret"), (BOB, BOB, "bob private secret")]
    ids = await seed(tmp_path / "bot.sqlite3", items)
    alice_newest = ids[:14][::-1]
    alice_group, bob_group, bob_private = ids[13:11:-1], ids[14], ids[15]
    telegram.add_chat(GROUP, chat_type="supergroup", title="Team <&>")
    bot: BotProcess = start_bot()
    await wait_ready(telegram, bot)

    # Private view: everything of Alice's, newest first, 5 a page, with open buttons.
    [page] = await ask(telegram, ALICE, ALICE, "/history")
    assert listed(page) == alice_newest[:5]
    assert (page.text or "").startswith("Your transcripts, newest first (1–5 of 14):")
    # Seeded without a `chats` row, so no title is known for the group: it is "a group".
    assert f"#{ids[13]} · 2023-11-14 22:26 · a group · 0:07\nalice team note 1" in (page.text or "")
    assert "· private · 0:08 · from Dana Example\nalice private note 11 forwarded" in (page.text or "")
    assert page.buttons == [
        *((f"#{i}", f"show:{ALICE}:{i}") for i in alice_newest[:5]), ("Older »", f"hist:{ALICE}:5")
    ]

    page = await press_and_edit(telegram, ALICE, ALICE, page, f"hist:{ALICE}:5")
    assert listed(page) == alice_newest[5:10]
    assert page.buttons[-2:] == [("« Newer", f"hist:{ALICE}:0"), ("Older »", f"hist:{ALICE}:10")]
    page = await press_and_edit(telegram, ALICE, ALICE, page, f"hist:{ALICE}:10")
    assert listed(page) == alice_newest[10:]
    assert page.buttons[-1] == ("« Newer", f"hist:{ALICE}:5")
    page = await press_and_edit(telegram, ALICE, ALICE, page, f"hist:{ALICE}:5")
    assert listed(page) == alice_newest[5:10]

    # An item button and /history N open one transcript in full; someone else's id is "not found".
    assert await press(telegram, ALICE, ALICE, page, f"show:{ALICE}:{ids[4]}") is None
    opened = telegram.sent_messages(ALICE)[-1]
    assert opened.text == f"#{ids[4]} · 2023-11-14 22:17 · private · 0:07\n\nalice private note 4"
    assert opened.reply_to_message_id == page.message_id
    # A button left on the list after its transcript is gone (retention, another device) finds nothing.
    with closing(sqlite3.connect(tmp_path / "bot.sqlite3")) as db, db:
        assert db.execute("DELETE FROM transcripts WHERE id = ?", (ids[5],)).rowcount == 1
    stale = await press(telegram, ALICE, ALICE, page, f"show:{ALICE}:{ids[5]}")
    assert stale == f"I can't find transcript #{ids[5]} in your history."
    [opened] = await ask(telegram, ALICE, ALICE, f"/history {ids[0]}")
    assert (opened.text or "").endswith("\n\nalice private note 0")
    for foreign in (bob_private, bob_group, 999_999, 10**18 - 1):
        [refused] = await ask(telegram, ALICE, ALICE, f"/history {foreign}")
        assert refused.text == f"I can't find transcript #{foreign} in your history."
    [usage] = await ask(telegram, ALICE, ALICE, "/history 1 2")
    assert (usage.text or "").startswith("Usage:")

    # Group view: only Alice's items from this group; never Bob's, never her private ones.
    [group_page] = await ask(telegram, GROUP, ALICE, "/history")
    assert listed(group_page) == alice_group
    assert (group_page.text or "").startswith("Your transcripts in Team <&>, newest first (1–2 of 2):")
    assert "private" not in (group_page.text or "") and "bob" not in (group_page.text or "")
    [refused] = await ask(telegram, GROUP, ALICE, f"/history {ids[0]}")
    assert refused.text == f"I can't find transcript #{ids[0]} in your history in Team <&>."
    [bob_page] = await ask(telegram, GROUP, BOB, "/history")
    assert listed(bob_page) == [bob_group]

    # Bob pressing Alice's buttons, real or forged, gets nothing of hers and changes nothing.
    group_before = len(telegram.sent_messages(GROUP))
    assert await press(telegram, GROUP, BOB, group_page, f"show:{ALICE}:{alice_group[0]}") == NOT_YOURS
    forged = [f"show:{BOB}:{alice_group[0]}", f"show:{BOB}:{bob_group}", f"hist:{BOB}:0", f"hist:{ALICE}:999999999",
              f"show:{ALICE}:{ids[0]}", "forget:no", f"forget:yes:{BOB}"]
    for data in forged:
        assert await press(telegram, GROUP, BOB, group_page, data, strict=False) == replies.STALE_BUTTON
    # Malformed data matches none of the history patterns (the generic stale-button answer).
    for data in ("hist:", f"hist:{BOB}:-5", f"hist:{BOB}:5\n", f"show:{BOB}:٣", f"show:{BOB}:{10**18}", "x" * 64):
        assert await press(telegram, GROUP, BOB, group_page, data, strict=False) == replies.STALE_BUTTON
    # A press from Bob on a message in Alice's private chat (only a forged update can do that).
    assert await press(telegram, ALICE, BOB, page, f"hist:{BOB}:0", strict=False) == replies.STALE_BUTTON
    # Alice's own button still works; the only new group message is the transcript she opened.
    assert await press(telegram, GROUP, ALICE, group_page, f"show:{ALICE}:{alice_group[1]}") is None
    await asyncio.sleep(0.5)
    new_in_group = [m.text for m in telegram.sent_messages(GROUP)[group_before:]]
    assert new_in_group == [f"#{alice_group[1]} · 2023-11-14 22:25 · Team <&> · 0:07\n\nalice team note 0"]
    assert current(telegram, GROUP, group_page.message_id).history == group_page.history
    assert telegram.sent_messages(BOB) == []
    assert "Traceback" not in bot.log
    assert await bot.stop() == 0


async def test_search_ranks_highlights_pages_and_export_round_trips(
    telegram: FakeTelegram, start_bot, tmp_path: Path
) -> None:
    texts = [
        "apple banana cherry",
        "apple apple apple pie",
        "banana split forwarded",
        *(f"one apple number {i} in a very long row of other words here" for i in range(6)),
        "tags <b> & apple </b> plus",
    ]
    ids = await seed(tmp_path / "bot.sqlite3", [(ALICE, ALICE, text) for text in texts] + [(BOB, BOB, "apple secret")])
    apple_ids = {i for i, text in zip(ids, texts, strict=False) if "apple" in text}
    telegram.add_chat(GROUP, chat_type="supergroup", title="Team")
    bot = start_bot()
    await wait_ready(telegram, bot)

    [results] = await ask(telegram, ALICE, ALICE, "/search Apple")
    text = results.text or ""
    assert text.startswith("Search: Apple\n9 matches, best first (1–5):")
    assert listed(results)[0] == ids[1], "three hits in a short transcript rank first"
    bold = [text[e["offset"]: e["offset"] + e["length"]] for e in results.entities if e["type"] == "bold"]
    assert bold and all(word.lower() == "apple" for word in bold)
    assert "secret" not in text
    assert results.buttons[-1] == ("Next »", f"srch:{ALICE}:5")
    second = await press_and_edit(telegram, ALICE, ALICE, results, f"srch:{ALICE}:5")
    assert (second.text or "").startswith("Search: Apple\n9 matches, best first (6–9):")
    assert set(listed(results)) | set(listed(second)) == apple_ids
    assert "tags <b> & apple </b> plus" in text + (second.text or ""), "transcript text is escaped, not markup"
    assert second.buttons[-1] == ("« Previous", f"srch:{ALICE}:0")
    assert await press(telegram, ALICE, BOB, second, f"srch:{ALICE}:0") == NOT_YOURS

    [both] = await ask(telegram, ALICE, ALICE, "/search banana cherry")
    assert listed(both) == [ids[0]]
    for hostile in ('"foo OR *', "NEAR(apple", "* - :", "<b>&amp;"):
        [reply] = await ask(telegram, ALICE, ALICE, f"/search {hostile}")
        assert reply.text == f"Search: {hostile}\nNothing found in your transcripts."
    [usage] = await ask(telegram, ALICE, ALICE, "/search")
    assert (usage.text or "").startswith("Usage: /search")
    [in_group] = await ask(telegram, GROUP, ALICE, "/search apple")
    assert in_group.text == "Search: apple\nNothing found in your transcripts in Team."

    # /export: never into a group; in private a .txt and a .json that parses back to what is stored.
    [refused] = await ask(telegram, GROUP, ALICE, "/export")
    assert refused.text == "Use /export in a private chat with me." and refused.document is None
    txt, data = await ask(telegram, ALICE, ALICE, "/export", count=2)
    assert txt.document and data.document
    assert txt.document.file_name.endswith(".txt") and data.document.file_name.endswith(".json")
    readable = txt.document.data.decode()
    assert f"#{ids[0]} · 2023-11-14 22:13:20 UTC · private chat · 0:06" in readable
    # Timed lines are the stored (post-processed) words as they are: the seed's are lower case.
    assert "Forwarded from Dana Example" in readable and "[0:00] apple banana cherry" in readable
    exported = json.loads(data.document.data)
    assert [record["id"] for record in exported] == ids[: len(texts)]
    assert [record["transcription"]["text"] for record in exported] == texts
    assert [record["user_id"] for record in exported] == [ALICE] * len(texts)
    for record, text in zip(exported, texts, strict=True):
        words = [Word(**word) for word in record["transcription"]["words"]]
        assert words == list(transcription(text).words)
    [nothing] = await ask(telegram, CAROL, CAROL, "/export")
    assert nothing.text == "You have no saved transcripts to export."
    assert "Traceback" not in bot.log
    assert await bot.stop() == 0


async def test_privacy_stats_and_forget(telegram: FakeTelegram, start_bot, speech_ogg: Path, tmp_path: Path) -> None:
    telegram.add_chat(GROUP, chat_type="supergroup", title="Team")
    bot = start_bot(ADMIN_USER_IDS=str(ADMIN))
    await wait_ready(telegram, bot)
    database = tmp_path / "bot.sqlite3"

    def rows(sql: str, *params: object) -> list[tuple[object, ...]]:
        with closing(sqlite3.connect(database)) as db:
            return db.execute(sql, params).fetchall()

    def count(sql: str, *params: object) -> int:
        return int(rows(sql, *params)[0][0])  # type: ignore[call-overload]

    voices = [(ALICE, ALICE), (ALICE, GROUP), (BOB, BOB)]
    sent = [(chat, telegram.send_voice(chat, user, telegram.add_file(speech_ogg.read_bytes()), duration=5))
            for user, chat in voices]
    for chat, update in sent:
        await wait_answer(telegram, chat, update["message"]["message_id"])

    # The voice note from the group is named by the group's title in Alice's private views.
    [alice_group_id] = [row[0] for row in rows("SELECT id FROM transcripts WHERE user_id = ? AND chat_id = ?",
                                               ALICE, GROUP)]
    [page] = await ask(telegram, ALICE, ALICE, "/history")
    assert re.search(rf"^#{alice_group_id} · [0-9-]+ [0-9:]+ · Team · \d+:\d\d$", page.text or "", re.MULTILINE)
    assert " · private · " in (page.text or "") and "a group" not in (page.text or "")
    [opened] = await ask(telegram, ALICE, ALICE, f"/history {alice_group_id}")
    assert re.match(rf"#{alice_group_id} · [0-9-]+ [0-9:]+ · Team · \d+:\d\d\n\n", opened.text or "")

    # /privacy off: the next voice note is still answered, but not stored.
    [state] = await ask(telegram, BOB, BOB, "/privacy")
    assert state.text == "Storing your transcripts is on. /privacy on or /privacy off changes it."
    [off] = await ask(telegram, BOB, BOB, "/privacy OFF")
    assert (off.text or "").startswith("OK, I won't store your new transcripts.")
    [usage] = await ask(telegram, BOB, BOB, "/privacy maybe")
    assert usage.text == "Usage: /privacy on or /privacy off."
    unstored = telegram.send_voice(BOB, BOB, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    [answer] = await wait_answer(telegram, BOB, unstored["message"]["message_id"])
    assert answer.text and not answer.text.startswith("Transcribing")
    assert count("SELECT count(*) FROM transcripts WHERE user_id = ?", BOB) == 1
    [empty] = await ask(telegram, BOB, BOB, "/search nothingmatches")
    assert empty.text == "Search: nothingmatches\nNothing found in your transcripts."

    # /stats: refused in private, silent in a group, figures for an admin.
    [refused] = await ask(telegram, ALICE, ALICE, "/stats")
    assert refused.text == "/stats is only for the bot's operators."
    quiet = telegram.send_text(GROUP, ALICE, "/stats")
    [stats] = await ask(telegram, ADMIN, ADMIN, "/stats")
    assert "Transcripts: 3 (0.0 h of audio)" in (stats.text or "")
    assert "Workers ready: 1" in (stats.text or "") and "Queue depth: 0" in (stats.text or "")
    assert re.search(r"Median real-time factor, last 24 h: \d+\.\d\d$", stats.text or "")
    await asyncio.sleep(0.5)
    assert not [m for m in telegram.sent_messages(GROUP) if m.reply_to_message_id == quiet["message"]["message_id"]]

    # /forget: private only; only Alice can confirm it, and then nothing of hers is left.
    [private_only] = await ask(telegram, GROUP, ALICE, "/forget")
    assert private_only.text == "Use /forget in a private chat with me."
    [prompt] = await ask(telegram, ALICE, ALICE, "/forget")
    assert (prompt.text or "").startswith("Delete your 2 transcripts and everything else")
    assert prompt.buttons == [("Yes, delete everything", f"forget:yes:{ALICE}"), ("Cancel", "forget:no")]
    assert await press(telegram, ALICE, BOB, prompt, f"forget:yes:{ALICE}") == NOT_YOURS
    assert await press(telegram, ALICE, BOB, prompt, f"forget:yes:{BOB}", strict=False) == replies.STALE_BUTTON
    assert count("SELECT count(*) FROM transcripts WHERE user_id = ?", ALICE) == 2
    alice_ids = {row[0] for row in rows("SELECT id FROM transcripts WHERE user_id = ?", ALICE)}
    done = await press_and_edit(telegram, ALICE, ALICE, prompt, f"forget:yes:{ALICE}")
    assert done.text == "Done: I deleted 2 transcripts and everything else I stored about you."
    assert done.buttons == []
    [gone] = await ask(telegram, ALICE, ALICE, "/history")
    assert gone.text == "You have no saved transcripts yet. Send me a voice message to make one."
    assert "Traceback" not in bot.log
    assert await bot.stop() == 0

    with closing(sqlite3.connect(database)) as db:
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        checked = 0
        for table in tables:
            columns = {row[1] for row in db.execute(f"PRAGMA table_info('{table}')")}
            for column in columns & {"user_id", "chat_id"} | ({"id"} if table in ("users", "chats") else set()):
                assert db.execute(f"SELECT count(*) FROM {table} WHERE {column} = ?", (ALICE,)).fetchone()[0] == 0
                checked += 1
        assert checked >= 5
        indexed = {row[0] for row in db.execute("SELECT id FROM transcripts_fts_docsize")}
        assert indexed and not indexed & alice_ids
        db.execute("INSERT INTO transcripts_fts (transcripts_fts) VALUES ('integrity-check')")
        assert db.execute("SELECT count(*) FROM transcripts WHERE user_id = ?", (BOB,)).fetchone()[0] == 1
        assert db.execute("SELECT store_history FROM users WHERE id = ?", (BOB,)).fetchone()[0] == 0
        assert db.execute("SELECT count(*) FROM jobs WHERE user_id = ?", (BOB,)).fetchone()[0] == 2
