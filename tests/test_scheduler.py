"""The backend-neutral scheduling policy, against a fake backend whose workers do what each test says."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from bot.asr.types import Progress, TextOptions, Transcription, TranscriptionOptions
from bot.errors import (
    ExecutorOverloadedError,
    JobCancelledError,
    JobTimeoutError,
    ModelLoadError,
    VoiceBotError,
    WorkerCrashedError,
)
from bot.execution.backend import Attempt, BackendEvents
from bot.execution.base import TranscriptionJob, TranscriptionRequest
from bot.execution.scheduler import MAX_FAILED_STARTS, Scheduler


def request(name: str) -> TranscriptionRequest:
    return TranscriptionRequest(audio=name.encode(), options=TextOptions(model="fake"))


def name_of(job_request: TranscriptionRequest) -> str:
    assert isinstance(job_request.audio, bytes)
    return job_request.audio.decode()


def transcription(text: str) -> Transcription:
    return Transcription(text=text, raw_text=text.upper(), words=(), duration=1.0, model="fake",
                         options=TranscriptionOptions(chunk_seconds=30.0, stride_seconds=2.5),
                         processing_seconds=0.0)


class FakeBackend:
    """Workers that start and run jobs only when a test says so; every call is recorded.

    Like a real backend, it reports what its own calls cause (a kill, a stop) on the
    event loop afterwards, never from inside the call.
    """

    def __init__(self, workers: int = 1, *, ready_on_start: bool = True, honours_stop: bool = True) -> None:
        self.workers = workers
        self.ready_on_start = ready_on_start
        self.honours_stop = honours_stop
        self.started: list[int] = []
        self.runs: list[tuple[int, str]] = []
        self.running: dict[int, Attempt] = {}
        self.stopped: list[int] = []
        self.killed: list[int] = []
        self.closed = False
        self._events: BackendEvents | None = None

    @property
    def events(self) -> BackendEvents:
        assert self._events is not None
        return self._events

    async def open(self, events: BackendEvents) -> None:
        self._events = events

    def start_worker(self, slot: int) -> None:
        self.started.append(slot)
        if self.ready_on_start:
            self._later(self.events.worker_ready, slot)

    def run(self, slot: int, attempt: Attempt, request: TranscriptionRequest) -> None:
        assert slot not in self.running, "a job was run on a busy worker"
        self.runs.append((slot, name_of(request)))
        self.running[slot] = attempt

    def stop(self, slot: int, attempt: Attempt) -> None:
        self.stopped.append(attempt.job_id)
        if self.honours_stop and self.running.get(slot) == attempt:
            del self.running[slot]
            self._later(self.events.job_failed, slot, attempt, JobCancelledError("cancelled between chunks"))

    def kill(self, slot: int) -> None:
        self.killed.append(slot)
        self.running.pop(slot, None)
        self._later(self.events.worker_lost, slot, "killed")

    async def close(self) -> None:
        self.closed = True

    # -- what tests make the workers do ------------------------------------------------

    def finish(self, slot: int, text: str = "done") -> None:
        self.events.job_done(slot, self.running.pop(slot), transcription(text))

    def lose(self, slot: int) -> None:
        self.running.pop(slot, None)
        self.events.worker_lost(slot, "died")

    def ran(self) -> list[str]:
        return [name for _, name in self.runs]

    @staticmethod
    def _later(callback: Callable[..., None], *args: Any) -> None:
        asyncio.get_running_loop().call_soon(callback, *args)


async def settle() -> None:
    """Let every callback already scheduled on the loop (the fake backend's reports) run."""
    for _ in range(5):
        await asyncio.sleep(0)


@pytest.fixture
async def started() -> AsyncIterator[Callable[..., Any]]:
    schedulers: list[Scheduler] = []

    async def start(backend: FakeBackend, **options: Any) -> Scheduler:
        scheduler = Scheduler(backend, **options)
        await scheduler.start()
        schedulers.append(scheduler)
        return scheduler

    yield start
    for scheduler in schedulers:
        await scheduler.shutdown()


async def test_jobs_are_taken_round_robin_across_owners(started: Callable[..., Any]) -> None:
    backend = FakeBackend()
    scheduler: Scheduler = await started(backend)
    jobs: dict[str, TranscriptionJob] = {"a0": scheduler.submit(request("a0"), owner=1)}
    for name, owner in [("a1", 1), ("a2", 1), ("a3", 1), ("b1", 2), ("c1", 3), ("b2", 2)]:
        jobs[name] = scheduler.submit(request(name), owner=owner)
    order = ["a1", "b1", "c1", "a2", "b2", "a3"]
    assert jobs["a0"].position() == 0
    assert [jobs[name].position() for name in order] == list(range(len(order)))
    assert scheduler.queue_depth == len(order)
    for _ in range(len(jobs)):
        backend.finish(0)
    assert backend.ran() == ["a0", *order]
    assert (await jobs["a3"].result()).text == "done"
    assert jobs["a0"].position() is None and scheduler.queue_depth == 0


async def test_the_queue_is_bounded(started: Callable[..., Any]) -> None:
    backend = FakeBackend()
    scheduler: Scheduler = await started(backend, queue_size=2)
    running = scheduler.submit(request("running"))
    scheduler.submit(request("q1"), owner=1)
    scheduler.submit(request("q2"), owner=2)
    with pytest.raises(ExecutorOverloadedError) as overloaded:
        scheduler.submit(request("refused"), owner=3)
    assert overloaded.value.retry_after >= 5
    assert scheduler.queue_depth == 2
    backend.finish(0)
    await running.result()
    scheduler.submit(request("accepted"), owner=3)
    assert scheduler.queue_depth == 2
    assert "refused" not in backend.ran()


async def test_a_job_past_its_timeout_has_its_worker_killed_and_replaced(started: Callable[..., Any]) -> None:
    restarts: list[int] = []
    backend = FakeBackend()
    scheduler: Scheduler = await started(backend, job_timeout=0.05, on_worker_restart=lambda: restarts.append(1))
    with pytest.raises(JobTimeoutError):
        await scheduler.transcribe(request("slow"))
    assert backend.killed == [0] and backend.started == [0, 0] and restarts == [1]
    assert backend.ran() == ["slow"], "a timed-out job is not retried"
    await settle()
    scheduler.job_timeout = 60
    job = scheduler.submit(request("next"))
    backend.finish(0)
    assert (await job.result()).text == "done"


async def test_a_lost_worker_s_job_is_retried_once_first_in_line(started: Callable[..., Any]) -> None:
    backend = FakeBackend()
    scheduler: Scheduler = await started(backend)
    job = scheduler.submit(request("a"), owner=1)
    later = scheduler.submit(request("b"), owner=2)
    backend.lose(0)
    assert job.position() == 0 and later.position() == 1
    await settle()  # the worker restarts and takes the retry before the job queued behind it
    assert backend.ran() == ["a", "a"]
    backend.finish(0, "second try")
    assert (await job.result()).text == "second try"
    backend.finish(0)
    await later.result()


async def test_a_job_whose_worker_is_lost_twice_fails_and_the_next_one_runs(started: Callable[..., Any]) -> None:
    backend = FakeBackend()
    scheduler: Scheduler = await started(backend)
    job = scheduler.submit(request("doomed"))
    backend.lose(0)
    await settle()
    backend.lose(0)
    with pytest.raises(WorkerCrashedError):
        await job.result()
    await settle()
    assert backend.ran() == ["doomed", "doomed"] and backend.started == [0, 0, 0]
    after = scheduler.submit(request("after"))
    backend.finish(0)
    await after.result()


async def test_with_two_workers_a_retry_goes_to_the_free_one_at_once(started: Callable[..., Any]) -> None:
    backend = FakeBackend(workers=2)
    scheduler: Scheduler = await started(backend)
    first = scheduler.submit(request("first"))
    backend.lose(0)
    assert backend.runs == [(0, "first"), (1, "first")]
    backend.finish(1)
    await first.result()


async def test_cancel_while_queued_never_runs_the_job(started: Callable[..., Any]) -> None:
    backend = FakeBackend()
    scheduler: Scheduler = await started(backend)
    scheduler.submit(request("running"))
    queued = scheduler.submit(request("queued"))
    queued.cancel()
    with pytest.raises(JobCancelledError):
        await queued.result()
    assert scheduler.queue_depth == 0 and queued.position() is None
    backend.finish(0)
    await settle()
    assert backend.ran() == ["running"] and backend.stopped == []


async def test_cancel_during_a_job_stops_it_between_chunks(started: Callable[..., Any]) -> None:
    backend = FakeBackend()
    scheduler: Scheduler = await started(backend)
    job = scheduler.submit(request("running"))
    job.cancel()
    with pytest.raises(JobCancelledError):
        await job.result()
    assert backend.stopped == [job.id] and backend.killed == []
    after = scheduler.submit(request("after"))
    backend.finish(0)
    await after.result()


async def test_cancel_during_a_job_kills_a_worker_that_does_not_stop(started: Callable[..., Any]) -> None:
    backend = FakeBackend(honours_stop=False)
    scheduler: Scheduler = await started(backend, cancel_grace=0.05)
    job = scheduler.submit(request("stuck"))
    job.cancel()
    with pytest.raises(JobCancelledError):
        await job.result()
    assert backend.stopped == [job.id] and backend.killed == [0]
    await settle()
    assert backend.started == [0, 0] and backend.ran() == ["stuck"], "a cancelled job is not retried"


async def test_shutdown_grace_lets_running_jobs_finish_and_dispatches_nothing_new() -> None:
    backend = FakeBackend(workers=2, ready_on_start=False)
    scheduler = Scheduler(backend)
    starting = asyncio.create_task(scheduler.start())
    await settle()
    backend.events.worker_ready(0)
    running = scheduler.submit(request("running"))
    queued = scheduler.submit(request("queued"))
    closing = asyncio.create_task(scheduler.shutdown(grace=30))
    await settle()
    with pytest.raises(JobCancelledError):
        scheduler.submit(request("too late"))
    backend.events.worker_ready(1)  # a worker coming up during the grace period
    backend.finish(0, "finished in time")  # and one coming free
    assert (await running.result()).text == "finished in time"
    await settle()
    assert backend.ran() == ["running"], "a queued job started during the shutdown grace period"
    await asyncio.wait_for(closing, 5)  # no job left running: the grace period ends early
    with pytest.raises(JobCancelledError):
        await queued.result()
    assert backend.closed
    assert scheduler.ready_workers == 0 and scheduler.queue_depth == 0
    await starting  # both workers came up, so start() returned


async def test_shutdown_after_the_grace_cancels_running_jobs(started: Callable[..., Any]) -> None:
    backend = FakeBackend()
    scheduler: Scheduler = await started(backend)
    job = scheduler.submit(request("long"))
    await scheduler.shutdown(grace=0.05)
    with pytest.raises(JobCancelledError):
        await job.result()
    assert backend.stopped == [job.id] and backend.closed


async def test_progress_reaches_the_job_s_callback_and_stale_reports_are_dropped(started: Callable[..., Any]) -> None:
    backend = FakeBackend()
    scheduler: Scheduler = await started(backend)
    seen: list[Progress] = []
    job = scheduler.submit(request("a"), on_progress=seen.append)
    backend.events.job_progress(0, Attempt(job.id, 1), Progress(1.0, 4.0, "so far"))
    backend.events.job_progress(0, Attempt(job.id + 1, 1), Progress(2.0, 4.0, "someone else's"))
    backend.events.job_done(0, Attempt(job.id + 1, 1), transcription("someone else's"))
    assert seen == [Progress(1.0, 4.0, "so far")] and job.position() == 0
    backend.finish(0)
    assert (await job.result()).text == "done"


async def test_workers_that_keep_dying_at_start_up_break_the_scheduler() -> None:
    class DyingBackend(FakeBackend):
        def start_worker(self, slot: int) -> None:
            self.started.append(slot)
            self._later(self.events.worker_lost, slot, "died at start-up")

    backend = DyingBackend()
    scheduler = Scheduler(backend)
    with pytest.raises(WorkerCrashedError):
        await asyncio.wait_for(scheduler.start(), 5)
    assert len(backend.started) == MAX_FAILED_STARTS
    with pytest.raises(VoiceBotError):
        scheduler.submit(request("a"))
    await scheduler.shutdown()


async def test_a_worker_that_cannot_load_its_models_fails_the_start_with_that_error() -> None:
    class UnloadableBackend(FakeBackend):
        def start_worker(self, slot: int) -> None:
            self.started.append(slot)
            self._later(self.events.backend_failed, ModelLoadError("ASR_MODEL='x': no such model"))
            self._later(self.events.worker_lost, slot, "asr-worker-0 exited with code 0")

    backend = UnloadableBackend()
    scheduler = Scheduler(backend)
    with pytest.raises(ModelLoadError, match="ASR_MODEL='x'"):
        await asyncio.wait_for(scheduler.start(), 5)
    await settle()
    assert backend.started == [0], "a backend that cannot load is not started again"
    with pytest.raises(ModelLoadError):
        scheduler.submit(request("a"))
    await scheduler.shutdown()


@pytest.mark.parametrize(("workers", "late_slot"), [(1, 0), (2, 1), (2, 0)],
                         ids=["one worker, retried on the same slot", "from the retry's slot", "from the lost slot"])
async def test_a_lost_attempt_s_late_reports_are_ignored_and_the_retry_answers_once(
    started: Callable[..., Any], caplog: pytest.LogCaptureFixture, workers: int, late_slot: int,
) -> None:
    backend = FakeBackend(workers=workers)
    scheduler: Scheduler = await started(backend)
    seen: list[Progress] = []
    job = scheduler.submit(request("voice"), on_progress=seen.append)
    first = backend.running[0]
    backend.lose(0)  # the first attempt's stream broke
    await settle()  # one worker: restarted, it runs the retry; two: the retry ran on slot 1 at once
    retry_slot = workers - 1
    retry = backend.running[retry_slot]
    assert (first, retry) == (Attempt(job.id, 1), Attempt(job.id, 2))
    assert backend.runs == [(0, "voice"), (retry_slot, "voice")]

    with caplog.at_level(logging.INFO, logger="bot.execution.scheduler"):
        backend.events.job_progress(late_slot, first, Progress(3.0, 4.0, "late progress"))
        backend.events.job_done(late_slot, first, transcription("late duplicate"))
        backend.events.job_failed(late_slot, first, WorkerCrashedError("late failure"))
    ignored = [record for record in caplog.records if record.getMessage().startswith("ignoring")]
    assert [record.levelno for record in ignored] == [logging.INFO] * 3
    assert all(f"of job {job.id} attempt 1 from worker {late_slot}" in record.getMessage() for record in ignored)
    assert seen == [] and job.position() == 0  # still running: the retry is the attempt that counts

    backend.events.job_progress(retry_slot, retry, Progress(1.0, 4.0, "the retry's progress"))
    backend.finish(retry_slot, "the retry")
    assert (await job.result()).text == "the retry"
    assert seen == [Progress(1.0, 4.0, "the retry's progress")]
    backend.events.job_done(retry_slot, first, transcription("after the end"))
    backend.events.job_done(retry_slot, retry, transcription("the retry, twice"))
    assert (await job.result()).text == "the retry"
    after = scheduler.submit(request("after"))
    await settle()
    assert backend.ran() == ["voice", "voice", "after"]
    backend.finish(backend.runs[-1][0], "next")
    assert (await after.result()).text == "next"
