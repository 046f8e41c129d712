"""/history: the caller's transcripts, newest first, a page at a time; its «Newer»/«Older»
buttons; and the numbered buttons under any list (history or search) that open one transcript.

The privacy rules every path here keeps are in `bot.telegram.handlers.stored`.
"""

from __future__ import annotations

import html
import re

from telegram import Update

from bot.asr.formats import to_txt
from bot.storage import Page, TranscriptSummary
from bot.telegram import render, replies
from bot.telegram.context import Context
from bot.telegram.delivery import Delivery
from bot.telegram.handlers.stored import ID, OFFSET, clamped_page, command, edit_list, pressed, storing_note
from bot.telegram.scope import Scope

HISTORY_PAGE = re.compile(rf"hist:({ID}):({OFFSET})\Z")
SHOW = re.compile(rf"show:({ID}):({ID})\Z")
TRANSCRIPT_ARG = re.compile(rf"#?({ID})\Z")


async def on_history(update: Update, context: Context) -> None:
    """`/history`: the first page of the caller's transcripts; `/history N` opens transcript #N."""
    message, scope = command(update)
    if message is None or scope is None:
        return
    args = context.args or []
    if args:
        match = TRANSCRIPT_ARG.match(args[0]) if len(args) == 1 else None
        if match is None:
            await message.reply_text(replies.HISTORY_USAGE)
            return
        transcript_id = int(match.group(1))
        if not await send_transcript(context, scope, transcript_id, chat_id=message.chat.id,
                                     reply_to=message.message_id):
            await message.reply_text(replies.not_found(transcript_id, scope.where))
        return
    page = await _page(context, scope, 0)
    if not page.total:
        await message.reply_text(await _empty(context, scope))
        return
    await message.reply_html(render.history_html(page, scope), reply_markup=render.history_keyboard(page, scope))


async def on_history_button(update: Update, context: Context) -> None:
    """«Newer» / «Older» under a /history list: edit the list in place."""
    found = await pressed(update, HISTORY_PAGE)
    if found is None:
        return
    query, message, match, scope = found
    page = await _page(context, scope, int(match.group(2)))
    await query.answer()
    if not page.total:
        await edit_list(context, message, html.escape(await _empty(context, scope)), None)
        return
    await edit_list(context, message, render.history_html(page, scope), render.history_keyboard(page, scope))


async def on_show_button(update: Update, context: Context) -> None:
    """A numbered button under a list: send that transcript in full, below the list."""
    found = await pressed(update, SHOW)
    if found is None:
        return
    query, message, match, scope = found
    transcript_id = int(match.group(2))
    if await send_transcript(context, scope, transcript_id, chat_id=message.chat.id, reply_to=message.message_id):
        await query.answer()
    else:
        await query.answer(replies.not_found(transcript_id, scope.where), show_alert=True)


async def send_transcript(context: Context, scope: Scope, transcript_id: int, *, chat_id: int, reply_to: int) -> bool:
    """Send one of the caller's transcripts in full, with its format buttons (as a .txt file when
    very long); False if it is not theirs in this scope."""
    record = await context.bot_data.storage.transcripts.get(transcript_id, user_id=scope.user_id, chat_id=scope.chat_id)
    if record is None:
        return False
    header, body = render.opened_transcript(record, scope)
    buttons = render.format_keyboard(record.id)
    delivery = Delivery(context.bot)
    if len(body) > context.bot_data.settings.transcript_file_chars:
        await delivery.send_file(
            chat_id, reply_to, to_txt(record.transcription.text).encode(), filename=f"transcript-{record.id}.txt",
            caption=header, markup=buttons,
        )
    else:
        await delivery.show(chat_id, reply_to, body, message_id=None, markup=buttons)
    return True


async def _page(context: Context, scope: Scope, offset: int) -> Page[TranscriptSummary]:
    transcripts = context.bot_data.storage.transcripts
    return await clamped_page(
        lambda at: transcripts.history_page(scope.user_id, chat_id=scope.chat_id, offset=at, limit=render.PAGE_SIZE),
        offset,
    )


async def _empty(context: Context, scope: Scope) -> str:
    """The answer when the scope holds no transcripts, and why nothing may be stored."""
    text = replies.NO_HISTORY_IN_GROUP if scope.chat_id is not None else replies.NO_HISTORY_YET
    return text + await storing_note(context, scope.user_id)
