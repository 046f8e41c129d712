"""What every command and button that shows stored transcripts shares, and the privacy rules they keep.

The rules hold on every path, commands and buttons alike:

- Every database query is made for the caller (`update.effective_user`, `query.from_user`),
  never for an id taken from callback data. The data only names the list's owner, which
  must be the presser, and an offset or transcript id, which the query re-checks.
- The scope comes from the chat the command or button is in, never from the data
  (`bot.telegram.scope`).
- A button counts only if it is on the message it was pressed on (callback data can be
  forged by a modified client; the message comes from Telegram), and it is parsed by a
  strict, fully anchored ASCII regex.
- /export and /forget work only in the user's private chat.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TypeVar

from telegram import CallbackQuery, InlineKeyboardMarkup, Message, Update

from bot.storage import Page
from bot.telegram import replies
from bot.telegram.context import Context
from bot.telegram.delivery import Delivery
from bot.telegram.render import PAGE_SIZE
from bot.telegram.scope import Scope, scope_for

T = TypeVar("T")

# 18 digits at most: every such number fits SQLite's 64-bit INTEGER. `\Z`, not `$` (which
# also matches before a trailing newline), and [0-9], not \d (which matches any script's digits).
ID = "[0-9]{1,18}"
OFFSET = "[0-9]{1,9}"


def command(update: Update) -> tuple[Message | None, Scope | None]:
    """The command's message and the caller's scope (None for channel posts and the like)."""
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return None, None
    return message, scope_for(message.chat, user.id)


async def private_command(update: Update, name: str) -> tuple[Message, Scope] | None:
    """The message and scope of a command that works in private chats only; in a group it
    says so instead, and None means there is nothing more to do."""
    message, scope = command(update)
    if message is None or scope is None:
        return None
    if scope.chat_id is not None:
        await message.reply_text(replies.private_only(name))
        return None
    return message, scope


async def pressed(
    update: Update, pattern: re.Pattern[str]
) -> tuple[CallbackQuery, Message, re.Match[str], Scope] | None:
    """Validate a button press; None (with the press answered) if any check fails.

    The data must match `pattern` exactly and be a button on the pressed message; the
    message must still be readable (Telegram hides messages older than 48 hours); the
    owner id, group 1 of every pattern (absent only in `forget:no`), must be the
    presser's; and the chat must be a group or the presser's own private chat.
    """
    query = update.callback_query
    if query is None:
        return None
    data = query.data or ""
    match = pattern.match(data)
    message = query.message
    if match is None or not isinstance(message, Message) or not _offered(message, data):
        await query.answer(replies.STALE_BUTTON)
        return None
    owner = match.group(1)
    if owner is not None and int(owner) != query.from_user.id:
        await query.answer(replies.NOT_YOURS, show_alert=True)
        return None
    scope = scope_for(message.chat, query.from_user.id)
    if scope is None:
        await query.answer(replies.STALE_BUTTON)
        return None
    return query, message, match, scope


def _offered(message: Message, data: str) -> bool:
    """Whether the message carries a button with exactly this callback data."""
    markup = message.reply_markup
    rows = markup.inline_keyboard if markup is not None else ()
    return any(button.callback_data == data for row in rows for button in row)


async def edit_list(context: Context, message: Message, text_html: str, markup: InlineKeyboardMarkup | None) -> None:
    """Edit the list a button was pressed on, in place (pressing a button that changes nothing is fine)."""
    await Delivery(context.bot).edit(message.chat.id, message.message_id, text_html, markup=markup, html=True)


async def clamped_page(fetch: Callable[[int], Awaitable[Page[T]]], offset: int) -> Page[T]:
    """The page at `offset`, or the last page when `offset` is past the end (the list shrank
    since the button was made, or the data was forged)."""
    page = await fetch(offset)
    if not page.items and page.total and offset:
        page = await fetch((page.total - 1) // PAGE_SIZE * PAGE_SIZE)
    return page


async def storing_note(context: Context, user_id: int) -> str:
    """Why nothing may be stored (turned off for the bot, or by the user), as a line to append."""
    if not context.bot_data.settings.history_enabled:
        return "\n" + replies.HISTORY_OFF_HERE
    if not await context.bot_data.storage.preferences.store_history(user_id):
        return "\n" + replies.STORING_OFF
    return ""
