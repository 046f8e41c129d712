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
    UnknownLanguageError,
    own_models_after_detection,
    parse_choice,
    request_detects,
    route,
)
from bot.telegram import replies
from bot.telegram.context import Context
from bot.telegram.handlers.commands import ADMIN_STATUSES
from bot.telegram.pipeline import TranscriptionPipeline

log = logging.getLogger(__name__)


async def on_language(update: Update, context: Context) -> None:
    """`/language` shows the choice; `/language de`, `/language en,ru` or `/language auto` changes it."""
    message = update.effective_message
    user = update.effective_user
    if message is None or user is None:
        return
    chat = message.chat
    preferences = context.bot_data.storage.preferences
    pipeline = context.bot_data.pipeline
    argument = " ".join(context.args or [])
    if not argument:
        choice = parse_choice(await preferences.language(chat.id))
        model, own_models, detects = _models(choice, pipeline)
        await message.reply_text(replies.language_state(str(choice), model, own_models, detects=detects))
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
    model, own_models, detects = _models(choice, pipeline)
    await message.reply_text(replies.language_set(str(choice), model, own_models, detects=detects))


def _models(choice: LanguageChoice, pipeline: TranscriptionPipeline) -> tuple[str, dict[str, str], bool]:
    """The model a choice routes to, the detected languages that go on to their own model, and whether
    its requests detect the language at all (`bot.asr.routing.request_detects`)."""
    planned = route(choice, pipeline.models)
    detects = request_detects(planned, pipeline.transcriber.language_detectors)
    return planned.model, own_models_after_detection(planned, pipeline.models) if detects else {}, detects
