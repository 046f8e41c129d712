"""/start, /help and /auto."""

from __future__ import annotations

from telegram import Update
from telegram.constants import ChatMemberStatus, ChatType

from bot.telegram import replies
from bot.telegram.context import Context

ADMIN_STATUSES = (ChatMemberStatus.ADMINISTRATOR, ChatMemberStatus.OWNER)


async def on_help(update: Update, _context: Context) -> None:
    """What the bot does, what it stores, and its commands."""
    if update.effective_message is not None:
        await update.effective_message.reply_text(replies.HELP)


async def on_auto(update: Update, context: Context) -> None:
    """`/auto on|off`: group admins switch automatic transcription for their chat."""
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return
    if message.chat.type == ChatType.PRIVATE:
        await message.reply_text(replies.AUTO_IN_PRIVATE)
        return
    preferences = context.bot_data.storage.preferences
    choice = (context.args or [""])[0].lower()
    if choice not in ("on", "off"):
        await message.reply_text(replies.auto_state(await preferences.auto_transcribe(message.chat.id)))
        return
    member = await context.bot.get_chat_member(message.chat.id, user.id)
    if member.status not in ADMIN_STATUSES:
        await message.reply_text(replies.AUTO_ADMINS_ONLY)
        return
    await preferences.upsert_chat(message.chat.id, chat_type=message.chat.type, title=message.chat.title)
    await preferences.set_auto_transcribe(message.chat.id, choice == "on")
    await message.reply_text(replies.AUTO_ON if choice == "on" else replies.AUTO_OFF)
