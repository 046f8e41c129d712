"""The bot end to end: `python -m bot run` against the fake Bot API server, over real HTTP.

Each test injects updates as Telegram would and asserts on what the bot sent back.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path

import pytest

from bot.asr.recognizer import Recognizer
from tests.conftest import BotProcess, engine_text, final_replies, wait_answer, wait_ready
from tests.fake_telegram import FakeTelegram

pytestmark = pytest.mark.slow

GROUP = -100200300


async def test_private_voice_note_gets_its_transcript_as_a_reply(
    telegram: FakeTelegram, start_bot, speech_ogg: Path, recognizer: Recognizer
) -> None:
    bot: BotProcess = start_bot()
    await wait_ready(telegram, bot)
    file = telegram.add_file(speech_ogg.read_bytes())
    update = telegram.send_voice(501, 501, file, duration=5)
    message_id = update["message"]["message_id"]

    [reply] = await wait_answer(telegram, 501, message_id)

    assert reply.text == engine_text(recognizer, speech_ogg)
    assert reply.history[0].startswith("Transcribing… 0:05 of audio")
    assert [label for label, _ in reply.buttons] == [".txt", ".srt", ".vtt"]
    assert telegram.calls("sendChatAction")[0].params["action"] == "typing"
    assert {c["command"] for c in telegram.commands()} >= {"help", "history", "transcribe"}
    assert await bot.stop() == 0


async def test_forwarded_group_and_transcribe_reply(
    telegram: FakeTelegram, start_bot, speech_ogg: Path, recognizer: Recognizer, tmp_path: Path
) -> None:
    bot = start_bot()
    await wait_ready(telegram, bot)
    expected = engine_text(recognizer, speech_ogg)

    # A forwarded voice note: answered, and its origin kept in the history.
    forwarded = telegram.send_voice(502, 502, telegram.add_file(speech_ogg.read_bytes()), duration=5,
                                    forward_from="Alice Example")
    [reply] = await wait_answer(telegram, 502, forwarded["message"]["message_id"])
    assert reply.text == expected

    # A voice note in a group is answered automatically, in the group, as a reply.
    telegram.add_chat(GROUP, chat_type="supergroup", title="Team")
    in_group = telegram.send_voice(GROUP, 503, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    [group_reply] = await wait_answer(telegram, GROUP, in_group["message"]["message_id"])
    assert group_reply.text == expected

    # An audio file in a group is not auto-transcribed; /transcribe as a reply does it.
    audio = telegram.send_audio(GROUP, 504, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    audio_id = audio["message"]["message_id"]
    await asyncio.sleep(1.5)
    assert not final_replies(telegram, GROUP, audio_id)
    telegram.send_text(GROUP, 504, "/transcribe", reply_to_message=audio_id)
    [on_request] = await wait_answer(telegram, GROUP, audio_id)
    assert on_request.text == expected

    assert await bot.stop() == 0
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        origin = db.execute("SELECT forward_origin FROM transcripts WHERE user_id = 502").fetchone()[0]
        owners = {row[0] for row in db.execute("SELECT user_id FROM transcripts")}
    assert json.loads(origin)["name"] == "Alice Example"
    assert owners == {502, 503, 504}


async def test_auto_off_by_group_admin(telegram: FakeTelegram, start_bot, speech_ogg: Path) -> None:
    bot = start_bot()
    await wait_ready(telegram, bot)
    telegram.add_chat(GROUP, chat_type="supergroup", title="Team")
    telegram.set_admins(GROUP, [601])
    telegram.send_text(GROUP, 602, "/auto off")
    await telegram.wait_for(lambda s: any("Only group admins" in (m.text or "") for m in s.sent_messages(GROUP)))
    telegram.send_text(GROUP, 601, "/auto off")
    await telegram.wait_for(lambda s: any("is off" in (m.text or "") for m in s.sent_messages(GROUP)))
    voice = telegram.send_voice(GROUP, 602, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    await asyncio.sleep(2)
    assert not [m for m in telegram.sent_messages(GROUP) if m.reply_to_message_id == voice["message"]["message_id"]]
    assert await bot.stop() == 0


async def test_long_transcript_is_split_then_sent_as_file(
    telegram: FakeTelegram, start_bot, minutes_ogg: Path, recognizer: Recognizer
) -> None:
    expected = engine_text(recognizer, minutes_ogg)
    assert len(expected) > 4096, "the tiny model must produce a transcript longer than one message"

    bot = start_bot(TRANSCRIPT_FILE_CHARS=str(len(expected) + 1))
    await wait_ready(telegram, bot)
    update = telegram.send_voice(701, 701, telegram.add_file(minutes_ogg.read_bytes()), duration=200)
    message_id = update["message"]["message_id"]
    # The last part carries the format buttons: wait for it, not just the first edit.
    parts = await telegram.wait_for(
        lambda s: (found := final_replies(s, 701, message_id)) and found[-1].buttons and found, timeout=120
    )
    assert len(parts) >= 2
    assert all(len(part.text or "") <= 4096 for part in parts)
    assert " ".join(part.text or "" for part in parts).split() == expected.split()
    assert parts[-1].buttons and not parts[0].buttons
    assert await bot.stop() == 0

    bot = start_bot(TRANSCRIPT_FILE_CHARS="1000")
    await wait_ready(telegram, bot)
    update = telegram.send_voice(702, 702, telegram.add_file(minutes_ogg.read_bytes()), duration=200)
    answer = await wait_answer(telegram, 702, update["message"]["message_id"], timeout=120)
    [document] = [m.document for m in answer if m.document]
    assert document.data.decode().strip() == expected
    assert await bot.stop() == 0


async def test_corrupt_and_non_audio_inputs(telegram: FakeTelegram, start_bot) -> None:
    bot = start_bot()
    await wait_ready(telegram, bot)
    corrupt = telegram.send_voice(801, 801, telegram.add_file(b"OggS" + bytes(range(256)) * 8), duration=3)
    [reply] = await wait_answer(telegram, 801, corrupt["message"]["message_id"])
    assert "couldn't read any audio" in (reply.text or "")

    pdf = telegram.send_document(801, 801, telegram.add_file(b"%PDF-1.4 not audio"), mime_type="application/pdf",
                                 file_name="report.pdf")
    assert pdf["message"]["document"]["mime_type"] == "application/pdf"
    await telegram.wait_for(lambda s: [m for m in s.sent_messages(801) if "Send me a voice message" in (m.text or "")])

    telegram.add_chat(GROUP, chat_type="supergroup", title="Team")
    telegram.send_text(GROUP, 802, "hello everyone")
    telegram.send_document(GROUP, 802, telegram.add_file(b"%PDF"), mime_type="application/pdf", file_name="x.pdf")
    await asyncio.sleep(1.5)
    assert telegram.sent_messages(GROUP) == []
    assert await bot.stop() == 0


async def test_ten_voice_notes_from_five_chats_at_once(
    telegram: FakeTelegram, start_bot, speech_ogg: Path, recognizer: Recognizer
) -> None:
    bot = start_bot(ASR_WORKERS="2")
    await wait_ready(telegram, bot)
    expected = engine_text(recognizer, speech_ogg)
    sent = []
    for index in range(10):
        chat = 900 + index % 5
        update = telegram.send_voice(chat, chat, telegram.add_file(speech_ogg.read_bytes()), duration=5)
        sent.append((chat, update["message"]["message_id"]))
    for chat, message_id in sent:
        [reply] = await wait_answer(telegram, chat, message_id, timeout=120)
        assert reply.text == expected
        assert reply.chat_id == chat
    assert len([m for m in telegram.sent_messages() if m.reply_to_message_id]) == 10
    assert await bot.stop() == 0
