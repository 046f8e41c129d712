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
        await message.reply_text("/auto works in groups: I always transcribe what you send me here.")
        return
    storage = context.bot_data.storage
    choice = (context.args or [""])[0].lower()
    if choice not in ("on", "off"):
        state = "on" if await storage.get_auto_transcribe(message.chat.id) else "off"
        await message.reply_text(f"Automatic transcription is {state}. Admins: /auto on or /auto off.")
        return
    member = await context.bot.get_chat_member(message.chat.id, user.id)
    if member.status not in ADMIN_STATUSES:
        await message.reply_text("Only group admins can change this.")
        return
    await storage.upsert_chat(message.chat.id, chat_type=message.chat.type, title=message.chat.title)
    await storage.set_auto_transcribe(message.chat.id, choice == "on")
    await message.reply_text(
        "Automatic transcription is on." if choice == "on" else "Automatic transcription is off; reply /transcribe to a message to transcribe it."
    )
