"""The global error handler: log first, with the traceback, then answer briefly."""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType
from telegram.error import TelegramError

from bot.telegram import replies
from bot.telegram.context import Context

log = logging.getLogger(__name__)


async def on_error(update: object, context: Context) -> None:
    log.error("error while handling an update", exc_info=context.error)
    if not isinstance(update, Update) or update.effective_message is None:
        return
    if update.effective_chat is not None and update.effective_chat.type != ChatType.PRIVATE:
        return  # in groups, stay quiet rather than add noise
    try:
        await update.effective_message.reply_text(replies.failure(context.error))
    except TelegramError as exc:
        log.warning("could not report the error to the user: %s", exc)
