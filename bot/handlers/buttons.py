"""Inline buttons: Cancel on a running job, and .txt/.srt/.vtt under a finished transcript.

Callback data comes from the client and is validated, never trusted: the ids are parsed
strictly, and ownership is checked against the database (a transcript is only sent to
its owner; a job is only cancelled by its requester).
"""

from __future__ import annotations

import re

from telegram import Update

from bot.context import Context
from bot.formats import to_srt, to_txt, to_vtt

CANCEL = re.compile(r"^cancel:(\d{1,18})$")
FORMAT = re.compile(r"^fmt:(\d{1,18}):(txt|srt|vtt)$")


async def on_cancel(update: Update, context: Context) -> None:
    query = update.callback_query
    match = CANCEL.match(query.data or "") if query else None
    if query is None or match is None:
        return
    result = context.bot_data.pipeline.cancel(int(match.group(1)), user_id=query.from_user.id)
    if result is False:
        await query.answer("Only the person who sent this file can cancel it.", show_alert=True)
    elif result is None:
        await query.answer("This transcription is already finished.")
    else:
        await query.answer("Cancelling…")


async def on_format(update: Update, context: Context) -> None:
    query = update.callback_query
    match = FORMAT.match(query.data or "") if query else None
    if query is None or match is None:
        return
    record = await context.bot_data.storage.get_transcript(int(match.group(1)), user_id=query.from_user.id)
    if record is None:
        await query.answer("Only the person who asked for this transcript can download it.", show_alert=True)
        return
    fmt = match.group(2)
    transcription = record.transcription
    body = {"txt": lambda: to_txt(transcription.text), "srt": lambda: to_srt(transcription.words),
            "vtt": lambda: to_vtt(transcription.words)}[fmt]()
    await query.answer()
    await context.bot.send_document(
        query.from_user.id if query.message is None else query.message.chat.id,
        body.encode(),
        filename=f"transcript-{record.id}.{fmt}",
        reply_to_message_id=query.message.message_id if query.message else None,
    )
