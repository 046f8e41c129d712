"""Typed access to the bot's shared resources from handlers.

python-telegram-bot creates `bot_data` with `BotData()`; `post_init` fills it in (the
composition root in `bot.app`), so handlers read `context.bot_data.storage` with types
instead of `context.bot_data["storage"]`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeAlias

from telegram.ext import CallbackContext, ExtBot

if TYPE_CHECKING:
    from bot.execution.base import Transcriber
    from bot.settings import Settings
    from bot.storage import Storage
    from bot.telegram.pipeline import TranscriptionPipeline


class BotData:
    """Resources shared by every handler, created in `post_init` and closed in `post_shutdown`."""

    settings: Settings
    storage: Storage
    transcriber: Transcriber
    pipeline: TranscriptionPipeline
    #: monotonic time of the last successful call to Telegram (for readiness)
    telegram_ok_at: float = float("-inf")


Context: TypeAlias = CallbackContext[ExtBot[None], dict, dict, BotData]
