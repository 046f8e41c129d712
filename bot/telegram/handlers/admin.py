"""/stats for the bot's operators (ADMIN_USER_IDS): load and totals.

Others get a short refusal in private and silence in groups (no noise in other people's chats).
"""

from __future__ import annotations

from telegram import Update

from bot.telegram import replies
from bot.telegram.context import Context
from bot.telegram.handlers.access import is_admin
from bot.telegram.handlers.stored import command


async def on_stats(update: Update, context: Context) -> None:
    message, scope = command(update)
    if message is None or scope is None:
        return
    if not is_admin(context, scope.user_id):
        if scope.chat_id is None:
            await message.reply_text(replies.STATS_OPERATORS_ONLY)
        return
    stats = await context.bot_data.storage.stats.summary()
    transcriber = context.bot_data.transcriber
    await message.reply_text(
        replies.stats(
            users=stats.users, chats=stats.chats, transcripts=stats.transcripts, audio_seconds=stats.audio_seconds,
            queued_jobs=stats.queued_jobs, running_jobs=stats.running_jobs,
            workers_ready=transcriber.ready_workers, queue_depth=transcriber.queue_depth,
            median_real_time_factor=stats.median_real_time_factor_24h,
        )
    )
