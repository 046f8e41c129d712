"""From an accepted file to the transcript in the chat: the life of one job.

A job is written to the database before any work starts, so a crash or restart never
loses a voice note: `resume` picks up what was queued or running. The steps are: accept
(refuse early what is too big, too long or over the user's limits; record the job; show a
placeholder), claim (a job cancelled or forgotten while it waited ends here, before
anything is downloaded), answer from the cache when the same content was transcribed
with the same text options and punctuation model (`CacheKey`), else download into a
private temporary directory and hand the file to the transcriber, show progress in the
placeholder, and finally store the transcript and edit the placeholder into it
(`bot.telegram.delivery`). Every failure ends as a short, specific message in the chat
and one log line; a database failure never keeps a transcript from the user.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from typing import Literal, TypeVar

from telegram import Bot, InlineKeyboardMarkup, Message
from telegram.error import TelegramError

from bot.asr.routing import AUTO, UnknownLanguageError, parse_choice, route
from bot.asr.types import Progress, TextOptions, Transcription
from bot.errors import (
    AudioTooLongError,
    ExecutorOverloadedError,
    JobCancelledError,
    JobTimeoutError,
    RateLimitedError,
    VoiceBotError,
)
from bot.execution.base import Transcriber, TranscriptionJob, TranscriptionRequest
from bot.ops import metrics
from bot.settings import Settings
from bot.storage import CacheKey, Job, JobRequest, JobStatus, Storage, StorageError
from bot.telegram import render, replies
from bot.telegram.attachments import Media, describe_origin
from bot.telegram.delivery import Delivery
from bot.telegram.download import check_size, downloaded
from bot.telegram.limits import TokenBucket, UserLimiter

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Jobs that keep failing across restarts (a file that kills the process) are given up.
MAX_ATTEMPTS = 3
#: Jobs at least this long get a Cancel button on their placeholder.
CANCELLABLE_SECONDS = 30.0
#: Optional messages (progress edits, chat actions) per second, all chats together: a third of
#: the 30 a second Telegram allows a bot (PTB's AIORateLimiter holds every call to that), so a
#: long queue's position updates can't delay placeholders and transcripts.
COSMETIC_CALLS_PER_SECOND = 10.0


@dataclass(eq=False)
class _Running:
    """A job in this process: its row, when it arrived, and its transcriber handle."""

    job: Job
    started: float
    handle: TranscriptionJob | None = None
    cancel_requested: bool = False
    #: The transcript is in (from the cache or the transcriber): too late to cancel.
    answered: bool = False
    latest: Progress | None = None
    #: What the job asks for (its chat's language and model), set when it starts to run.
    options: TextOptions | None = None


class TranscriptionPipeline:
    """Accepts files, runs their jobs, and answers in the chat."""

    def __init__(self, *, bot: Bot, settings: Settings, storage: Storage, transcriber: Transcriber) -> None:
        self.delivery = Delivery(bot)
        self.settings = settings
        self.storage = storage
        self.transcriber = transcriber
        #: The models by language (ASR_MODELS). What a job asks for follows its chat's /language
        #: (`options_for`); the cache is keyed on it too, so a new model or language misses it.
        self.models = settings.model_table()
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
            await self.delivery.reply(chat.id, message.message_id, replies.failure(exc))
            return
        wait = self.limiter.try_acquire(user_id)
        if wait is not None:
            error = RateLimitedError(wait)
            log.info("rate limited", extra={"user_id": user_id, "chat_id": chat.id, "outcome": "refused"})
            metrics.record_job("refused", latency_seconds=time.monotonic() - started)
            await self.delivery.reply(chat.id, message.message_id, replies.failure(error))
            return
        await self._store(self.storage.preferences.upsert_chat(chat.id, chat_type=chat.type, title=chat.title))
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
                await self.delivery.reply(chat.id, message.message_id, replies.ALREADY)
            return
        # Registered before the placeholder shows its Cancel button, so a press finds the job.
        running = self._register(job, started)
        await self._chat_action(chat.id)
        ahead = self.transcriber.queue_depth
        try:
            placeholder = await self.delivery.reply(
                chat.id, message.message_id, replies.placeholder(media.duration, ahead), markup=self._cancel_markup(job)
            )
        except TelegramError as exc:
            # The job is recorded and its slot taken: run it anyway, the result is sent as a new message.
            log.warning("job %s: could not send the placeholder: %s", job.id, exc)
            placeholder = None
        if placeholder is not None:
            await self._set_placeholder(running, placeholder.message_id)
        self._spawn(running)

    async def options_for(self, chat_id: int) -> TextOptions:
        """What a job of the chat asks for: the model and language its /language routes to (`bot.asr.routing`).

        A choice that no longer parses (a language dropped from the list) counts as auto, and
        a database failure too: the audio is still transcribed.
        """
        stored = await self._store(self.storage.preferences.language(chat_id))
        try:
            choice = parse_choice(stored)
        except UnknownLanguageError as exc:
            log.warning("chat %s: stored language %r: %s; detecting instead", chat_id, stored, exc)
            choice = AUTO
        routed = route(choice, self.models)
        return TextOptions(model=routed.model, language=routed.language, languages=routed.languages)

    async def auto_transcribe(self, chat_id: int) -> bool:
        """Whether a group wants every voice note transcribed (the default)."""
        return bool(await self._store(self.storage.preferences.auto_transcribe(chat_id), True))

    def resume(self, jobs: list[Job]) -> None:
        """Restart jobs left queued or running by a previous process."""
        for job in jobs:
            self.limiter.try_acquire(job.user_id)
            self._spawn(self._register(job, time.monotonic()))

    async def cancel(self, job_id: int, *, user_id: int) -> bool | None:
        """Cancel a job of this process; None if there is none (any more) or its transcript is
        already in, False if it is not the requester's.

        A job the transcriber has is stopped there. One that has not reached it yet is
        marked cancelled in its row at once, so it never starts: not here (it is claimed
        before anything is downloaded), and not after a restart.
        """
        running = self._running.get(job_id)
        if running is None or running.answered:
            return None
        if running.job.user_id != user_id:
            return False
        running.cancel_requested = True
        if running.handle is not None:
            running.handle.cancel()
        else:
            await self._finish(running.job, JobStatus.CANCELLED, "cancelled before it started")
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
        outcome: metrics.Outcome | Literal["interrupted"] = "failed"
        result: Transcription | None = None
        try:
            if job.attempts >= MAX_ATTEMPTS:
                raise VoiceBotError(f"gave up after {job.attempts} attempts")
            await self._claim(running)
            running.options = await self.options_for(job.chat_id)
            cached = self.storage.transcripts.find_cached(job.file_unique_id, self._cache_key(running))
            result = await self._store(cached)
            if result is not None:
                metrics.CACHE_HITS.inc()
                outcome = "cached"
            else:
                result = await self._transcribe(running)
                outcome = "done"
            running.answered = True
            await self._deliver(running, result)
        except JobCancelledError as exc:
            if self._closing:
                outcome = "interrupted"
                log.info("job %s interrupted by shutdown; the next start resumes it", job.id)
                return  # the row stays queued/running
            outcome = "cancelled"
            await self._finish(running.job, JobStatus.CANCELLED, str(exc))
            await self._tell(running, replies.failure(exc))
        except asyncio.CancelledError:
            # Only `drain` cancels job tasks, at shutdown: the row stays queued/running.
            outcome = "interrupted"
            log.info("job %s interrupted by shutdown; the next start resumes it", job.id)
            raise
        except ExecutorOverloadedError as exc:
            # Every worker busy and the queue full: a polite "try later", not a failure.
            outcome = "refused"
            log.info("job %s refused: %s", job.id, exc, extra={"job_id": job.id, "user_id": job.user_id})
            await self._fail(running, str(exc), replies.failure(exc))
        except VoiceBotError as exc:
            outcome = "timeout" if isinstance(exc, JobTimeoutError) else "failed"
            log.warning("job %s failed: %s", job.id, exc)
            await self._fail(running, str(exc), replies.failure(exc))
        except TelegramError as exc:
            outcome = "failed"
            log.warning("job %s: Telegram error: %s", job.id, exc)
            await self._fail(running, str(exc), replies.TELEGRAM_FAILED)
        except Exception as exc:  # a bug must not leave the user without an answer
            outcome = "failed"
            log.exception("job %s crashed", job.id)
            await self._fail(running, repr(exc), replies.failure(exc))
        finally:
            self._running.pop(job.id, None)
            self.limiter.release(job.user_id)
            if outcome != "interrupted":
                self._record(job, outcome, result, started)

    def _record(self, job: Job, outcome: metrics.Outcome, result: Transcription | None, started: float) -> None:
        """One metrics sample and one log line per finished job."""
        latency = time.monotonic() - started
        transcribed = result is not None and outcome == "done"
        metrics.record_job(
            outcome,
            latency_seconds=latency,
            audio_seconds=result.duration if result is not None and transcribed else 0.0,
            processing_seconds=result.processing_seconds if result is not None and transcribed else 0.0,
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

    async def _claim(self, running: _Running) -> None:
        """Mark the job running (one more attempt), or end it with JobCancelledError when it must
        not run: cancelled while it waited, or its row gone (the user's /forget) or finished."""
        if running.cancel_requested:
            raise JobCancelledError("cancelled before it started")
        if not _persisted(running.job):
            return
        # A database failure must not stop the job: then it runs on its row as loaded.
        claimed = await self._store(self.storage.jobs.mark_running(running.job.id), running.job)
        if claimed is None:
            raise JobCancelledError("cancelled, forgotten or finished before it started")

    async def _transcribe(self, running: _Running) -> Transcription:
        """Download the file and run the model on it, showing progress until the result is in."""
        job = running.job
        async with downloaded(
            self.delivery, job.file_id, limit_mb=self.settings.max_file_mb, name=f"job-{job.id}.media"
        ) as path:
            if running.cancel_requested:
                raise JobCancelledError("cancelled before it started")
            running.handle = self.transcriber.submit(
                TranscriptionRequest(audio=path, options=_options(running)),
                owner=job.user_id,
                on_progress=lambda update: setattr(running, "latest", update),
            )
            return await self._await_with_progress(running)

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
                        await self._show(running, text, markup=self._cancel_markup(running.job))
                    except TelegramError as exc:
                        # Progress is a courtesy: a failed edit must not fail a transcription that goes on.
                        log.info("job %s: progress edit failed: %s", running.job.id, exc)
        finally:
            result.cancel()  # a no-op once done; ends the wait when the job is cancelled at shutdown

    async def _deliver(self, running: _Running, result: Transcription) -> None:
        """Store the transcript for the requester, then edit/send it into the chat."""
        job = running.job
        transcript_id: int | None = None
        note = ""
        if await self._keeps_history(job.user_id):
            try:
                transcript_id = await self._save(job, result, self._cache_key(running))
            except StorageError as exc:
                self._storage_failed(exc)
                note = "\n\n" + replies.STORAGE_FAILED_NOTE
        else:
            await self._finish(job, JobStatus.DONE)
        text = result.text
        if not text:
            await self._show(running, replies.EMPTY)
            return
        buttons = None if transcript_id is None else render.format_keyboard(transcript_id)
        if len(text) > self.settings.transcript_file_chars:
            await self.delivery.send_file(
                job.chat_id, job.message_id, text.encode(), filename=f"transcript-{job.message_id}.txt"
            )
            await self._show(running, replies.sent_as_file(len(text.split())) + note, markup=buttons)
            return
        await self._show(running, text + note, markup=buttons)

    async def _save(self, job: Job, result: Transcription, key: CacheKey) -> int | None:
        """Store the transcript (and finish the job's row, in the same transaction); None when the
        row was gone or finished meanwhile, so nothing was stored."""
        if _persisted(job):
            return await self.storage.jobs.complete(job.id, result, key=key)
        return await self.storage.transcripts.add(
            user_id=job.user_id, chat_id=job.chat_id, message_id=job.message_id, file_unique_id=job.file_unique_id,
            forward_origin=job.forward_origin, transcription=result, key=key,
        )

    async def _fail(self, running: _Running, error: str, user_message: str) -> None:
        """Record the failure and tell the user."""
        await self._finish(running.job, JobStatus.FAILED, error)
        await self._tell(running, user_message)

    async def _tell(self, running: _Running, text: str) -> None:
        """Show how a job ended; a chat that can't be reached is only logged."""
        try:
            await self._show(running, text)
        except TelegramError as exc:
            log.warning("could not tell chat %s about job %s: %s", running.job.chat_id, running.job.id, exc)

    async def _show(self, running: _Running, text: str, *, markup: InlineKeyboardMarkup | None = None) -> None:
        """Show `text` in the job's placeholder, or in new messages that then count as its placeholder."""
        job = running.job
        shown = await self.delivery.show(
            job.chat_id, job.message_id, text, message_id=job.placeholder_message_id, markup=markup
        )
        if shown is not None and shown != job.placeholder_message_id:
            await self._set_placeholder(running, shown)

    async def _set_placeholder(self, running: _Running, message_id: int) -> None:
        """Remember the message that shows the job (a resumed job edits it instead of posting anew)."""
        running.job = replace(running.job, placeholder_message_id=message_id)
        if _persisted(running.job):
            await self._store(self.storage.jobs.set_placeholder(running.job.id, message_id))

    # -- helpers -----------------------------------------------------------------------

    def _check_upfront(self, media: Media) -> None:
        """Refuse before downloading what the update already says is too big or too long."""
        check_size(media.file_size, self.settings.max_file_mb)
        if media.duration and media.duration > self.settings.max_audio_seconds:
            raise AudioTooLongError(media.duration, self.settings.max_audio_seconds)

    async def _keeps_history(self, user_id: int) -> bool:
        if not self.settings.history_enabled:
            return False
        return bool(await self._store(self.storage.preferences.store_history(user_id), True))

    async def _create_job(self, request: JobRequest) -> tuple[Job, bool]:
        try:
            return await self.storage.jobs.create(request)
        except StorageError as exc:
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
            await self._store(self.storage.jobs.finish(job.id, status=status, error=error))

    async def _store(self, operation: Awaitable[T], failed: T | None = None) -> T | None:
        """Run a storage operation; a database failure is logged and counted, never fatal."""
        try:
            return await operation
        except StorageError as exc:
            self._storage_failed(exc)
            return failed

    @staticmethod
    def _storage_failed(exc: StorageError) -> None:
        log.error("storage error: %s", exc)
        metrics.STORAGE_ERRORS.inc()

    def _cache_key(self, running: _Running) -> CacheKey:
        """What the job's text is made with: its text options and this bot's punctuation model."""
        return CacheKey(_options(running), punctuation_model=self.settings.punctuation_model)

    def _cancel_markup(self, job: Job) -> InlineKeyboardMarkup | None:
        if job.duration is not None and job.duration < CANCELLABLE_SECONDS:
            return None
        return render.cancel_keyboard(job.id)

    async def _chat_action(self, chat_id: int) -> None:
        if self._cosmetic.try_take():
            await self.delivery.chat_action(chat_id)


def _options(running: _Running) -> TextOptions:
    """The job's options, set in `_run` before it is answered."""
    assert running.options is not None
    return running.options


def _persisted(job: Job) -> bool:
    """Whether the job has a database row (see `_create_job` for the ones that do not)."""
    return job.id > 0
