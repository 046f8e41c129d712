"""/language and model routing end to end: `python -m bot run` with two models (ASR_MODELS) and a
punctuation model, against the fake Bot API; which model made a transcript is read from /export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from bot.telegram import replies
from tests.conftest import BotProcess, wait_answer, wait_ready
from tests.fake_telegram import FakeTelegram, SentMessage
from tests.model_factory import build_random_ctc_model
from tests.punctuation_factory import build_punctuation_model

pytestmark = pytest.mark.slow

FIXED, DETECTING, ADMIN, MEMBER = 701, 702, 703, 704
GROUP = -100700
LABELS = ("Lower_O", "Upper_O", "Lower_,", "Upper_,", "Lower_.", "Upper_.")


async def ask(telegram: FakeTelegram, chat_id: int, user_id: int, text: str, *, count: int = 1) -> list[SentMessage]:
    """Send `text` and return the bot's next `count` new messages in the chat."""
    before = len(telegram.sent_messages(chat_id, include_deleted=True))
    telegram.send_text(chat_id, user_id, text)
    return await telegram.wait_for(
        lambda s: (new := s.sent_messages(chat_id, include_deleted=True)[before:]) and len(new) >= count and new
    )


async def exported(telegram: FakeTelegram, user_id: int) -> list[dict[str, Any]]:
    _, data = await ask(telegram, user_id, user_id, "/export", count=2)
    assert data.document is not None
    records: list[dict[str, Any]] = json.loads(data.document.data)
    return records


async def test_language_routes_each_chat_to_its_model_and_only_admins_change_a_group(
    telegram: FakeTelegram, start_bot, tiny_model: Path, speech_ogg: Path, tmp_path: Path
) -> None:
    english = str(tiny_model)
    other = str(build_random_ctc_model(tmp_path / "other-ctc", seed=1))
    punctuation = str(build_punctuation_model(tmp_path / "punctuation", LABELS))
    bot: BotProcess = start_bot(ASR_MODELS=f"en:{english},*:{other}", PUNCTUATION_MODEL=punctuation)
    await wait_ready(telegram, bot)
    assert "language" in {command["command"] for command in telegram.commands()}

    # Both models are CTC: neither detects, so nothing is said to go on to the English one.
    [shown] = await ask(telegram, FIXED, FIXED, "/language")
    assert shown.text == replies.language_state("auto", other, detects=False)
    assert "does not detect languages" in shown.text and english not in shown.text
    [refused] = await ask(telegram, FIXED, FIXED, "/language en,xx")
    assert refused.text == replies.unknown_language("xx")
    [fixed] = await ask(telegram, FIXED, FIXED, "/language EN")
    assert fixed.text == replies.language_set("en", english, detects=False)
    [shown] = await ask(telegram, FIXED, FIXED, "/language")
    assert shown.text == replies.language_state("en", english, detects=False)

    for user_id in (FIXED, DETECTING):
        voice = telegram.send_voice(user_id, user_id, telegram.add_file(speech_ogg.read_bytes()), duration=5)
        await wait_answer(telegram, user_id, voice["message"]["message_id"])

    # Groups: anyone may look, only admins change it.
    telegram.add_chat(GROUP, chat_type="supergroup", title="Team")
    telegram.set_admins(GROUP, [ADMIN])
    [denied] = await ask(telegram, GROUP, MEMBER, "/language de")
    assert denied.text == replies.AUTO_ADMINS_ONLY
    [state] = await ask(telegram, GROUP, MEMBER, "/language")
    assert state.text == replies.language_state("auto", other, detects=False)
    [among] = await ask(telegram, GROUP, ADMIN, "/language en, ru")
    assert among.text == replies.language_set("en,ru", other, detects=False)  # en and ru: different models
    voice = telegram.send_voice(GROUP, MEMBER, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    await wait_answer(telegram, GROUP, voice["message"]["message_id"])

    [fixed_record] = await exported(telegram, FIXED)
    [detected_record] = await exported(telegram, DETECTING)
    [group_record] = await exported(telegram, MEMBER)
    assert fixed_record["transcription"]["model"] == english
    assert fixed_record["transcription"]["options"]["language"] == "en"
    assert detected_record["transcription"]["model"] == other
    assert detected_record["transcription"]["options"]["language"] is None
    assert group_record["transcription"]["model"] == other
    for record in (fixed_record, detected_record, group_record):
        transcription = record["transcription"]
        # punctuation ran on the worker, on the text and the words alike
        assert transcription["options"]["postprocess"] == ["punctuate"]
        assert [word["word"] for word in transcription["words"]] == transcription["text"].split()
        assert transcription["text"] != transcription["raw_text"]
    assert await bot.stop() == 0
