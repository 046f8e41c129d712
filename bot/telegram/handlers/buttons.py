"""Inline buttons: Cancel on a running job, .txt/.srt/.vtt under a finished transcript, and the rest.

Callback data comes from the client and is validated, never trusted: any client can send
any string as the data of any button. The ids are parsed strictly, and ownership is
checked against the owner of the job or transcript (a transcript is only sent to its
owner; a job is only cancelled by its requester). Data matching nothing is answered too,
so a forged or outdated press never leaves the client's spinner running.
"""

from __future__ import annotations

import logging
import re

from telegram import Update

from bot.asr.formats import to_srt, to_txt, to_vtt
from bot.telegram import replies
from bot.telegram.context import Context
from bot.telegram.delivery import Delivery

log = logging.getLogger(__name__)

#: Jobs the database could not record run under negative ids (see `TranscriptionPipeline`).
CANCEL = re.compile(r"^cancel:(-?\d{1,18})$")
FORMAT = re.compile(r"^fmt:(\d{1,18}):(txt|srt|vtt)$")


async def on_cancel(update: Update, context: Context) -> None:
    query = update.callback_query
    match = CANCEL.match(query.data or "") if query else None
    if query is None or match is None:
        return
    result = await context.bot_data.pipeline.cancel(int(match.group(1)), user_id=query.from_user.id)
    if result is False:
        log.info("refused cancel of job %s by user %s", match.group(1), query.from_user.id)
        await query.answer(replies.NOT_YOUR_JOB, show_alert=True)
    elif result is None:
        await query.answer(replies.ALREADY_FINISHED)
    else:
        await query.answer(replies.CANCELLING)


async def on_format(update: Update, context: Context) -> None:
    query = update.callback_query
    match = FORMAT.match(query.data or "") if query else None
    if query is None or match is None:
        return
    record = await context.bot_data.storage.transcripts.get(int(match.group(1)), user_id=query.from_user.id)
    if record is None:
        log.info("refused transcript %s to user %s", match.group(1), query.from_user.id)
        await query.answer(replies.NOT_YOUR_TRANSCRIPT, show_alert=True)
        return
    fmt = match.group(2)
    transcription = record.transcription
    body = {"txt": lambda: to_txt(transcription.text), "srt": lambda: to_srt(transcription.words),
            "vtt": lambda: to_vtt(transcription.words)}[fmt]()
    await query.answer()
    message = query.message
    # The message under which the button was pressed may be gone by now: then it is sent without a reply.
    await Delivery(context.bot).send_file(
        query.from_user.id if message is None else message.chat.id,
        None if message is None else message.message_id,
        body.encode(),
        filename=f"transcript-{record.id}.{fmt}",
    )


async def on_unknown(update: Update, _context: Context) -> None:
    """Any other callback data: malformed, forged, or from a button of an older version."""
    query = update.callback_query
    if query is not None:
        log.info("unknown callback data %r from user %s", (query.data or "")[:64], query.from_user.id)
        await query.answer(replies.STALE_BUTTON)
