"""Incoming files, /transcribe, and the hint for anything else in private chats."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatType

from bot.telegram import replies
from bot.telegram.attachments import AUTO_KINDS, find_media
from bot.telegram.context import Context


async def on_media(update: Update, context: Context) -> None:
    """A file in a chat: always in private chats; in groups voice/video notes when /auto is on."""
    message = update.effective_message
    user = update.effective_user
    media = find_media(message)
    if message is None or user is None or media is None:
        return
    services = context.bot_data
    if message.chat.type != ChatType.PRIVATE:
        if media.kind not in AUTO_KINDS or not await services.pipeline.auto_transcribe(message.chat.id):
            return
    await services.pipeline.accept(message, media, user_id=user.id)


async def on_transcribe(update: Update, context: Context) -> None:
    """`/transcribe` as a reply to an audio/video message: transcribe that one."""
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return
    target = message.reply_to_message
    media = find_media(target)
    if target is None or media is None:
        await message.reply_text(replies.TRANSCRIBE_USAGE)
        return
    await context.bot_data.pipeline.accept(target, media, user_id=user.id, explicit=True)


async def on_other(update: Update, _context: Context) -> None:
    """Anything else sent in a private chat: one line on what the bot accepts."""
    if update.effective_message is not None:
        await update.effective_message.reply_text(replies.UNSUPPORTED)
