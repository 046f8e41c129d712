"""The transcript cache end to end: keyed on the file *and* what its text was made with.

A re-forwarded note (same `file_unique_id`) is answered from the cache without downloading
it, but only while the bot would make the same text: after the operator changes ASR_MODEL,
or turns PUNCTUATION_MODEL on, the old transcript must not answer for the new setting.
"""

from __future__ import annotations

import json
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import BotProcess, engine_text, wait_answer, wait_ready
from tests.fake_telegram import FakeTelegram, FileRef, SentMessage
from tests.model_factory import build_random_ctc_model
from tests.punctuation_factory import build_punctuation_model

pytestmark = pytest.mark.slow

ALICE, BOB = 901, 902
PUNCTUATION_LABELS = ("Lower_O", "Upper_O", "Lower_,", "Upper_,", "Lower_.", "Upper_.")


@pytest.fixture(scope="module")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second tiny random model, another seed: it hears the same note as other text."""
    return build_random_ctc_model(tmp_path_factory.mktemp("other-model"), seed=1)


def downloads_of(telegram: FakeTelegram, file: FileRef) -> int:
    """How many times the bot asked for this file (getFile precedes every download)."""
    return sum(call.params.get("file_id") == file.file_id for call in telegram.calls("getFile"))


async def forward(telegram: FakeTelegram, user_id: int, file: FileRef) -> str | None:
    """Forward the note into the user's private chat; returns the bot's answer."""
    update = telegram.send_voice(user_id, user_id, file, duration=5, forward_from="Carol Example")
    [reply] = await wait_answer(telegram, user_id, update["message"]["message_id"])
    return reply.text


async def ask(telegram: FakeTelegram, user_id: int, text: str, *, count: int = 1) -> list[SentMessage]:
    """Send a command in the user's private chat and return the bot's next `count` new messages."""
    before = len(telegram.sent_messages(user_id, include_deleted=True))
    telegram.send_text(user_id, user_id, text)
    return await telegram.wait_for(
        lambda s: (new := s.sent_messages(user_id, include_deleted=True)[before:]) and len(new) >= count and new
    )


async def exported(telegram: FakeTelegram, user_id: int) -> list[dict[str, Any]]:
    """The user's /export, as its .json file's records."""
    _, data = await ask(telegram, user_id, "/export", count=2)
    assert data.document is not None
    records: list[dict[str, Any]] = json.loads(data.document.data)
    return records


async def test_a_model_change_transcribes_a_reforwarded_note_again(
    telegram: FakeTelegram, start_bot, speech_ogg: Path, recognizer: Any, other_model: Path, tmp_path: Path
) -> None:
    old_text = engine_text(recognizer, speech_ogg)
    note = telegram.add_file(speech_ogg.read_bytes())

    bot: BotProcess = start_bot()  # ASR_MODEL: the session's tiny model
    await wait_ready(telegram, bot)
    assert await forward(telegram, ALICE, note) == old_text
    assert await forward(telegram, BOB, note) == old_text  # the same model: from the cache
    assert downloads_of(telegram, note) == 1
    assert await bot.stop() == 0

    bot = start_bot(ASR_MODEL=str(other_model))  # same database, another model
    await wait_ready(telegram, bot)
    new_text = await forward(telegram, ALICE, note)  # downloaded and transcribed again
    assert downloads_of(telegram, note) == 2
    assert new_text and new_text != old_text
    assert await forward(telegram, BOB, note) == new_text  # now the new model's copy answers
    assert downloads_of(telegram, note) == 2
    assert await bot.stop() == 0

    with closing(sqlite3.connect(tmp_path / "bot.sqlite3")) as db:
        rows = db.execute("SELECT user_id, model, text, processing_seconds > 0 FROM transcripts ORDER BY id").fetchall()
    old_model = rows[0][1]
    assert rows == [
        (ALICE, old_model, old_text, 1),  # made by the model
        (BOB, old_model, old_text, 0),  # a cache copy: no model time
        (ALICE, str(other_model), new_text, 1),
        (BOB, str(other_model), new_text, 0),
    ]


async def test_turning_punctuation_on_transcribes_a_reforwarded_note_again(
    telegram: FakeTelegram, start_bot, speech_ogg: Path, recognizer: Any, tmp_path: Path
) -> None:
    """A note transcribed without PUNCTUATION_MODEL is transcribed afresh, punctuated, once the bot is
    restarted with it; the punctuated copy answers from then on, and every transcript carries its
    language (the chats chose English) into /export and /history."""
    bare_text = engine_text(recognizer, speech_ogg)
    note = telegram.add_file(speech_ogg.read_bytes())
    punctuation = build_punctuation_model(tmp_path / "punctuation", PUNCTUATION_LABELS)

    bot: BotProcess = start_bot()  # no punctuation model
    await wait_ready(telegram, bot)
    for user_id in (ALICE, BOB):
        await ask(telegram, user_id, "/language en")
    assert await forward(telegram, ALICE, note) == bare_text
    assert await bot.stop() == 0

    bot = start_bot(PUNCTUATION_MODEL=str(punctuation))  # same database, punctuation on
    await wait_ready(telegram, bot)
    punctuated = await forward(telegram, ALICE, note)  # not the cached bare text: downloaded again
    assert downloads_of(telegram, note) == 2
    assert punctuated and punctuated != bare_text
    assert await forward(telegram, BOB, note) == punctuated  # the punctuated copy answers now
    assert downloads_of(telegram, note) == 2

    bare, fresh = (record["transcription"] for record in await exported(telegram, ALICE))
    [copy] = (record["transcription"] for record in await exported(telegram, BOB))
    assert (bare["text"], bare["options"]["postprocess"]) == (bare_text, ["sentence_case"])
    assert (fresh["text"], fresh["options"]["postprocess"]) == (punctuated, ["punctuate"])
    assert (copy["text"], copy["processing_seconds"]) == (punctuated, 0.0)
    assert [t["language"] for t in (bare, fresh, copy)] == ["en", "en", "en"]
    [history] = await ask(telegram, ALICE, "/history")
    headers = [line for line in (history.text or "").splitlines() if line.startswith("#")]
    assert len(headers) == 2 and all(header.endswith(" · en · from Carol Example") for header in headers)
    assert await bot.stop() == 0
