"""The scheduling policy, the same for every backend: fair order, admission, timeouts, retries, cancelling.

Queued jobs are taken round-robin by owner (user), so one user sending fifty files does not
delay another user's single voice note. The queue is bounded: past `queue_size` waiting
jobs, `submit` raises `ExecutorOverloadedError` with a retry hint. A job running past
`job_timeout` has its worker killed. A job whose worker is lost (killed, out of memory) is
retried once, first in its owner's line; lost a second time, it fails with `WorkerCrashedError`.
Each run of a job is an `Attempt` and the backend's reports name theirs: a report that is
not about the job's current attempt (a lost first try's result arriving after the retry
began) is ignored, so a job is settled once, by its current attempt. A cancelled job leaves
the queue, or is asked to stop between chunks and has its worker killed if it has not within
`cancel_grace` seconds. Workers that keep dying before they ever become ready mean the
backend is broken: every job then fails at once instead of waiting for a worker that never
comes.

`Scheduler` is the `Transcriber` the bot holds; an `ExecutionBackend` only runs attempts on
its workers and reports back. Torch-free.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.asr.types import Progress, Transcription
from bot.errors import (
    ExecutorOverloadedError,
    JobCancelledError,
    JobTimeoutError,
    VoiceBotError,
    WorkerCrashedError,
)
from bot.execution.backend import Attempt, ExecutionBackend
from bot.execution.base import ProgressCallback, TranscriptionRequest
from bot.execution.fair_queue import FairQueue

log = logging.getLogger(__name__)

#: How long a running job may take to notice a cancel before its worker is killed.
CANCEL_GRACE_SECONDS = 5.0
#: Workers that die this many times in a row before becoming ready mean the backend is broken.
MAX_FAILED_STARTS = 3
#: A lost worker's job is tried this many times in all.
MAX_ATTEMPTS = 2
#: How often `shutdown` looks whether the running jobs have finished within their grace.
_GRACE_POLL_SECONDS = 0.05


@dataclass(eq=False)
class _Job:
    """A job as the scheduler tracks it; `_JobHandle` is what callers hold."""

    id: int
    owner: int
    request: TranscriptionRequest
    future: asyncio.Future[Transcription]
    on_progress: ProgressCallback | None
    attempts: int = 0
    fail_with: VoiceBotError | None = None  # why the scheduler killed its worker (timeout, cancel)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    @property
    def attempt(self) -> Attempt:
        """The latest attempt started (the current one while the job runs)."""
        return Attempt(self.id, self.attempts)

    def stop_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


@dataclass(eq=False)
class _Slot:
    """One backend worker as the scheduler sees it: ready or not, and the job it runs."""

    index: int
    ready: bool = False
    job: _Job | None = None


class _JobHandle:
    def __init__(self, scheduler: Scheduler, job: _Job) -> None:
        self._scheduler = scheduler
        self._job = job

    @property
    def id(self) -> int:
        return self._job.id

    def position(self) -> int | None:
        """Jobs queued ahead of this one (0 = next or running); None once finished."""
        return self._scheduler._position(self._job)

    def cancel(self) -> None:
        self._scheduler._cancel(self._job)

    async def result(self) -> Transcription:
        return await asyncio.shield(self._job.future)


class Scheduler:
    """A `Transcriber` that runs jobs on an `ExecutionBackend`'s workers (see the module docstring)."""

    def __init__(
        self,
        backend: ExecutionBackend,
        *,
        queue_size: int = 200,
        job_timeout: float = 900.0,
        cancel_grace: float = CANCEL_GRACE_SECONDS,
        on_worker_restart: Callable[[], None] | None = None,
    ) -> None:
        self.backend = backend
        self.queue_size = queue_size
        self.job_timeout = job_timeout
        self.cancel_grace = cancel_grace
        self._on_worker_restart = on_worker_restart
        self._slots: list[_Slot] = []
        self._queue: FairQueue[_Job] = FairQueue()
        self._last_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed_starts = 0
        self._closing = False
        self._all_ready = asyncio.Event()
        self._broken: VoiceBotError | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the backend, start every worker and wait until each one is ready."""
        self._loop = asyncio.get_running_loop()
        await self.backend.open(self)
        self._slots = [_Slot(index) for index in range(self.backend.workers)]
        for slot in self._slots:
            self.backend.start_worker(slot.index)
        await self._all_ready.wait()
        if self._broken is not None:
            raise self._broken

    async def shutdown(self, *, grace: float = 0.0) -> None:
        """Stop taking jobs, give running ones up to `grace` seconds, then stop the workers.

        Nothing queued starts during the grace period, however many workers come free:
        jobs still queued or running fail with `JobCancelledError`, and the bot, which
        has them persisted, resumes them on its next start.
        """
        self._closing = True
        deadline = time.monotonic() + grace
        while any(slot.job for slot in self._slots) and time.monotonic() < deadline:
            await asyncio.sleep(_GRACE_POLL_SECONDS)
        for job in self._queue.drain():
            self._settle(job, error=JobCancelledError("shutting down"))
        for slot in self._slots:
            if slot.job is not None:
                self.backend.stop(slot.index, slot.job.attempt)
                self._settle(slot.job, error=JobCancelledError("shutting down"))
                slot.job = None
            slot.ready = False
        await self.backend.close()
        self._slots.clear()

    # -- the Transcriber protocol ------------------------------------------------------

    @property
    def ready_workers(self) -> int:
        return sum(1 for slot in self._slots if slot.ready)

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def language_detectors(self) -> frozenset[str]:
        return self.backend.language_detectors

    def submit(
        self, request: TranscriptionRequest, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> _JobHandle:
        """Queue a job; raises `ExecutorOverloadedError` when the queue is full."""
        if self._loop is None or self._closing:
            raise JobCancelledError("the transcriber is not running")
        if self._broken is not None:
            raise self._broken
        if len(self._queue) >= self.queue_size:
            raise ExecutorOverloadedError(retry_after=self._estimated_wait())
        self._last_id += 1
        job = _Job(self._last_id, owner, request, self._loop.create_future(), on_progress)
        # Whoever awaits the handle gets the exception; a job nobody awaits any more
        # (its chat task is gone) must not log "exception was never retrieved".
        job.future.add_done_callback(lambda future: future.cancelled() or future.exception())
        self._queue.push(job)
        self._dispatch()
        return _JobHandle(self, job)

    async def transcribe(
        self, request: TranscriptionRequest, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> Transcription:
        return await self.submit(request, owner=owner, on_progress=on_progress).result()

    # -- events from the backend (`BackendEvents`) --------------------------------------

    def worker_ready(self, slot: int) -> None:
        current = self._slot(slot)
        if current is None:
            return
        current.ready = True
        self._failed_starts = 0
        if all(s.ready for s in self._slots):
            self._all_ready.set()
        self._dispatch()

    def job_progress(self, slot: int, attempt: Attempt, progress: Progress) -> None:
        job = self._job_on(slot, attempt, "progress")
        if job is not None and job.on_progress is not None:
            job.on_progress(progress)

    def job_done(self, slot: int, attempt: Attempt, result: Transcription) -> None:
        job = self._job_on(slot, attempt, "a result")
        if job is not None:
            self._slots[slot].job = None
            self._settle(job, result=result)
            self._dispatch()

    def job_failed(self, slot: int, attempt: Attempt, error: VoiceBotError) -> None:
        job = self._job_on(slot, attempt, f"a failure ({error})")
        if job is not None:
            self._slots[slot].job = None
            self._settle(job, error=error)
            self._dispatch()

    def backend_failed(self, error: VoiceBotError) -> None:
        if self._closing or self._broken is not None:
            return
        log.error("%s", error)
        self._broken_by(error)

    def worker_lost(self, slot: int, reason: str) -> None:
        current = self._slot(slot)
        if current is None:
            return
        job, current.job = current.job, None
        if not current.ready:
            self._failed_starts += 1
        current.ready = False
        if self._closing:
            if job is not None:
                self._settle(job, error=JobCancelledError("shutting down"))
            return
        if self._broken is not None:
            if job is not None:
                self._settle(job, error=self._broken)
            return
        log.error("%s%s", reason, f" during job {job.id}" if job else "")
        if job is not None:
            self._after_loss(job)
        if self._failed_starts >= MAX_FAILED_STARTS:
            self._broken_by(WorkerCrashedError("workers keep dying at start-up"))
            return
        self.backend.start_worker(slot)
        if self._on_worker_restart is not None:
            self._on_worker_restart()
        self._dispatch()  # a retried job need not wait for the restarted worker if another is free

    def _broken_by(self, error: VoiceBotError) -> None:
        """The backend cannot run jobs: fail the queued ones, and every later one at once."""
        self._broken = error
        for queued in self._queue.drain():
            self._settle(queued, error=error)
        self._all_ready.set()

    # -- policy ------------------------------------------------------------------------

    def _dispatch(self) -> None:
        """Start queued jobs on idle ready workers; nothing new starts once shutting down."""
        if self._closing:
            return
        for slot in self._slots:
            if not slot.ready or slot.job is not None:
                continue
            job = self._queue.pop()
            if job is None:
                return
            self._run_on(slot, job)

    def _run_on(self, slot: _Slot, job: _Job) -> None:
        assert self._loop is not None
        slot.job = job
        job.attempts += 1
        job.timers.append(self._loop.call_later(
            self.job_timeout, self._kill_for, slot, job, JobTimeoutError(f"job ran over {self.job_timeout:.0f}s")))
        self.backend.run(slot.index, job.attempt, job.request)

    def _after_loss(self, job: _Job) -> None:
        """A job whose worker was lost: the reason it was killed, a retry, or the end of its tries."""
        if job.fail_with is not None:
            self._settle(job, error=job.fail_with)
        elif job.attempts < MAX_ATTEMPTS:
            job.stop_timers()
            self._queue.push(job, front=True)
        else:
            self._settle(job, error=WorkerCrashedError(f"worker lost twice on job {job.id}"))

    def _cancel(self, job: _Job) -> None:
        if job.future.done():
            return
        if self._queue.remove(job):
            self._settle(job, error=JobCancelledError("cancelled while queued"))
            return
        for slot in self._slots:
            if slot.job is job and self._loop is not None:
                self.backend.stop(slot.index, job.attempt)
                job.timers.append(self._loop.call_later(
                    self.cancel_grace, self._kill_for, slot, job, JobCancelledError("cancelled")))

    def _kill_for(self, slot: _Slot, job: _Job, reason: VoiceBotError) -> None:
        """Kill a worker that is stuck on `job`; `worker_lost` then settles the job with `reason`."""
        if slot.job is job:
            log.warning("killing worker %d: %s", slot.index, reason)
            job.fail_with = reason
            self.backend.kill(slot.index)

    def _settle(self, job: _Job, *, result: Transcription | None = None, error: BaseException | None = None) -> None:
        job.stop_timers()
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            assert result is not None
            job.future.set_result(result)

    def _estimated_wait(self) -> float:
        """A rough 'try again in N s' from queue length: ~10 s of work per queued job per worker."""
        return max(5.0, 10.0 * len(self._queue) / max(1, len(self._slots)))

    def _position(self, job: _Job) -> int | None:
        if job.future.done():
            return None
        if any(slot.job is job for slot in self._slots):
            return 0
        for index, queued in enumerate(self._queue.in_order()):
            if queued is job:
                return index
        return None

    def _slot(self, index: int) -> _Slot | None:
        """The slot an event is about; None after shutdown, when events are stale."""
        return self._slots[index] if 0 <= index < len(self._slots) else None

    def _job_on(self, slot: int, attempt: Attempt, what: str) -> _Job | None:
        """The job `slot` runs, if `attempt` is its current one; None for a stale report (logged, then ignored).

        A report is stale when its attempt was lost and retried, settled (timed out, cancelled),
        or is not the one this slot runs now: it must not settle the job a second time.
        """
        current = self._slot(slot)
        if current is None:
            return None
        job = current.job
        if job is None or job.attempt != attempt:
            runs = f"runs {job.attempt}" if job is not None else "is idle"
            log.info("ignoring %s of %s from worker %d, which %s", what, attempt, slot, runs)
            return None
        return job
