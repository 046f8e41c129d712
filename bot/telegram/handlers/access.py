"""Allow-lists: ALLOWED_USER_IDS / ALLOWED_CHAT_IDS, checked before any other handler."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType
from telegram.ext import ApplicationHandlerStop

from bot.telegram import replies
from bot.telegram.context import Context

log = logging.getLogger(__name__)


async def check_access(update: Update, context: Context) -> None:
    """Stop updates from users or chats outside the allow-lists.

    Private chats get a short refusal; groups get silence (no spam in other people's chats).
    """
    settings = context.bot_data.settings
    user = update.effective_user
    chat = update.effective_chat
    user_ok = not settings.allowed_user_ids or (user is not None and user.id in settings.allowed_user_ids)
    chat_ok = (
        not settings.allowed_chat_ids
        or chat is None
        or chat.type == ChatType.PRIVATE
        or chat.id in settings.allowed_chat_ids
    )
    if user_ok and chat_ok:
        return
    log.info("refused update from user %s in chat %s", user and user.id, chat and chat.id)
    if update.callback_query is not None:
        await update.callback_query.answer(replies.NOT_ALLOWED)
    elif chat is not None and chat.type == ChatType.PRIVATE and update.effective_message is not None:
        await update.effective_message.reply_text(replies.NOT_ALLOWED)
    raise ApplicationHandlerStop


def is_admin(context: Context, user_id: int | None) -> bool:
    """Bot operators listed in ADMIN_USER_IDS."""
    return user_id is not None and user_id in context.bot_data.settings.admin_user_ids
