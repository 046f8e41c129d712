"""Every message the bot sends, edits or uploads for a job or a stored transcript, and the one
retry policy for them.

Retries: each kind of failure has one owner, so no call is retried by two layers at once.

- Flood waits (HTTP 429, `RetryAfter`) belong to PTB's `AIORateLimiter`, made by `rate_limiter()`
  and installed on the Application's bot in `bot.app`. It sees every call the bot makes (handlers'
  replies too), keeps them all under Telegram's limits, and after a flood wait holds every call
  for the time Telegram names and tries again, `FLOOD_WAIT_RETRIES` times. Nothing here catches
  `RetryAfter`: a flood wait is tried at most 1 + `FLOOD_WAIT_RETRIES` times, then fails.
- Transient network failures (a dropped connection, a timeout, a proxy's 5xx) belong to
  `Delivery.call`: `NETWORK_ATTEMPTS` tries with exponential backoff. The rate limiter does not
  retry them. `BadRequest` is a `NetworkError` subclass in PTB but final (the request itself is
  wrong, or the message is gone), so it is never retried, and neither is `Forbidden`.

A message that can't be edited any more (deleted by the user, or too old after a long downtime)
is sent anew instead; an edit that changes nothing counts as done; a chat that has blocked the
bot is logged and skipped, since nothing can reach it.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telegram import Bot, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction, ParseMode
from telegram.error import BadRequest, Forbidden, NetworkError, TelegramError
from telegram.ext import AIORateLimiter

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Telegram's limit for one message's text.
MESSAGE_LIMIT = 4096
#: Retries of a call after a flood wait, by the rate limiter (the only layer that retries them).
FLOOD_WAIT_RETRIES = 3
#: Tries of one call that fails with a transient network error or a timeout.
NETWORK_ATTEMPTS = 4
#: The first pause before retrying a network failure; it doubles with each try.
NETWORK_BACKOFF_SECONDS = 0.5
#: Why an edit can never succeed: the text is sent as a new message instead.
_NOT_EDITABLE = (
    "message to edit not found", "message to be replied not found", "message_id_invalid", "message can't be edited",
)
_SENTENCE_END = re.compile(r"[.!?…]\s")


def rate_limiter() -> AIORateLimiter:
    """The Application's rate limiter: the one owner of flood-wait retries (see the module docstring)."""
    return AIORateLimiter(max_retries=FLOOD_WAIT_RETRIES)


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split `text` into messages of at most `limit` characters.

    Breaks at the last sentence end before the limit (if it is past half the limit), else
    at the last space, and only inside a word when a single word is longer than a message.
    """
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        cut = ends[-1] if ends and ends[-1] > limit // 2 else window.rfind(" ")
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


class Delivery:
    """Sends, edits and uploads through one `Bot`, retrying what is worth retrying."""

    def __init__(self, bot: Bot, *, backoff_seconds: float = NETWORK_BACKOFF_SECONDS) -> None:
        self.bot = bot
        self.backoff_seconds = backoff_seconds

    async def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Make one Telegram call (`make` builds it afresh for each try), retrying transient
        network failures; flood waits were already retried inside it by the rate limiter."""
        for attempt in range(1, NETWORK_ATTEMPTS + 1):
            try:
                return await make()
            except NetworkError as exc:
                if isinstance(exc, BadRequest) or attempt == NETWORK_ATTEMPTS:
                    raise
                log.info("Telegram call failed (%s); retrying", exc)
                await asyncio.sleep(self.backoff_seconds * 2 ** (attempt - 1))
        raise AssertionError("unreachable")

    async def reply(
        self, chat_id: int, reply_to: int | None, text: str, *,
        markup: InlineKeyboardMarkup | None = None, html: bool = False,
    ) -> Message | None:
        """Send `text` (one message's worth) as a reply, still sent if the message replied to is
        gone; None when the chat has blocked the bot."""
        try:
            return await self.call(
                lambda: self.bot.send_message(
                    chat_id, text, reply_parameters=_reply_to(reply_to), reply_markup=markup,
                    parse_mode=ParseMode.HTML if html else None,
                )
            )
        except Forbidden as exc:
            log.info("cannot write to chat %s: %s", chat_id, exc)
            return None

    async def edit(
        self, chat_id: int, message_id: int, text: str, *,
        markup: InlineKeyboardMarkup | None = None, html: bool = False,
    ) -> bool:
        """Edit a message of the bot into `text`; True when it shows that text now (an edit that
        changes nothing included), False when the message can't be edited any more."""
        try:
            await self.call(
                lambda: self.bot.edit_message_text(
                    text, chat_id=chat_id, message_id=message_id, reply_markup=markup,
                    parse_mode=ParseMode.HTML if html else None,
                )
            )
        except BadRequest as exc:
            reason = str(exc).lower()
            if "not modified" in reason:
                return True
            if any(known in reason for known in _NOT_EDITABLE):
                log.info("message %s in chat %s can't be edited: %s", message_id, chat_id, exc)
                return False
            raise
        return True

    async def show(
        self, chat_id: int, reply_to: int, text: str, *,
        message_id: int | None, markup: InlineKeyboardMarkup | None = None,
    ) -> int | None:
        """Show `text` split into messages: the first part in the message `message_id` (a
        placeholder), or in a new reply when there is none or it can't be edited; the other
        parts as replies after it, `markup` under the last. Returns the id of the message
        showing the first part, None when the chat has blocked the bot."""
        parts = split_text(text)
        first = await self._show_one(chat_id, reply_to, parts[0], message_id, markup if len(parts) == 1 else None)
        if first is None:
            return None
        for index, part in enumerate(parts[1:], start=2):
            await self.reply(chat_id, reply_to, part, markup=markup if index == len(parts) else None)
        return first

    async def _show_one(
        self, chat_id: int, reply_to: int, text: str, message_id: int | None, markup: InlineKeyboardMarkup | None
    ) -> int | None:
        try:
            if message_id is not None and await self.edit(chat_id, message_id, text, markup=markup):
                return message_id
        except Forbidden as exc:
            log.info("cannot write to chat %s: %s", chat_id, exc)
            return None
        sent = await self.reply(chat_id, reply_to, text, markup=markup)
        return None if sent is None else sent.message_id

    async def send_file(
        self, chat_id: int, reply_to: int | None, data: bytes, *, filename: str,
        caption: str | None = None, markup: InlineKeyboardMarkup | None = None,
    ) -> Message | None:
        """Upload `data` as a document replying to `reply_to`; None when the chat has blocked the bot."""
        try:
            return await self.call(
                lambda: self.bot.send_document(
                    chat_id, data, filename=filename, caption=caption,
                    reply_parameters=_reply_to(reply_to), reply_markup=markup,
                )
            )
        except Forbidden as exc:
            log.info("cannot write to chat %s: %s", chat_id, exc)
            return None

    async def chat_action(self, chat_id: int) -> None:
        """"typing…" in the chat: a courtesy, so a failure is only logged and never retried."""
        try:
            await self.bot.send_chat_action(chat_id, ChatAction.TYPING)
        except TelegramError as exc:
            log.debug("chat action failed: %s", exc)


def _reply_to(message_id: int | None) -> ReplyParameters | None:
    if message_id is None:
        return None
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)
