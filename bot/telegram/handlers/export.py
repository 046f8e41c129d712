"""/export: the caller's whole history as a readable .txt and a complete .json.

Private chats only (`bot.telegram.handlers.stored`): a group must never receive someone's
private transcripts.
"""

from __future__ import annotations

from datetime import UTC, datetime

from telegram import Update

from bot.telegram import render, replies
from bot.telegram.context import Context
from bot.telegram.delivery import Delivery
from bot.telegram.handlers.stored import private_command, storing_note


async def on_export(update: Update, context: Context) -> None:
    found = await private_command(update, "export")
    if found is None:
        return
    message, scope = found
    records = await context.bot_data.storage.transcripts.export_user(scope.user_id)
    if not records:
        await message.reply_text(replies.NOTHING_TO_EXPORT + await storing_note(context, scope.user_id))
        return
    # Not as replies: in a private chat PTB's reply_text does not quote either.
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    delivery = Delivery(context.bot)
    await delivery.send_file(
        message.chat.id, None, render.export_txt(records).encode(), filename=f"transcripts-{day}.txt",
        caption=replies.export_caption(len(records)),
    )
    await delivery.send_file(
        message.chat.id, None, render.export_json(records).encode(),
        filename=f"transcripts-{day}.json", caption=replies.EXPORT_JSON_CAPTION,
    )
