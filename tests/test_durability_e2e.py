"""No voice note is lost: jobs are stored before work starts and resumed after a crash."""

from __future__ import annotations

import signal
import sqlite3
from pathlib import Path

import pytest

from bot.asr.recognizer import Recognizer
from tests.conftest import engine_text, final_replies, wait_ready
from tests.fake_telegram import FakeTelegram

pytestmark = pytest.mark.slow


def placeholders_stored(database: Path) -> int:
    with sqlite3.connect(database) as db:
        return db.execute("SELECT count(*) FROM jobs WHERE placeholder_message_id IS NOT NULL").fetchone()[0]


async def test_sigkill_with_five_queued_notes_answers_all_five_once_after_restart(
    telegram: FakeTelegram, start_bot, minutes_ogg: Path, recognizer: Recognizer, tmp_path: Path
) -> None:
    bot = start_bot()
    await wait_ready(telegram, bot)
    notes = []
    for user in range(1, 6):
        update = telegram.send_voice(user, user, telegram.add_file(minutes_ogg.read_bytes()), duration=200)
        notes.append((user, update["message"]["message_id"]))
    # Every job is persisted and has its placeholder; then the whole process group dies.
    await telegram.wait_for(
        lambda s: all(any(m.reply_to_message_id == mid for m in s.sent_messages(chat)) for chat, mid in notes),
        timeout=30,
    )
    # ...and the database knows each placeholder (so the restart edits it rather than adding one).
    database = tmp_path / "bot.sqlite3"
    await telegram.wait_for(lambda _: placeholders_stored(database) == 5, timeout=10)
    assert not all(final_replies(telegram, chat, mid) for chat, mid in notes), "killed too late: all were done"
    assert await bot.stop(signal.SIGKILL) == -signal.SIGKILL

    restarted = start_bot()
    await wait_ready(telegram, restarted)
    def complete(server: FakeTelegram, chat: int, message_id: int) -> bool:
        """Answered in full: the last part of a split transcript carries the format buttons."""
        parts = final_replies(server, chat, message_id)
        return bool(parts) and bool(parts[-1].buttons)

    await telegram.wait_for(lambda s: all(complete(s, chat, mid) for chat, mid in notes), timeout=240)
    expected = engine_text(recognizer, minutes_ogg)
    for chat, message_id in notes:
        # Exactly once: the reply messages (a long transcript is split) add up to one transcript.
        parts = final_replies(telegram, chat, message_id)
        assert " ".join(part.text or "" for part in parts).split() == expected.split()
    assert await restarted.stop() == 0

    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        assert db.execute("SELECT count(*) FROM transcripts").fetchone()[0] == 5
        statuses = db.execute("SELECT status, count(*) FROM jobs GROUP BY status").fetchall()
    assert statuses == [("done", 5)]


async def test_duplicate_update_gives_one_transcript_and_one_reply(
    telegram: FakeTelegram, start_bot, speech_ogg: Path, tmp_path: Path
) -> None:
    bot = start_bot()
    await wait_ready(telegram, bot)
    update = telegram.send_voice(77, 77, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    message_id = update["message"]["message_id"]
    await telegram.wait_for(lambda s: final_replies(s, 77, message_id), timeout=60)
    telegram.send_update({"message": update["message"]})  # Telegram delivers it again
    again = telegram.send_voice(77, 77, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    await telegram.wait_for(lambda s: final_replies(s, 77, again["message"]["message_id"]), timeout=60)
    assert len(final_replies(telegram, 77, message_id)) == 1
    assert await bot.stop() == 0
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        rows = db.execute("SELECT count(*) FROM transcripts WHERE message_id = ?", (message_id,)).fetchone()[0]
    assert rows == 1


async def test_cache_hit_answers_without_downloading(
    telegram: FakeTelegram, start_bot, speech_ogg: Path, tmp_path: Path
) -> None:
    bot = start_bot()
    await wait_ready(telegram, bot)
    file = telegram.add_file(speech_ogg.read_bytes())
    first = telegram.send_voice(81, 81, file, duration=5)
    [original] = await telegram.wait_for(lambda s: final_replies(s, 81, first["message"]["message_id"]), timeout=60)
    downloads = len(telegram.downloads())
    get_files = len(telegram.calls("getFile"))
    # Someone else forwards the same note: same file_unique_id.
    forwarded = telegram.send_voice(82, 82, file, duration=5, forward_from=81)
    [copy] = await telegram.wait_for(lambda s: final_replies(s, 82, forwarded["message"]["message_id"]), timeout=30)
    assert copy.text == original.text
    assert len(telegram.downloads()) == downloads and len(telegram.calls("getFile")) == get_files
    assert await bot.stop() == 0
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        owners = sorted(r[0] for r in db.execute("SELECT user_id FROM transcripts"))
    assert owners == [81, 82]
