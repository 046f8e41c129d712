"""/privacy on|off (whether new transcripts are stored) and /forget (delete everything, after a
confirmation only its user can press, in their private chat).

The privacy rules every path here keeps are in `bot.telegram.handlers.stored`.
"""

from __future__ import annotations

import html
import re

from telegram import Update

from bot.telegram import render, replies
from bot.telegram.context import Context
from bot.telegram.handlers.stored import ID, command, edit_list, pressed, private_command

FORGET = re.compile(rf"forget:(?:yes:({ID})|no)\Z")


async def on_privacy(update: Update, context: Context) -> None:
    """`/privacy on|off`: whether the caller's new transcripts are stored; no argument shows it."""
    message, scope = command(update)
    if message is None or scope is None:
        return
    preferences = context.bot_data.storage.preferences
    args = [arg.lower() for arg in context.args or []]
    if args in (["on"], ["off"]):
        enabled = args == ["on"]
        await preferences.set_store_history(scope.user_id, enabled)
        text = replies.PRIVACY_ON if enabled else replies.PRIVACY_OFF
    elif not args:
        text = replies.privacy_state(await preferences.store_history(scope.user_id))
    else:
        text = replies.PRIVACY_USAGE
    if not context.bot_data.settings.history_enabled:
        text += "\n" + replies.HISTORY_OFF_NOTE
    await message.reply_text(text)


async def on_forget(update: Update, context: Context) -> None:
    """`/forget`: ask before deleting everything stored about the caller (private chats only,
    so the prompt and its button are seen and pressed by that user alone)."""
    found = await private_command(update, "forget")
    if found is None:
        return
    message, scope = found
    transcripts = context.bot_data.storage.transcripts
    total = (await transcripts.history_page(scope.user_id, chat_id=None, offset=0, limit=1)).total
    await message.reply_text(replies.forget_prompt(total), reply_markup=render.forget_keyboard(scope.user_id))


async def on_forget_button(update: Update, context: Context) -> None:
    """The /forget prompt's buttons: only its user, in their private chat, can confirm."""
    found = await pressed(update, FORGET)
    if found is None:
        return
    query, message, match, scope = found
    if scope.chat_id is not None:
        await query.answer(replies.STALE_BUTTON)
        return
    await query.answer()
    if match.group(1) is None:
        await edit_list(context, message, html.escape(replies.NOTHING_DELETED), None)
        return
    preferences = context.bot_data.storage.preferences
    had_opted_out = not await preferences.store_history(scope.user_id)
    deleted = await preferences.forget_user(scope.user_id)
    await edit_list(context, message, html.escape(replies.forgotten(deleted, had_opted_out=had_opted_out)), None)
