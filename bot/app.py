"""The composition root: builds the Application and owns the shared resources' lifetime.

Storage, the transcriber (worker pool) and the health server are created in `post_init`
and closed in `post_shutdown`, as in python-telegram-bot's examples; `_serve` runs the hooks
in the order PTB's `run_polling` does. On SIGTERM polling stops first; then, in `post_stop`
(while the Bot can still send), running jobs get a short grace period to finish and answer,
and whatever is still unfinished stays in the database and is resumed by the next start.
`post_shutdown` runs after PTB has closed the Bot's HTTP connections, so it only closes what
needs no Telegram.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlparse

from telegram import Update
from telegram.error import TelegramError
from telegram.ext import Application, ApplicationBuilder, ContextTypes

from bot.audio.decode import check_ffmpeg
from bot.execution.factory import create_transcriber
from bot.ops import metrics
from bot.ops.health import HealthServer
from bot.ops.logs import setup_logging
from bot.settings import Settings
from bot.storage import Storage
from bot.telegram import delivery, handlers
from bot.telegram.context import BotData, Context
from bot.telegram.pipeline import TranscriptionPipeline

log = logging.getLogger(__name__)

#: Seconds running jobs may finish in after SIGTERM before they are left for the next start.
SHUTDOWN_GRACE_SECONDS = 5.0
#: Telegram counts as reachable when a call succeeded this recently.
TELEGRAM_FRESH_SECONDS = 180.0
GAUGE_INTERVAL_SECONDS = 5.0
PING_INTERVAL_SECONDS = 60.0
PURGE_INTERVAL_SECONDS = 3600.0
#: What stops the bot cleanly (as PTB's run_polling has them): Ctrl-C, `docker stop`, abort().
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGABRT)


def build_application(settings: Settings) -> Application:
    """Wire settings, handlers and lifecycle hooks into a PTB Application."""
    assert settings.telegram_bot_token is not None
    health: list[HealthServer] = []

    async def post_init(application: Application) -> None:
        data: BotData = application.bot_data
        data.settings = settings
        if settings.metrics_port is not None:
            # First, so /healthz answers (and /readyz says "not yet") while the model loads.
            server = HealthServer(settings.metrics_host, settings.metrics_port, readiness=lambda: _readiness(data))
            await server.start()
            health.append(server)
        data.storage = await Storage.open(settings.database_path)
        data.transcriber = create_transcriber(settings, on_worker_restart=metrics.WORKER_RESTARTS.inc)
        await data.transcriber.start()
        metrics.WORKERS_READY.set(data.transcriber.ready_workers)
        data.pipeline = TranscriptionPipeline(
            bot=application.bot, settings=settings, storage=data.storage, transcriber=data.transcriber
        )
        await application.bot.set_my_commands(handlers.COMMANDS)
        data.telegram_ok_at = time.monotonic()
        unfinished = await data.storage.jobs.unfinished()
        if unfinished:
            log.info("resuming %d unfinished jobs", len(unfinished))
        data.pipeline.resume(unfinished)
        queue = application.job_queue
        assert queue is not None
        queue.run_repeating(_update_gauges, GAUGE_INTERVAL_SECONDS, first=0)
        queue.run_repeating(_ping_telegram, PING_INTERVAL_SECONDS, first=PING_INTERVAL_SECONDS)
        if settings.history_retention_days:
            queue.run_repeating(_purge_old, PURGE_INTERVAL_SECONDS, first=10)
        log.info("ready: %d workers, model %s", data.transcriber.ready_workers, settings.asr_model)

    async def post_stop(application: Application) -> None:
        """Updates have stopped: let running jobs finish (or keep them for the next start)."""
        data: BotData = application.bot_data
        if hasattr(data, "pipeline"):
            data.pipeline.stop_accepting()
        if hasattr(data, "transcriber"):
            await data.transcriber.shutdown(grace=SHUTDOWN_GRACE_SECONDS)
        if hasattr(data, "pipeline"):
            await data.pipeline.drain()

    async def post_shutdown(application: Application) -> None:
        data: BotData = application.bot_data
        if hasattr(data, "transcriber"):
            # Already done by post_stop unless start-up failed half-way; then this stops the workers.
            await data.transcriber.shutdown()
        if hasattr(data, "storage"):
            await data.storage.close()
        for server in health:
            await server.stop()
        log.info("stopped")

    application = (
        ApplicationBuilder()
        .token(settings.telegram_bot_token.get_secret_value())
        .base_url(settings.telegram_api_base_url)
        .base_file_url(settings.telegram_file_base_url)
        .local_mode(settings.telegram_local_mode)
        .context_types(ContextTypes(bot_data=BotData))
        .concurrent_updates(64)
        .rate_limiter(delivery.rate_limiter())  # the one owner of flood-wait retries
        .connect_timeout(10)
        .read_timeout(settings.telegram_read_timeout_seconds)
        .write_timeout(60)
        .media_write_timeout(120)
        .get_updates_read_timeout(40)
        .post_init(post_init)
        .post_stop(post_stop)
        .post_shutdown(post_shutdown)
        .build()
    )
    handlers.register(application)
    return application


def run_bot(settings: Settings) -> None:
    """`python -m bot run`: long polling, or a webhook server when WEBHOOK_URL is set."""
    secrets = [secret.get_secret_value() for secret in (settings.telegram_bot_token, settings.webhook_secret) if secret]
    setup_logging(level=settings.log_level, fmt=settings.log_format, secrets=secrets)
    check_ffmpeg()
    if settings.webhook_url and settings.webhook_secret is None:
        raise SystemExit("Invalid setting WEBHOOK_SECRET: required when WEBHOOK_URL is set")
    asyncio.run(_serve(build_application(settings), settings))


async def _serve(application: Application, settings: Settings) -> None:
    """What PTB's `run_polling`/`run_webhook` do, with the stop signals only setting an event.

    PTB's own handlers raise SystemExit from inside the event loop; one that lands in the loop
    step where a start-up step finishes leaves that step's "stop the loop" callback behind, and
    it then stops the loop in the middle of the shutdown, which never completes. Here the
    signal is acted on between the steps: it cancels start-up (post_init) or ends serving.
    """
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in STOP_SIGNALS:
        loop.add_signal_handler(signum, stopping.set)
    updater = application.updater
    assert updater is not None and application.post_init and application.post_stop and application.post_shutdown
    try:
        await application.initialize()
        if not await _unless_stopped(application.post_init(application), stopping):
            return
        if settings.webhook_url:
            assert settings.webhook_secret is not None
            await updater.start_webhook(
                listen=settings.webhook_listen,
                port=settings.webhook_port,
                url_path=urlparse(settings.webhook_url).path.lstrip("/"),
                webhook_url=settings.webhook_url,
                secret_token=settings.webhook_secret.get_secret_value(),
                allowed_updates=Update.ALL_TYPES,
            )
        else:
            await updater.start_polling(allowed_updates=Update.ALL_TYPES, error_callback=_polling_error(application))
        await application.start()
        await stopping.wait()
    finally:
        if updater.running:
            await updater.stop()
        if application.running:
            await application.stop()
            await application.post_stop(application)
        await application.shutdown()
        await application.post_shutdown(application)


async def _unless_stopped(step: Coroutine[Any, Any, None], stopping: asyncio.Event) -> bool:
    """Run a start-up step; a stop signal meanwhile cancels it (False) rather than waiting for the model load."""
    task = asyncio.ensure_future(step)
    stop = asyncio.ensure_future(stopping.wait())
    await asyncio.wait({task, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not task.done():
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return False
    task.result()
    return not stopping.is_set()


def _polling_error(application: Application) -> Callable[[TelegramError], None]:
    """Errors while fetching updates go to the error handlers, as `run_polling` sends them."""

    def report(error: TelegramError) -> None:
        application.create_task(application.process_error(error=error, update=None))

    return report


async def _readiness(data: BotData) -> dict[str, bool]:
    """Workers loaded, database writable, Telegram reached recently; all False while starting."""
    try:
        await data.storage.ping()
        database = True
    except Exception:  # noqa: BLE001 - any failure (or no database yet) means not writable
        database = False
    return {
        "workers": hasattr(data, "transcriber") and data.transcriber.ready_workers > 0,
        "database": database,
        "telegram": time.monotonic() - data.telegram_ok_at < TELEGRAM_FRESH_SECONDS,
    }


async def _update_gauges(context: Context) -> None:
    metrics.QUEUE_DEPTH.set(context.bot_data.transcriber.queue_depth)
    metrics.WORKERS_READY.set(context.bot_data.transcriber.ready_workers)


async def _ping_telegram(context: Context) -> None:
    try:
        await context.bot.get_me()
        context.bot_data.telegram_ok_at = time.monotonic()
    except TelegramError as exc:
        log.warning("Telegram unreachable: %s", exc)


async def _purge_old(context: Context) -> None:
    days = context.bot_data.settings.history_retention_days
    removed = await context.bot_data.storage.transcripts.purge_older_than(days)
    if removed:
        log.info("retention: deleted %d transcripts older than %d days", removed, days)
