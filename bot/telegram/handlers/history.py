"""/history, /search, /export, /forget, /privacy and /stats: what the bot stored, shown to its owner.

The privacy rules hold on every path, commands and buttons alike:

- Every database query is made for the caller (`update.effective_user`, `query.from_user`),
  never for an id taken from callback data. The data only names the list's owner, which
  must be the presser, and an offset or transcript id, which the query re-checks.
- The scope comes from the chat the command or button is in, never from the data: in a
  private chat the user sees all their transcripts, in a group only their own from that
  group, so a group never sees what someone sent the bot privately.
- A button counts only if it is on the message it was pressed on (callback data can be
  forged by a modified client; the message comes from Telegram), and it is parsed by a
  strict, fully anchored ASCII regex.
- /export and /forget work only in the user's private chat.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from telegram import (
    CallbackQuery,
    Chat,
    InlineKeyboardButton,
    InlineKeyboardMarkup,
    Message,
    ReplyParameters,
    Update,
)
from telegram.constants import ChatType, ParseMode
from telegram.error import BadRequest
from telegram.ext import Application, CallbackQueryHandler, CommandHandler, filters

from bot.telegram import replies
from bot.telegram.render import snippet_html
from bot.telegram.context import Context
from bot.errors import format_duration
from bot.asr.formats import build_cues, to_txt
from bot.telegram.handlers.access import is_admin
from bot.telegram.attachments import origin_name
from bot.storage.db import Page, SearchHit, TranscriptRecord, TranscriptSummary

T = TypeVar("T")

PAGE_SIZE = 5
PREVIEW_CHARS = 80
#: Longer queries are cut (the search uses at most 16 words anyway) so the header stays short.
MAX_QUERY_CHARS = 200
#: The first line of a search result message; paging reads the query back from it, so the
#: query never has to fit in 64 bytes of callback data.
SEARCH_HEADER = "Search: "

# 18 digits at most: every such number fits SQLite's 64-bit INTEGER. `\Z`, not `$` (which
# also matches before a trailing newline), and [0-9], not \d (which matches any script's digits).
_ID = "[0-9]{1,18}"
_OFFSET = "[0-9]{1,9}"
HISTORY_PAGE = re.compile(rf"hist:({_ID}):({_OFFSET})\Z")
SEARCH_PAGE = re.compile(rf"srch:({_ID}):({_OFFSET})\Z")
SHOW = re.compile(rf"show:({_ID}):({_ID})\Z")
FORGET = re.compile(rf"forget:(?:yes:({_ID})|no)\Z")
TRANSCRIPT_ARG = re.compile(rf"#?({_ID})\Z")

NOT_YOURS = "This list belongs to someone else. Send the command yourself to see yours."
NOT_FOUND = "I can't find transcript #{id} in your history{where}."
PRIVATE_ONLY = "Use /{command} in a private chat with me."


@dataclass(frozen=True)
class Scope:
    """Whose transcripts, from where: the caller's own, from all chats or from one group."""

    user_id: int
    #: None in the user's private chat (all their transcripts), else the group's id.
    chat_id: int | None
    #: The group's name for headers; None in the private view.
    title: str | None

    @property
    def where(self) -> str:
        """` in <group>` for the group view, empty in the private view (plain text)."""
        return "" if self.title is None else f" in {self.title}"


def _scope(chat: Chat, user_id: int) -> Scope | None:
    """The view a command or button in `chat` gets; None in someone else's private chat
    (only reachable with a forged button press)."""
    if chat.type == ChatType.PRIVATE:
        return Scope(user_id, None, None) if chat.id == user_id else None
    return Scope(user_id, chat.id, chat.title or "this group")


# --- commands -------------------------------------------------------------------------------


async def on_history(update: Update, context: Context) -> None:
    """`/history`: the caller's transcripts, newest first, a page at a time; `/history N` opens one."""
    message, scope = _command(update)
    if message is None or scope is None:
        return
    args = context.args or []
    if args:
        match = TRANSCRIPT_ARG.match(args[0]) if len(args) == 1 else None
        if match is None:
            await message.reply_text("Usage: /history, or /history N to open transcript #N.")
            return
        transcript_id = int(match.group(1))
        sent = await _send_transcript(
            context, scope, transcript_id, chat_id=message.chat.id, reply_to=message.message_id
        )
        if not sent:
            await message.reply_text(NOT_FOUND.format(id=transcript_id, where=scope.where))
        return
    page = await _history_page(context, scope, 0)
    if not page.total:
        await message.reply_text(await _empty_history(context, scope))
        return
    await message.reply_html(_render_history(page, scope), reply_markup=_history_keyboard(page, scope))


async def on_search(update: Update, context: Context) -> None:
    """`/search words`: the caller's transcripts containing all the words, best match first."""
    message, scope = _command(update)
    if message is None or scope is None:
        return
    text = " ".join(" ".join(context.args or []).split())[:MAX_QUERY_CHARS]
    if not text:
        await message.reply_text("Usage: /search words, e.g. /search meeting tomorrow")
        return
    page = await _search_page(context, scope, text, 0)
    await message.reply_html(_render_search(page, scope, text), reply_markup=_search_keyboard(page, scope))


async def on_export(update: Update, context: Context) -> None:
    """`/export`: the whole history as a readable .txt and a complete .json (private chats only:
    a group must never receive someone's private transcripts)."""
    found = await _private_command(update, "export")
    if found is None:
        return
    message, scope = found
    records = await context.bot_data.storage.export_user(scope.user_id)
    if not records:
        note = await _storing_note(context, scope.user_id)
        await message.reply_text("You have no saved transcripts to export." + note)
        return
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    count = f"{len(records)} {_plural(len(records), 'transcript')}"
    await message.reply_document(
        _export_txt(records).encode(), filename=f"transcripts-{day}.txt", caption=f"{count}, oldest first."
    )
    data = json.dumps([record.to_dict() for record in records], ensure_ascii=False, indent=1)
    await message.reply_document(
        data.encode(), filename=f"transcripts-{day}.json", caption="The same with word timings, as JSON."
    )


async def on_forget(update: Update, context: Context) -> None:
    """`/forget`: ask before deleting everything stored about the caller (private chats only,
    so the prompt and its button are seen and pressed by that user alone)."""
    found = await _private_command(update, "forget")
    if found is None:
        return
    message, scope = found
    total = (await context.bot_data.storage.history_page(scope.user_id, chat_id=None, offset=0, limit=1)).total
    keyboard = InlineKeyboardMarkup(
        [[
            InlineKeyboardButton("Yes, delete everything", callback_data=f"forget:yes:{scope.user_id}"),
            InlineKeyboardButton("Cancel", callback_data="forget:no"),
        ]]
    )
    await message.reply_text(
        f"Delete your {total} {_plural(total, 'transcript')} and everything else I stored about you? "
        "This can't be undone.",
        reply_markup=keyboard,
    )


async def on_privacy(update: Update, context: Context) -> None:
    """`/privacy on|off`: whether the caller's new transcripts are stored; no argument shows it."""
    message, scope = _command(update)
    if message is None or scope is None:
        return
    storage = context.bot_data.storage
    args = [arg.lower() for arg in context.args or []]
    if args in (["on"], ["off"]):
        enabled = args == ["on"]
        await storage.set_store_history(scope.user_id, enabled)
        text = (
            "OK, I'll keep your new transcripts for /history and /search."
            if enabled
            else "OK, I won't store your new transcripts. What is already stored stays until you /forget it."
        )
    elif not args:
        state = "on" if await storage.get_store_history(scope.user_id) else "off"
        text = f"Storing your transcripts is {state}. /privacy on or /privacy off changes it."
    else:
        text = "Usage: /privacy on or /privacy off."
    if not context.bot_data.settings.history_enabled:
        text += "\nNote: history is turned off on this bot, so nothing is stored for anyone."
    await message.reply_text(text)


async def on_stats(update: Update, context: Context) -> None:
    """`/stats` for the bot's operators (ADMIN_USER_IDS): load and totals. Others get a short
    refusal in private and silence in groups."""
    message, scope = _command(update)
    if message is None or scope is None:
        return
    if not is_admin(context, scope.user_id):
        if scope.chat_id is None:
            await message.reply_text("/stats is only for the bot's operators.")
        return
    stats = await context.bot_data.storage.stats()
    transcriber = context.bot_data.transcriber
    rtf = stats.median_real_time_factor_24h
    await message.reply_text(
        f"Users: {stats.users}\n"
        f"Chats: {stats.chats}\n"
        f"Transcripts: {stats.transcripts} ({stats.audio_seconds / 3600:.1f} h of audio)\n"
        f"Jobs: {stats.queued_jobs} queued, {stats.running_jobs} running\n"
        f"Workers ready: {transcriber.ready_workers}\n"
        f"Queue depth: {transcriber.queue_depth}\n"
        f"Median real-time factor, last 24 h: {'n/a' if rtf is None else f'{rtf:.2f}'}"
    )


# --- buttons --------------------------------------------------------------------------------


async def on_history_button(update: Update, context: Context) -> None:
    """«Older» / «Newer» under a /history list: edit the list in place."""
    pressed = await _pressed(update, HISTORY_PAGE)
    if pressed is None:
        return
    query, _message, match, scope = pressed
    page = await _history_page(context, scope, int(match.group(2)))
    await query.answer()
    if not page.total:
        await _edit(query, html.escape(await _empty_history(context, scope)), None)
        return
    await _edit(query, _render_history(page, scope), _history_keyboard(page, scope))


async def on_search_button(update: Update, context: Context) -> None:
    """«Previous» / «Next» under search results; the query is read back from the message."""
    pressed = await _pressed(update, SEARCH_PAGE)
    if pressed is None:
        return
    query, message, match, scope = pressed
    first_line = (message.text or "").partition("\n")[0]
    text = first_line.removeprefix(SEARCH_HEADER)[:MAX_QUERY_CHARS]
    if not first_line.startswith(SEARCH_HEADER) or not text:
        await query.answer(replies.STALE_BUTTON)
        return
    page = await _search_page(context, scope, text, int(match.group(2)))
    await query.answer()
    await _edit(query, _render_search(page, scope, text), _search_keyboard(page, scope))


async def on_show_button(update: Update, context: Context) -> None:
    """A numbered button under a list: send that transcript in full, below the list."""
    pressed = await _pressed(update, SHOW)
    if pressed is None:
        return
    query, message, match, scope = pressed
    transcript_id = int(match.group(2))
    sent = await _send_transcript(context, scope, transcript_id, chat_id=message.chat.id, reply_to=message.message_id)
    if sent:
        await query.answer()
    else:
        await query.answer(NOT_FOUND.format(id=transcript_id, where=scope.where), show_alert=True)


async def on_forget_button(update: Update, context: Context) -> None:
    """The /forget prompt's buttons: only its user, in their private chat, can confirm."""
    pressed = await _pressed(update, FORGET)
    if pressed is None:
        return
    query, _message, match, scope = pressed
    if scope.chat_id is not None:
        await query.answer(replies.STALE_BUTTON)
        return
    await query.answer()
    if match.group(1) is None:
        await _edit(query, "OK, nothing was deleted.", None)
        return
    storage = context.bot_data.storage
    had_opted_out = not await storage.get_store_history(scope.user_id)
    deleted = await storage.forget_user(scope.user_id)
    text = f"Done: I deleted {deleted} {_plural(deleted, 'transcript')} and everything else I stored about you."
    if had_opted_out:
        text += " That included your /privacy off choice: send it again to keep new transcripts from being stored."
    await _edit(query, html.escape(text), None)


# --- shared steps ---------------------------------------------------------------------------


def _command(update: Update) -> tuple[Message | None, Scope | None]:
    """The command's message and the caller's scope (None for channel posts and the like)."""
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return None, None
    return message, _scope(message.chat, user.id)


async def _private_command(update: Update, command: str) -> tuple[Message, Scope] | None:
    """The message and scope of a command that works in private chats only; in a group it
    says so instead, and None means there is nothing more to do."""
    message, scope = _command(update)
    if message is None or scope is None:
        return None
    if scope.chat_id is not None:
        await message.reply_text(PRIVATE_ONLY.format(command=command))
        return None
    return message, scope


async def _pressed(
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
        await query.answer(NOT_YOURS, show_alert=True)
        return None
    scope = _scope(message.chat, query.from_user.id)
    if scope is None:
        await query.answer(replies.STALE_BUTTON)
        return None
    return query, message, match, scope


def _offered(message: Message, data: str) -> bool:
    """Whether the message carries a button with exactly this callback data."""
    markup = message.reply_markup
    rows = markup.inline_keyboard if markup is not None else ()
    return any(button.callback_data == data for row in rows for button in row)


async def _edit(query: CallbackQuery, text: str, markup: InlineKeyboardMarkup | None) -> None:
    """Edit the pressed message (HTML); pressing a button that changes nothing is not an error."""
    try:
        await query.edit_message_text(text, parse_mode=ParseMode.HTML, reply_markup=markup)
    except BadRequest as exc:
        if "not modified" not in exc.message.lower():
            raise


async def _history_page(context: Context, scope: Scope, offset: int) -> Page[TranscriptSummary]:
    storage = context.bot_data.storage
    return await _clamped(
        lambda at: storage.history_page(scope.user_id, chat_id=scope.chat_id, offset=at, limit=PAGE_SIZE), offset
    )


async def _search_page(context: Context, scope: Scope, text: str, offset: int) -> Page[SearchHit]:
    storage = context.bot_data.storage
    return await _clamped(
        lambda at: storage.search(scope.user_id, text, chat_id=scope.chat_id, offset=at, limit=PAGE_SIZE), offset
    )


async def _clamped(fetch: Callable[[int], Awaitable[Page[T]]], offset: int) -> Page[T]:
    """The page at `offset`, or the last page when `offset` is past the end (the list shrank
    since the button was made, or the data was forged)."""
    page = await fetch(offset)
    if not page.items and page.total and offset:
        page = await fetch((page.total - 1) // PAGE_SIZE * PAGE_SIZE)
    return page


async def _send_transcript(
    context: Context, scope: Scope, transcript_id: int, *, chat_id: int, reply_to: int
) -> bool:
    """Send one of the caller's transcripts in full; False if it is not theirs (in this scope)."""
    storage = context.bot_data.storage
    record = await storage.get_transcript(transcript_id, user_id=scope.user_id, chat_id=scope.chat_id)
    if record is None:
        return False
    header = _item_header(
        record.id, record.created_at, record.chat_id, record.chat_title, record.transcription.duration,
        record.forward_origin, scope, chat_label=True,
    )
    text = record.transcription.text
    reply = ReplyParameters(message_id=reply_to, allow_sending_without_reply=True)
    buttons = replies.format_buttons(record.id)
    body = f"{header}\n\n{text}" if text else f"{header}\n\n{replies.EMPTY}"
    if len(body) > context.bot_data.settings.transcript_file_chars:
        await context.bot.send_document(
            chat_id, to_txt(text).encode(), filename=f"transcript-{record.id}.txt", caption=header,
            reply_parameters=reply, reply_markup=buttons,
        )
        return True
    parts = replies.split_text(body)
    for index, part in enumerate(parts, start=1):
        await context.bot.send_message(
            chat_id, part, reply_parameters=reply, reply_markup=buttons if index == len(parts) else None
        )
    return True


# --- rendering ------------------------------------------------------------------------------


def _render_history(page: Page[TranscriptSummary], scope: Scope) -> str:
    """A /history page as Telegram HTML: a header, then two lines per transcript."""
    lines = [
        html.escape(f"Your transcripts{scope.where}, newest first ({_range(page)} of {page.total}):"),
    ]
    for item in page.items:
        header = _item_header(
            item.id, item.created_at, item.chat_id, item.chat_title, item.duration, item.forward_origin, scope
        )
        lines.append(f"\n{html.escape(header)}\n{html.escape(_preview(item.text))}")
    lines.append("\nTap a number to open it, or send /history N.")
    return "\n".join(lines)


def _render_search(page: Page[SearchHit], scope: Scope, text: str) -> str:
    """A /search page as Telegram HTML; the first line is the query, for paging."""
    if not page.total:
        return html.escape(f"{SEARCH_HEADER}{text}\nNothing found in your transcripts{scope.where}.")
    lines = [
        html.escape(f"{SEARCH_HEADER}{text}"),
        html.escape(f"{page.total} {_plural(page.total, 'match')}{scope.where}, best first ({_range(page)}):"),
    ]
    for hit in page.items:
        header = _item_header(
            hit.id, hit.created_at, hit.chat_id, hit.chat_title, hit.duration, hit.forward_origin, scope
        )
        lines.append(f"\n{html.escape(header)}\n{snippet_html(hit.snippet)}")
    return "\n".join(lines)


def _history_keyboard(page: Page[TranscriptSummary], scope: Scope) -> InlineKeyboardMarkup | None:
    return _list_keyboard("hist", page, scope, ("« Newer", "Older »"))


def _search_keyboard(page: Page[SearchHit], scope: Scope) -> InlineKeyboardMarkup | None:
    return _list_keyboard("srch", page, scope, ("« Previous", "Next »"))


def _list_keyboard(
    prefix: str, page: Page[TranscriptSummary] | Page[SearchHit], scope: Scope, labels: tuple[str, str]
) -> InlineKeyboardMarkup | None:
    """A button per item to open it, then back/forward; the owner's id goes in every button."""
    rows = []
    if page.items:
        rows.append([
            InlineKeyboardButton(f"#{item.id}", callback_data=f"show:{scope.user_id}:{item.id}") for item in page.items
        ])
    nav = []
    if page.offset > 0:
        back = max(0, page.offset - PAGE_SIZE)
        nav.append(InlineKeyboardButton(labels[0], callback_data=f"{prefix}:{scope.user_id}:{back}"))
    if page.has_more:
        forward = page.offset + len(page.items)
        nav.append(InlineKeyboardButton(labels[1], callback_data=f"{prefix}:{scope.user_id}:{forward}"))
    if nav:
        rows.append(nav)
    return InlineKeyboardMarkup(rows) if rows else None


def _item_header(
    transcript_id: int,
    created_at: float,
    chat_id: int,
    chat_title: str | None,
    duration: float,
    forward_origin: str | None,
    scope: Scope,
    *,
    chat_label: bool = False,
) -> str:
    """`#12 · 2025-01-31 09:30 · private · 0:42 · from Alice` (plain text).

    The chat is named in the private view, where transcripts from several chats mix (a
    group by its stored title, "a group" if none is known); in a group list every item is
    from that group, so it is left out unless `chat_label`.
    """
    parts = [f"#{transcript_id}", _utc(created_at)]
    if scope.chat_id is None:
        parts.append("private" if chat_id > 0 else chat_title or "a group")
    elif chat_label and scope.title is not None:
        parts.append(scope.title)
    parts.append(format_duration(duration))
    name = origin_name(forward_origin)
    if name:
        parts.append(f"from {name}")
    return " · ".join(parts)


def _export_txt(records: list[TranscriptRecord]) -> str:
    """The readable export: a header per transcript, then its text in timed lines."""
    blocks = []
    for record in records:
        transcription = record.transcription
        chat = "private chat" if record.chat_id > 0 else f"group {record.chat_id}"
        header = [
            f"#{record.id} · {_utc(record.created_at, seconds=True)} UTC · {chat} · "
            f"{format_duration(transcription.duration)}"
        ]
        name = origin_name(record.forward_origin)
        if name:
            header.append(f"Forwarded from {name}")
        cues = build_cues(transcription.words)
        body = [f"[{format_duration(cue.start)}] {cue.text}" for cue in cues] or [transcription.text]
        blocks.append("\n".join(header + [""] + body))
    return "\n\n\n".join(blocks) + "\n"


def _preview(text: str) -> str:
    """The first line of a transcript, cut at a word near PREVIEW_CHARS."""
    lines = text.strip().splitlines()
    if not lines:
        return "(no speech)"
    first = lines[0]
    if len(first) > PREVIEW_CHARS:
        return first[:PREVIEW_CHARS].rsplit(" ", 1)[0] + "…"
    return first + "…" if len(lines) > 1 else first


def _utc(timestamp: float, *, seconds: bool = False) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _range(page: Page[T]) -> str:
    return f"{page.offset + 1}–{page.offset + len(page.items)}"


def _plural(count: int, word: str) -> str:
    if count == 1:
        return word
    return word + ("es" if word.endswith("ch") else "s")


async def _empty_history(context: Context, scope: Scope) -> str:
    if scope.chat_id is not None:
        return "You have no saved transcripts from this group." + await _storing_note(context, scope.user_id)
    return "You have no saved transcripts yet. Send me a voice message to make one." + await _storing_note(
        context, scope.user_id
    )


async def _storing_note(context: Context, user_id: int) -> str:
    """Why nothing may be stored: turned off for the bot, or by the user."""
    if not context.bot_data.settings.history_enabled:
        return "\nHistory is turned off on this bot."
    if not await context.bot_data.storage.get_store_history(user_id):
        return "\nYou turned storing off; /privacy on turns it back on."
    return ""


def register(application: Application) -> None:  # type: ignore[type-arg]
    """Add the history commands (new messages only: an edited command is not answered twice)
    and their buttons."""
    new = filters.UpdateType.MESSAGE
    application.add_handler(CommandHandler("history", on_history, filters=new))
    application.add_handler(CommandHandler("search", on_search, filters=new))
    application.add_handler(CommandHandler("export", on_export, filters=new))
    application.add_handler(CommandHandler("forget", on_forget, filters=new))
    application.add_handler(CommandHandler("privacy", on_privacy, filters=new))
    application.add_handler(CommandHandler("stats", on_stats, filters=new))
    application.add_handler(CallbackQueryHandler(on_history_button, pattern=HISTORY_PAGE))
    application.add_handler(CallbackQueryHandler(on_search_button, pattern=SEARCH_PAGE))
    application.add_handler(CallbackQueryHandler(on_show_button, pattern=SHOW))
    application.add_handler(CallbackQueryHandler(on_forget_button, pattern=FORGET))
