"""/language: the language this chat's audio is transcribed in (and so the model it runs on).

Stored per chat; a private chat's id is its user's id, so there it is the user's own
choice. In groups anyone may ask, only admins may change it (as for /auto).
"""

from __future__ import annotations

import logging

from telegram import Update
from telegram.constants import ChatType

from bot.asr.routing import (
    LanguageChoice,
    ModelTable,
    UnknownLanguageError,
    own_models_after_detection,
    parse_choice,
    route,
)
from bot.telegram import replies
from bot.telegram.context import Context
from bot.telegram.handlers.commands import ADMIN_STATUSES

log = logging.getLogger(__name__)


async def on_language(update: Update, context: Context) -> None:
    """`/language` shows the choice; `/language de`, `/language en,ru` or `/language auto` changes it."""
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return
    chat = message.chat
    preferences = context.bot_data.storage.preferences
    models = context.bot_data.pipeline.models
    argument = " ".join(context.args or [])
    if not argument:
        choice = parse_choice(await preferences.language(chat.id))
        await message.reply_text(replies.language_state(str(choice), *_models(choice, models)))
        return
    try:
        choice = parse_choice(argument)
    except UnknownLanguageError as exc:
        log.info("chat %s: /language %r refused: %s", chat.id, argument[:50], exc, extra={"chat_id": chat.id})
        await message.reply_text(replies.unknown_language(exc.code))
        return
    if chat.type != ChatType.PRIVATE:
        member = await context.bot.get_chat_member(chat.id, user.id)
        if member.status not in ADMIN_STATUSES:
            await message.reply_text(replies.AUTO_ADMINS_ONLY)
            return
    await preferences.upsert_chat(chat.id, chat_type=chat.type, title=chat.title)
    await preferences.set_language(chat.id, None if choice.is_auto else str(choice))
    log.info("chat %s: language set to %s", chat.id, choice, extra={"chat_id": chat.id, "user_id": user.id})
    await message.reply_text(replies.language_set(str(choice), *_models(choice, models)))


def _models(choice: LanguageChoice, models: ModelTable) -> tuple[str, dict[str, str]]:
    """The model a choice routes to, and the detected languages that go on to their own model."""
    planned = route(choice, models)
    return planned.model, own_models_after_detection(planned, models)
