"""From an accepted file to the transcript in the chat: the life of one job.

A job is written to the database before any work starts, so a crash or restart never
loses a voice note: `resume` picks up what was queued or running. The steps are:
answer from the cache when the same content was transcribed before; otherwise download
into a private temporary directory, hand the file to the transcriber, show progress in
the placeholder message, and finally edit the placeholder into the transcript (split
across messages, or sent as a file when very long). Every failure ends as a short,
specific message in the chat and one log line.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import sqlite3
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import timedelta
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

import aiosqlite
from telegram import Bot, InlineKeyboardButton, InlineKeyboardMarkup, Message, ReplyParameters
from telegram.constants import ChatAction
from telegram.error import BadRequest, Forbidden, NetworkError, RetryAfter, TelegramError

from bot.ops import metrics
from bot.telegram import replies
from bot.asr.types import Progress, Transcription
from bot.errors import AudioTooLongError, ExecutorOverloadedError, JobCancelledError, JobTimeoutError, VoiceBotError
from bot.execution.local.pool import Transcriber, TranscriptionJob
from bot.telegram.limits import TokenBucket, UserLimiter
from bot.telegram.attachments import Media, describe_origin
from bot.settings import Settings
from bot.storage.db import Job, JobRequest, JobStatus, Storage, StorageError

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Jobs that keep failing across restarts (a file that kills the process) are given up.
MAX_ATTEMPTS = 3
#: Jobs at least this long get a Cancel button on their placeholder.
CANCELLABLE_SECONDS = 30.0
#: Tries of one Telegram call that fails with a network error, timeout or flood wait.
TELEGRAM_ATTEMPTS = 4
#: Optional messages (progress edits, chat actions) per second, all chats together: a third of
#: the 30 a second Telegram allows a bot (PTB's AIORateLimiter holds every call to that), so a
#: long queue's position updates can't delay placeholders and transcripts.
COSMETIC_CALLS_PER_SECOND = 10.0
#: Storage failures that must not stop a transcript from reaching the user.
STORAGE_ERRORS = (sqlite3.Error, aiosqlite.Error, StorageError, OSError, ValueError)
#: Edits that can never succeed (the placeholder was deleted, or is too old to edit after a
#: long downtime): the text is sent as a new message instead.
_NOT_EDITABLE = (
    "message to edit not found", "message to be replied not found", "message_id_invalid", "message can't be edited",
)


class FileTooBigError(VoiceBotError):
    """The file is larger than the Bot API (or MAX_FILE_MB) lets us download."""

    def __init__(self, size_bytes: int, limit_mb: float) -> None:
        super().__init__(
            f"file is {size_bytes} bytes",
            user_message=replies.TOO_BIG.format(size=size_bytes / 2**20, limit=limit_mb),
        )


class RateLimitedError(VoiceBotError):
    """The user has too many files in flight or sent too many this minute."""

    def __init__(self, retry_after: float) -> None:
        super().__init__("user rate limit", user_message=replies.rate_limited(retry_after))


@dataclass(eq=False)
class _Running:
    """A job in this process: its row, when it arrived, and its executor handle."""

    job: Job
    started: float
    handle: TranscriptionJob | None = None
    cancel_requested: bool = False
    latest: Progress | None = None


class TranscriptionPipeline:
    """Accepts files, runs their jobs, and answers in the chat."""

    def __init__(self, *, bot: Bot, settings: Settings, storage: Storage, transcriber: Transcriber) -> None:
        self.bot = bot
        self.settings = settings
        self.storage = storage
        self.transcriber = transcriber
        self.limiter = UserLimiter(
            per_minute=settings.user_jobs_per_minute, concurrent=settings.user_max_concurrent_jobs
        )
        self._cosmetic = TokenBucket(rate=COSMETIC_CALLS_PER_SECOND, burst=COSMETIC_CALLS_PER_SECOND)
        self._running: dict[int, _Running] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        # Ids for jobs the database could not record: negative, so they never meet a row's id.
        self._transient_ids = itertools.count(-1, -1)

    # -- entry points ------------------------------------------------------------------

    async def accept(self, message: Message, media: Media, *, user_id: int, explicit: bool = False) -> None:
        """A file arrived (or /transcribe pointed at one, `explicit`): refuse early or queue a job."""
        chat = message.chat
        started = time.monotonic()
        try:
            self._check_upfront(media)
        except VoiceBotError as exc:
            log.info("refused file: %s", exc, extra={"user_id": user_id, "chat_id": chat.id, "outcome": "refused"})
            metrics.record_job("refused", latency_seconds=time.monotonic() - started)
            await self._reply(chat.id, message.message_id, exc.user_message)
            return
        wait = self.limiter.try_acquire(user_id)
        if wait is not None:
            error = RateLimitedError(wait)
            log.info("rate limited", extra={"user_id": user_id, "chat_id": chat.id, "outcome": "refused"})
            metrics.record_job("refused", latency_seconds=time.monotonic() - started)
            await self._reply(chat.id, message.message_id, error.user_message)
            return
        await self._store(self.storage.upsert_chat(chat.id, chat_type=chat.type, title=chat.title))
        request = JobRequest(
            chat_id=chat.id,
            message_id=message.message_id,
            user_id=user_id,
            chat_type=chat.type,
            file_id=media.file_id,
            file_unique_id=media.file_unique_id,
            media_kind=media.kind,
            file_size=media.file_size,
            duration=media.duration,
            mime_type=media.mime_type,
            forward_origin=describe_origin(message.forward_origin),
        )
        job, created = await self._create_job(request)
        if not created:
            self.limiter.release(user_id)
            log.info("duplicate request for job %s ignored", job.id, extra={"chat_id": chat.id})
            if explicit:
                await self._reply(chat.id, message.message_id, replies.ALREADY)
            return
        # Registered before the placeholder shows its Cancel button, so a press finds the job.
        running = self._register(job, started)
        await self._send_action(chat.id)
        ahead = self.transcriber.queue_depth
        try:
            placeholder = await self._reply(
                chat.id, message.message_id, replies.placeholder(media.duration, ahead), markup=self._cancel_markup(job)
            )
        except TelegramError as exc:
            # The job is recorded and its slot taken: run it anyway, the result is sent as a new message.
            log.warning("job %s: could not send the placeholder: %s", job.id, exc)
            placeholder = None
        if placeholder is not None:
            if _persisted(job):
                await self._store(self.storage.set_job_placeholder(job.id, placeholder.message_id))
            running.job = _with_placeholder(running.job, placeholder.message_id)
        self._spawn(running)

    async def auto_transcribe(self, chat_id: int) -> bool:
        """Whether a group wants every voice note transcribed (the default)."""
        return bool(await self._store(self.storage.get_auto_transcribe(chat_id), True))

    def resume(self, jobs: list[Job]) -> None:
        """Restart jobs left queued or running by a previous process."""
        for job in jobs:
            self.limiter.try_acquire(job.user_id)
            self._spawn(self._register(job, time.monotonic()))

    def cancel(self, job_id: int, *, user_id: int) -> bool | None:
        """Cancel a running job; None if it isn't running here, False if not the requester's."""
        running = self._running.get(job_id)
        if running is None:
            return None
        if running.job.user_id != user_id:
            return False
        running.cancel_requested = True
        if running.handle is not None:
            running.handle.cancel()
        return True

    def stop_accepting(self) -> None:
        """From now on, interrupted jobs keep their database rows for the next start."""
        self._closing = True

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait for job tasks to wind down (after the transcriber was shut down), then cancel the rest.

        A task still waiting past `timeout` is cancelled rather than left to be destroyed
        with the event loop: it ends as "interrupted", and its row stays for the next start.
        """
        if not self._tasks:
            return
        _, pending = await asyncio.wait(self._tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)

    @property
    def active_jobs(self) -> int:
        return len(self._running)

    # -- one job -----------------------------------------------------------------------

    def _register(self, job: Job, started: float) -> _Running:
        running = _Running(job, started)
        self._running[job.id] = running
        return running

    def _spawn(self, running: _Running) -> None:
        task = asyncio.create_task(self._run(running), name=f"job-{running.job.id}")
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run(self, running: _Running) -> None:
        job, started = running.job, running.started
        outcome = "failed"
        result: Transcription | None = None
        try:
            if job.attempts >= MAX_ATTEMPTS:
                raise VoiceBotError(f"gave up after {job.attempts} attempts")
            result, cached = await self._transcribe(running)
            outcome = "cached" if cached else "done"
            await self._deliver(running, result, cached=cached)
        except JobCancelledError as exc:
            if self._closing:
                outcome = "interrupted"
                log.info("job %s interrupted by shutdown; the next start resumes it", job.id)
                return  # the row stays queued/running
            outcome = "cancelled"
            await self._finish(running.job, JobStatus.CANCELLED, str(exc))
            try:
                await self._edit(running, exc.user_message)
            except TelegramError as error:
                log.warning("could not tell chat %s about job %s: %s", job.chat_id, job.id, error)
        except asyncio.CancelledError:
            # Only `drain` cancels job tasks, at shutdown: the row stays queued/running.
            outcome = "interrupted"
            log.info("job %s interrupted by shutdown; the next start resumes it", job.id)
            raise
        except ExecutorOverloadedError as exc:
            # Every worker busy and the queue full: a polite "try later", not a failure.
            outcome = "refused"
            log.info("job %s refused: %s", job.id, exc, extra={"job_id": job.id, "user_id": job.user_id})
            await self._fail(running, str(exc), exc.user_message)
        except VoiceBotError as exc:
            outcome = "timeout" if isinstance(exc, JobTimeoutError) else "failed"
            log.warning("job %s failed: %s", job.id, exc)
            await self._fail(running, str(exc), exc.user_message)
        except TelegramError as exc:
            outcome = "failed"
            log.warning("job %s: Telegram error: %s", job.id, exc)
            await self._fail(running, str(exc), replies.TELEGRAM_FAILED)
        except Exception as exc:  # noqa: BLE001 - a bug must not leave the user without an answer
            outcome = "failed"
            log.exception("job %s crashed", job.id)
            await self._fail(running, repr(exc), VoiceBotError.user_message)
        finally:
            self._running.pop(job.id, None)
            self.limiter.release(job.user_id)
            if outcome != "interrupted":
                latency = time.monotonic() - started
                metrics.record_job(
                    outcome,  # type: ignore[arg-type]
                    latency_seconds=latency,
                    audio_seconds=result.duration if result and outcome == "done" else 0.0,
                    processing_seconds=result.processing_seconds if result and outcome == "done" else 0.0,
                )
                log.info(
                    "job %s %s", job.id, outcome,
                    extra={
                        "job_id": job.id, "user_id": job.user_id, "chat_id": job.chat_id, "outcome": outcome,
                        "duration": result.duration if result else job.duration,
                        "rtf": round(result.real_time_factor, 4) if result else None,
                        "latency": round(latency, 3),
                    },
                )
                if result is not None:
                    log.debug("job %s text: %s", job.id, result.text)

    async def _fail(self, running: _Running, error: str, user_message: str) -> None:
        """Record the failure and tell the user; a chat that can't be reached is only logged."""
        await self._finish(running.job, JobStatus.FAILED, error)
        try:
            await self._edit(running, user_message)
        except TelegramError as exc:
            log.warning("could not tell chat %s about job %s: %s", running.job.chat_id, running.job.id, exc)

    async def _transcribe(self, running: _Running) -> tuple[Transcription, bool]:
        """The transcript from the cache, or by downloading and running the model."""
        job = running.job
        cached = await self._store(self.storage.find_cached(job.file_unique_id))
        if cached is not None:
            metrics.CACHE_HITS.inc()
            return cached.transcription, True
        if _persisted(job):
            await self._store(self.storage.mark_job_running(job.id))
        with tempfile.TemporaryDirectory(prefix="voicebot-") as workdir:
            path = Path(workdir) / f"job-{job.id}.media"
            file = await self._call(lambda: self.bot.get_file(job.file_id))
            limit = self.settings.max_file_mb * 2**20
            if file.file_size and file.file_size > limit:
                raise FileTooBigError(file.file_size, self.settings.max_file_mb)
            await self._call(lambda: file.download_to_drive(path))
            if running.cancel_requested:
                raise JobCancelledError("cancelled before it started")
            running.handle = self.transcriber.submit(
                path, owner=job.user_id, on_progress=lambda p: setattr(running, "latest", p)
            )
            return await self._await_with_progress(running), False

    async def _await_with_progress(self, running: _Running) -> Transcription:
        """Wait for the result, editing the placeholder with queue position or progress."""
        assert running.handle is not None
        result = asyncio.ensure_future(running.handle.result())
        shown = ""
        try:
            while True:
                done, _ = await asyncio.wait({result}, timeout=self.settings.progress_interval_seconds)
                if done:
                    return result.result()
                ahead = running.handle.position() or 0
                if running.latest is not None:
                    text = replies.progress(running.latest)
                else:
                    text = replies.placeholder(running.job.duration, ahead)
                if text != shown and self._cosmetic.try_take():  # else: skipped, tried again next time
                    shown = text
                    try:
                        await self._edit(running, text, markup=self._cancel_markup(running.job))
                    except TelegramError as exc:
                        # Progress is a courtesy: a failed edit must not fail a transcription that goes on.
                        log.info("job %s: progress edit failed: %s", running.job.id, exc)
        finally:
            result.cancel()  # a no-op once done; ends the wait when the job is cancelled at shutdown

    async def _deliver(self, running: _Running, result: Transcription, *, cached: bool) -> None:
        """Store the transcript for the requester, then edit/send it into the chat."""
        job = running.job
        transcript_id: int | None = None
        note = ""
        if await self._keeps_history(job.user_id):
            fields = dict(
                user_id=job.user_id, chat_id=job.chat_id, message_id=job.message_id,
                file_unique_id=job.file_unique_id, forward_origin=job.forward_origin, transcription=result,
            )
            saving = (
                self.storage.complete_job_with_transcript(job.id, **fields)  # type: ignore[arg-type]
                if _persisted(job)
                else self.storage.add_transcript(**fields)  # type: ignore[arg-type]
            )
            stored = await self._store(saving, failed=-1)
            transcript_id = stored if stored and stored > 0 else None
            if stored == -1:
                note = "\n\n" + replies.STORAGE_FAILED_NOTE
        else:
            await self._finish(job, JobStatus.DONE)
        text = result.text
        if not text:
            await self._edit(running, replies.EMPTY)
            return
        buttons = None if transcript_id is None else replies.format_buttons(transcript_id)
        if len(text) > self.settings.transcript_file_chars:
            document = text.encode()
            await self._call(
                lambda: self.bot.send_document(
                    job.chat_id, document, filename=f"transcript-{job.message_id}.txt",
                    reply_parameters=_reply_to(job.message_id),
                )
            )
            await self._edit(running, replies.SENT_AS_FILE.format(words=len(text.split())) + note, markup=buttons)
            return
        parts = replies.split_text(text + note)
        await self._edit(running, parts[0], markup=buttons if len(parts) == 1 else None)
        for index, part in enumerate(parts[1:], start=2):
            await self._reply(job.chat_id, job.message_id, part, markup=buttons if index == len(parts) else None)

    # -- helpers -----------------------------------------------------------------------

    def _check_upfront(self, media: Media) -> None:
        """Refuse before downloading what the update already says is too big or too long."""
        if media.file_size and media.file_size > self.settings.max_file_mb * 2**20:
            raise FileTooBigError(media.file_size, self.settings.max_file_mb)
        if media.duration and media.duration > self.settings.max_audio_seconds:
            raise AudioTooLongError(media.duration, self.settings.max_audio_seconds)

    async def _keeps_history(self, user_id: int) -> bool:
        if not self.settings.history_enabled:
            return False
        return bool(await self._store(self.storage.get_store_history(user_id), True))

    async def _create_job(self, request: JobRequest) -> tuple[Job, bool]:
        try:
            return await self.storage.create_job(request)
        except STORAGE_ERRORS as exc:
            # Still transcribe: the user gets the text, only durability is lost for this one.
            log.error("could not persist job for chat %s message %s: %s", request.chat_id, request.message_id, exc)
            metrics.STORAGE_ERRORS.inc()
            now = time.time()
            return Job(
                id=next(self._transient_ids), status=JobStatus.QUEUED, attempts=0, error=None, transcript_id=None,
                placeholder_message_id=None, created_at=now, updated_at=now, **vars(request),
            ), True

    async def _finish(self, job: Job, status: JobStatus, error: str | None = None) -> None:
        """Mark the job's row finished, so it is not resumed (a job without a row has nothing to mark)."""
        if _persisted(job):
            await self._store(self.storage.finish_job(job.id, status=status, error=error))

    async def _store(self, operation: Awaitable[T], failed: T | None = None) -> T | None:
        """Run a storage operation; a database failure is logged and counted, never fatal."""
        try:
            return await operation
        except STORAGE_ERRORS as exc:
            log.error("storage error: %s", exc)
            metrics.STORAGE_ERRORS.inc()
            return failed

    async def _call(self, make: Callable[[], Awaitable[T]]) -> T:
        """Call Telegram, retrying network failures and flood waits a few times.

        BadRequest is a NetworkError subclass in PTB but is final, so it is not retried.
        """
        for attempt in range(TELEGRAM_ATTEMPTS):
            try:
                return await make()
            except RetryAfter as exc:
                if attempt == TELEGRAM_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(_seconds(exc.retry_after))
            except NetworkError as exc:
                if isinstance(exc, BadRequest) or attempt == TELEGRAM_ATTEMPTS - 1:
                    raise
                log.info("Telegram call failed (%s); retrying", exc)
                await asyncio.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")

    def _cancel_markup(self, job: Job) -> InlineKeyboardMarkup | None:
        if job.duration is not None and job.duration < CANCELLABLE_SECONDS:
            return None
        return InlineKeyboardMarkup([[InlineKeyboardButton("Cancel", callback_data=f"cancel:{job.id}")]])

    async def _send_action(self, chat_id: int) -> None:
        if not self._cosmetic.try_take():
            return
        try:
            await self.bot.send_chat_action(chat_id, ChatAction.TYPING)
        except TelegramError as exc:
            log.debug("chat action failed: %s", exc)

    async def _reply(
        self, chat_id: int, message_id: int, text: str, *, markup: InlineKeyboardMarkup | None = None
    ) -> Message | None:
        """Reply to a message; still sends if the user deleted it. None if the chat is gone."""
        try:
            return await self._call(
                lambda: self.bot.send_message(chat_id, text, reply_parameters=_reply_to(message_id), reply_markup=markup)
            )
        except Forbidden as exc:
            log.info("cannot write to chat %s: %s", chat_id, exc)
            return None

    async def _edit(self, running: _Running, text: str, *, markup: InlineKeyboardMarkup | None = None) -> None:
        """Edit the placeholder; if there is none (or it was deleted or is too old to edit), send a new reply."""
        job = running.job
        if job.placeholder_message_id is not None:
            try:
                await self._call(
                    lambda: self.bot.edit_message_text(
                        text, chat_id=job.chat_id, message_id=job.placeholder_message_id, reply_markup=markup
                    )
                )
                return
            except BadRequest as exc:
                message = str(exc).lower()
                if "not modified" in message:
                    return
                if not any(reason in message for reason in _NOT_EDITABLE):
                    raise
                log.info("placeholder of job %s can't be edited (%s); sending a new message", job.id, exc)
        sent = await self._reply(job.chat_id, job.message_id, text, markup=markup)
        if sent is not None:
            running.job = _with_placeholder(job, sent.message_id)
            if _persisted(job):
                await self._store(self.storage.set_job_placeholder(job.id, sent.message_id))


def _persisted(job: Job) -> bool:
    """Whether the job has a database row (see `_create_job` for the ones that do not)."""
    return job.id > 0


def _with_placeholder(job: Job, message_id: int) -> Job:
    return replace(job, placeholder_message_id=message_id)


def _reply_to(message_id: int) -> ReplyParameters:
    return ReplyParameters(message_id=message_id, allow_sending_without_reply=True)




def _seconds(value: float | timedelta) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
