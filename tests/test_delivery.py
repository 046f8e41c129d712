"""`bot.telegram.delivery` over real HTTP against the fake Bot API, through the rate limiter the bot runs with.

The retry policy: a flood wait is retried by the rate limiter alone (1 + FLOOD_WAIT_RETRIES
tries, not that many again for each of delivery's network tries); network failures are
retried by delivery; BadRequest and Forbidden are final.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import pytest_asyncio
from telegram import InlineKeyboardButton, InlineKeyboardMarkup
from telegram.error import BadRequest, NetworkError, RetryAfter
from telegram.ext import ExtBot

from bot.telegram.delivery import (
    FLOOD_WAIT_RETRIES,
    MESSAGE_LIMIT,
    NETWORK_ATTEMPTS,
    Delivery,
    rate_limiter,
    split_text,
)
from tests.fake_telegram import FakeTelegram

USER = 42
KEYBOARD = InlineKeyboardMarkup([[InlineKeyboardButton(".txt", callback_data="fmt:1:txt")]])


@pytest_asyncio.fixture
async def delivery(telegram: FakeTelegram) -> AsyncIterator[Delivery]:
    telegram.add_chat(USER)
    async with ExtBot(**telegram.bot_kwargs(), rate_limiter=rate_limiter()) as bot:
        yield Delivery(bot, backoff_seconds=0.01)


def statuses(fake: FakeTelegram, method: str) -> list[int | None]:
    return [call.status for call in fake.calls(method)]


async def test_a_flood_wait_is_retried_by_the_rate_limiter_only(telegram: FakeTelegram, delivery: Delivery) -> None:
    telegram.fail_next("sendMessage", status=429, retry_after=1, times=None)
    with pytest.raises(RetryAfter):
        await delivery.reply(USER, None, "hello")
    assert statuses(telegram, "sendMessage") == [429] * (1 + FLOOD_WAIT_RETRIES)

    telegram.clear_faults()
    telegram.fail_next("sendMessage", status=429, retry_after=1, times=1)
    sent = await delivery.reply(USER, None, "hello")
    assert sent is not None and [m.text for m in telegram.sent_messages(USER)] == ["hello"]


async def test_network_failures_are_retried_then_given_up(telegram: FakeTelegram, delivery: Delivery) -> None:
    telegram.fail_next("sendMessage", status=502, times=NETWORK_ATTEMPTS - 1)
    assert await delivery.reply(USER, None, "after an outage") is not None
    assert statuses(telegram, "sendMessage") == [502] * (NETWORK_ATTEMPTS - 1) + [200]

    telegram.fail_next("sendMessage", status=500, times=None)
    with pytest.raises(NetworkError) as raised:
        await delivery.reply(USER, None, "never")
    assert not isinstance(raised.value, BadRequest)
    assert statuses(telegram, "sendMessage")[NETWORK_ATTEMPTS:] == [500] * NETWORK_ATTEMPTS


async def test_bad_request_and_forbidden_are_not_retried(telegram: FakeTelegram, delivery: Delivery) -> None:
    with pytest.raises(BadRequest, match="Chat not found"):
        await delivery.reply(777, None, "nobody here")
    assert statuses(telegram, "sendMessage") == [400]

    telegram.fail_next("sendMessage", status=403)
    assert await delivery.reply(USER, None, "blocked") is None
    telegram.fail_next("sendDocument", status=403)
    assert await delivery.send_file(USER, None, b"data", filename="x.txt") is None
    assert statuses(telegram, "sendMessage") == [400, 403]
    assert statuses(telegram, "sendDocument") == [403]
    assert telegram.sent_messages() == []


async def test_show_edits_ignores_not_modified_and_replaces_a_lost_message(
    telegram: FakeTelegram, delivery: Delivery
) -> None:
    note = telegram.send_text(USER, USER, "a voice note, say")["message"]["message_id"]
    placeholder = await delivery.reply(USER, note, "Transcribing…")
    assert placeholder is not None
    assert await delivery.show(USER, note, "Done.", message_id=placeholder.message_id) == placeholder.message_id
    assert await delivery.show(USER, note, "Done.", message_id=placeholder.message_id) == placeholder.message_id
    assert statuses(telegram, "editMessageText") == [200, 400]  # "not modified": done, not retried

    await delivery.bot.delete_message(USER, placeholder.message_id)
    shown = await delivery.show(USER, note, "Done again.", message_id=placeholder.message_id, markup=KEYBOARD)
    assert shown is not None and shown != placeholder.message_id
    [current] = telegram.sent_messages(USER)
    assert (current.message_id, current.text, current.reply_to_message_id) == (shown, "Done again.", note)
    assert current.buttons == [(".txt", "fmt:1:txt")]

    # A user's message can never be edited by the bot: the text goes out as a new reply.
    assert await delivery.show(USER, note, "Elsewhere.", message_id=note) not in (None, note)


async def test_show_splits_a_long_text_with_the_keyboard_under_the_last_part(
    telegram: FakeTelegram, delivery: Delivery
) -> None:
    note = telegram.send_text(USER, USER, "a long voice note")["message"]["message_id"]
    placeholder = await delivery.reply(USER, note, "Transcribing…")
    assert placeholder is not None
    text = " ".join(f"word{i}." for i in range(1000))
    assert await delivery.show(USER, note, text, message_id=placeholder.message_id, markup=KEYBOARD) == (
        placeholder.message_id
    )
    parts = telegram.sent_messages(USER)
    assert len(parts) == len(split_text(text)) == 3 and parts[0].message_id == placeholder.message_id
    assert all(part.reply_to_message_id == note for part in parts)
    assert all(len(part.text or "") <= MESSAGE_LIMIT for part in parts)
    assert " ".join(part.text or "" for part in parts) == text
    assert [bool(part.buttons) for part in parts] == [False, False, True]
