"""Access control and secrets end to end, through the real bot process.

Allow-lists, forged button presses, the webhook's secret header, and the bot token never
showing up in logs or chats. The fake server here uses a realistic token (digits, colon,
35-character secret) instead of the default test one, so that a leak can be grepped for.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import aiohttp
import pytest

from bot.asr.recognizer import Recognizer
from tests.conftest import BotProcess, engine_text, wait_answer, wait_ready
from tests.fake_telegram import FakeTelegram, SentMessage

pytestmark = pytest.mark.slow

TOKEN = "7350123456:AAHfQx7-Zq3s9Kd2Lm_Vb8Np4Rt6Wy1Ue0c"
SECRET_PART = TOKEN.split(":", 1)[1]
WEBHOOK_SECRET = "whs-3f9c1d7e5b2a4c6d8e0f"

ALICE, BOB, CAROL = 2001, 2002, 2003  # Carol is not on the allow-list
TEAM, OTHERS = -1002003, -1002004  # only the team group is allowed

NOT_ALLOWED = "Sorry, this bot is private."
NOT_YOUR_TRANSCRIPT = "Only the person who asked for this transcript can download it."
NOT_YOUR_JOB = "Only the person who sent this file can cancel it."


@pytest.fixture
async def telegram() -> AsyncIterator[FakeTelegram]:
    """The fake server with a realistic-looking token (overrides conftest's `telegram`)."""
    async with FakeTelegram(token=TOKEN) as server:
        yield server


def message_id(update: dict) -> int:
    return int(update["message"]["message_id"])


def callback_answer(telegram: FakeTelegram, update: dict) -> dict | None:
    """The bot's answerCallbackQuery to a press, if it answered yet."""
    query_id = update["callback_query"]["id"]
    calls = [c.params for c in telegram.calls("answerCallbackQuery") if c.params.get("callback_query_id") == query_id]
    return calls[0] if calls else None


async def press(telegram: FakeTelegram, chat_id: int, user_id: int, on: int, data: str, *, strict: bool = True) -> dict:
    """Press a button (or send forged data with strict=False) and return the bot's answer to it."""
    update = telegram.press_button(chat_id, user_id, on, data, strict=strict)
    return await telegram.wait_for(lambda s: callback_answer(s, update), timeout=15)


def button_data(message: SentMessage, label: str) -> str:
    [data] = [data for text, data in message.buttons if text == label]
    assert data is not None
    return data


def assert_no_secret_in(text: str, where: str) -> None:
    for secret in (TOKEN, SECRET_PART, WEBHOOK_SECRET):
        assert secret not in text, f"{where} contains a secret"


def assert_nothing_leaked(telegram: FakeTelegram, bot: BotProcess) -> None:
    """Neither the log nor anything the bot sent to Telegram (besides auth) holds a secret."""
    assert_no_secret_in(bot.log, "the bot log")
    for message in telegram.sent_messages(include_deleted=True):
        assert_no_secret_in(json.dumps(message.raw), f"message {message.message_id} in chat {message.chat_id}")
        if message.document is not None:
            assert_no_secret_in(message.document.data.decode(errors="replace"), "a document")
    for call in telegram.calls("answerCallbackQuery"):
        assert_no_secret_in(str(call.params), "a callback answer")


async def test_allow_lists_and_forged_buttons(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], speech_ogg: Path, recognizer: Recognizer,
) -> None:
    bot = start_bot(
        ALLOWED_USER_IDS=f"{ALICE},{BOB}", ALLOWED_CHAT_IDS=str(TEAM), LOG_LEVEL="DEBUG", ASR_WORKERS="2",
    )
    await wait_ready(telegram, bot)
    expected = engine_text(recognizer, speech_ogg)
    telegram.add_chat(TEAM, chat_type="supergroup", title="Team")
    telegram.add_chat(OTHERS, chat_type="supergroup", title="Others")

    def voice(chat: int, user: int, duration: int = 5) -> tuple[str, int]:
        ref = telegram.add_file(speech_ogg.read_bytes())
        return ref.file_id, message_id(telegram.send_voice(chat, user, ref, duration=duration))

    # Outsiders: a short refusal in private, silence in groups; nothing is downloaded.
    carol_file, _ = voice(CAROL, CAROL)
    [refusal] = await telegram.wait_for(lambda s: s.sent_messages(CAROL))
    assert refusal.text == NOT_ALLOWED
    carol_group_file, carol_in_team = voice(TEAM, CAROL)
    alice_elsewhere_file, alice_in_others = voice(OTHERS, ALICE)

    # Allowed users in private and in the allowed group get their transcripts, with buttons.
    _, alice_private = voice(ALICE, ALICE)
    [alice_reply] = await wait_answer(telegram, ALICE, alice_private)
    _, alice_in_team = voice(TEAM, ALICE)
    [team_reply] = await wait_answer(telegram, TEAM, alice_in_team)
    assert alice_reply.text == team_reply.text == expected
    private_srt = button_data(alice_reply, ".srt")
    team_txt = button_data(team_reply, ".txt")

    # Bob presses Alice's real button in the group, and forges her private transcript's data.
    assert (await press(telegram, TEAM, BOB, team_reply.message_id, team_txt))["text"] == NOT_YOUR_TRANSCRIPT
    telegram.send_text(BOB, BOB, "/help")
    [bob_help] = await telegram.wait_for(lambda s: s.sent_messages(BOB))
    forged = await press(telegram, BOB, BOB, bob_help.message_id, private_srt, strict=False)
    assert forged["text"] == NOT_YOUR_TRANSCRIPT
    # Malformed data is answered too, without effect; an outsider's press is refused.
    assert (await press(telegram, BOB, BOB, bob_help.message_id, "fmt:1:exe", strict=False))["text"] == (
        "This button is no longer valid."
    )
    outsider = await press(telegram, CAROL, CAROL, refusal.message_id, private_srt, strict=False)
    assert outsider["text"] == NOT_ALLOWED
    # The owner gets the file (the control: the button works).
    assert "text" not in await press(telegram, ALICE, ALICE, alice_reply.message_id, private_srt)
    [document] = await telegram.wait_for(lambda s: [m.document for m in s.sent_messages(ALICE) if m.document])
    assert document.file_name.endswith(".srt")
    assert [m for m in telegram.sent_messages() if m.document and m.chat_id != ALICE] == []

    # Cancel: Bob can't cancel Alice's running job, neither with her button in the group
    # nor with forged data in his own chat; Alice can.
    telegram.delay("getFile", 5, times=1)  # keeps the job running while the buttons are pressed
    _, long_note = voice(TEAM, ALICE, duration=600)
    [placeholder] = await telegram.wait_for(
        lambda s: [m for m in s.sent_messages(TEAM) if m.reply_to_message_id == long_note and m.buttons]
    )
    cancel = button_data(placeholder, "Cancel")
    assert (await press(telegram, TEAM, BOB, placeholder.message_id, cancel))["text"] == NOT_YOUR_JOB
    assert (await press(telegram, BOB, BOB, bob_help.message_id, cancel, strict=False))["text"] == NOT_YOUR_JOB
    assert (await press(telegram, TEAM, ALICE, placeholder.message_id, cancel))["text"] == "Cancelling…"
    [cancelled] = await wait_answer(telegram, TEAM, long_note)
    assert cancelled.text == "Transcription cancelled."

    # A download that keeps failing: an error path whose exceptions carry file URLs.
    broken = telegram.add_file(speech_ogg.read_bytes())
    telegram.fail_file_download(broken.file_id, status=500, times=None)
    broken_note = message_id(telegram.send_voice(ALICE, ALICE, broken, duration=5))
    [failed] = await wait_answer(telegram, ALICE, broken_note, timeout=30)
    assert failed.text == "I couldn't fetch this file from Telegram. Please send it again."

    # The outsiders' group messages were ignored all along.
    assert telegram.sent_messages(OTHERS) == []
    assert not [m for m in telegram.sent_messages(TEAM) if m.reply_to_message_id == carol_in_team]
    fetched = {c.params.get("file_id") for c in telegram.calls("getFile")}
    assert not fetched & {carol_file, carol_group_file, alice_elsewhere_file}
    assert await bot.stop() == 0
    assert "Set Bot API URL" in bot.log  # DEBUG logging was on: PTB logged its token-bearing URLs
    assert_nothing_leaked(telegram, bot)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def wait_listening(port: int, bot: BotProcess, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert bot.process.poll() is None, bot.log[-3000:]
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            await asyncio.sleep(0.1)
            continue
        writer.close()
        return
    raise AssertionError(f"the webhook server did not listen on {port}")


async def test_webhook_rejects_requests_without_the_secret_header(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess],
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}/hook"
    bot = start_bot(
        WEBHOOK_URL=url, WEBHOOK_SECRET=WEBHOOK_SECRET, WEBHOOK_LISTEN="127.0.0.1", WEBHOOK_PORT=str(port),
        LOG_LEVEL="DEBUG",
    )
    await wait_ready(telegram, bot)
    [registered] = await telegram.wait_for(lambda s: s.calls("setWebhook"), timeout=30)
    assert registered.params["url"] == url and registered.params["secret_token"] == WEBHOOK_SECRET
    await wait_listening(port, bot)

    async with aiohttp.ClientSession() as http:
        async def post(update: dict, headers: dict[str, str]) -> int:
            async with http.post(url, json=update, headers=headers) as response:
                return response.status

        # Updates are built by the fake (so the chats exist there) and posted by hand.
        forged = [telegram.send_text(ALICE, ALICE, "/help"), telegram.send_text(ALICE, ALICE, "/help")]
        assert await post(forged[0], {}) in (401, 403)
        assert await post(forged[1], {"X-Telegram-Bot-Api-Secret-Token": "guess"}) in (401, 403)
        genuine = telegram.send_text(BOB, BOB, "/help")
        assert await post(genuine, {"X-Telegram-Bot-Api-Secret-Token": WEBHOOK_SECRET}) == 200

    [reply] = await telegram.wait_for(lambda s: s.sent_messages(BOB), timeout=15)
    assert reply.text and reply.text.startswith("I turn voice messages into text.")
    await asyncio.sleep(1.0)  # anything the forged updates could have caused has happened by now
    assert telegram.sent_messages(ALICE) == []
    assert not telegram.calls("getUpdates")  # webhook mode never polls
    assert await bot.stop() == 0
    assert_nothing_leaked(telegram, bot)
