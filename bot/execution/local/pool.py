"""The model executor: transcription jobs run in a pool of worker processes.

The bot only sees the narrow `Transcriber` protocol (submit, await, cancel, position,
shut down), so a distributed backend could replace the pool without touching the bot.

`ProcessPoolTranscriber` loads the model once in the parent, moves its weights to shared
memory, and hands them to each worker, so N workers cost one copy of the weights.
Workers are forked from a multiprocessing forkserver (`bot.execution.local.forkserver`) that imported
torch, transformers and the engine once, so they share those pages instead of each
importing its own copy. Each worker owns one pipe to the parent; a reader thread per
worker turns its messages into calls on the event loop.

Scheduling is fair across owners (users): queued jobs are taken round-robin by owner,
so one user sending fifty files does not delay another user's single voice note.
A worker that dies mid-job (killed, out of memory) is replaced and the job retried once;
a job past its timeout is killed; a cancelled job stops between chunks.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from bot.asr.ctc.loading import SharedModel, load_ctc_model
from bot.asr.types import Progress, Transcription
from bot.audio.decode import AudioDecoder
from bot.execution.local.forkserver import start_forkserver, worker_context
from bot.settings import Settings
from bot.errors import (
    ExecutorOverloadedError,
    JobCancelledError,
    JobTimeoutError,
    VoiceBotError,
    WorkerCrashedError,
)

if TYPE_CHECKING:
    from bot.asr.ctc.recognizer import SpeechRecognizer

log = logging.getLogger(__name__)

AudioSource = Path | np.ndarray
ProgressCallback = Callable[[Progress], None]

#: How long a running job may take to notice a cancel before its worker is killed.
CANCEL_GRACE_SECONDS = 5.0
#: Workers that die this many times in a row before becoming ready mean the pool is broken.
MAX_FAILED_STARTS = 3


class TranscriptionJob(Protocol):
    """A submitted job: await `result()`, ask its `position()`, or `cancel()` it."""

    @property
    def id(self) -> int: ...

    def position(self) -> int | None: ...

    def cancel(self) -> None: ...

    async def result(self) -> Transcription: ...


class Transcriber(Protocol):
    """What the bot needs from a model executor."""

    async def start(self) -> None: ...

    def submit(
        self, source: AudioSource, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> TranscriptionJob: ...

    async def transcribe(
        self, source: AudioSource, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> Transcription: ...

    @property
    def ready_workers(self) -> int: ...

    @property
    def queue_depth(self) -> int: ...

    async def shutdown(self, *, grace: float = 0.0) -> None: ...


@dataclass(frozen=True)
class EngineConfig:
    """Everything a worker needs to build its recognizer and decode files.

    Built from `Settings` (which owns every default) by `from_settings`; it exists so
    that a worker receives a small picklable value rather than the settings with the bot
    token in them.
    """

    model: str
    device: str
    compute_type: str
    batch_size: int
    compile: bool
    cpu_kernels: str
    attention: str
    threads: int
    chunk_seconds: float
    stride_seconds: float
    max_audio_seconds: float
    ffmpeg_timeout: float
    ffmpeg_memory_mb: int
    #: How often a worker reports progress (the bot edits its message less often than this).
    progress_interval: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        return cls(
            model=settings.asr_model,
            device=settings.asr_device,
            compute_type=settings.asr_compute_type,
            batch_size=settings.asr_batch_size,
            compile=settings.asr_compile,
            cpu_kernels=settings.asr_cpu_kernels,
            attention=settings.asr_attention,
            threads=settings.threads_per_worker(),
            chunk_seconds=settings.asr_chunk_seconds,
            stride_seconds=settings.asr_stride_seconds,
            max_audio_seconds=settings.max_audio_seconds,
            ffmpeg_timeout=settings.ffmpeg_timeout_seconds,
            ffmpeg_memory_mb=settings.ffmpeg_memory_mb,
        )


# ----------------------------------------------------------------------------------------
# Worker process side
# ----------------------------------------------------------------------------------------


def _worker_main(conn: Connection, cancel_seq: Any, shared: SharedModel, config: EngineConfig) -> None:
    """Entry point of a worker process: build the recognizer once, then serve jobs.

    Messages to the parent: ("ready",), ("progress", seq, Progress),
    ("result", seq, Transcription), ("error", seq, exception).
    """
    import signal

    import torch

    from bot.asr.ctc.recognizer import SpeechRecognizer

    # A group-wide SIGTERM/Ctrl-C (systemd, a terminal) must not kill jobs mid-chunk: the
    # parent decides when workers stop, through the pipe, or by killing them.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    torch.set_num_threads(config.threads)
    recognizer = SpeechRecognizer(
        shared.rebuild(), device=config.device, compute_type=config.compute_type,
        batch_size=config.batch_size, compile=config.compile, cpu_kernels=config.cpu_kernels,
    )
    del shared
    with AudioDecoder(max_seconds=config.max_audio_seconds, timeout=config.ffmpeg_timeout,
                      memory_mb=config.ffmpeg_memory_mb) as decoder:
        conn.send(("ready",))
        _serve(conn, cancel_seq, recognizer, decoder, config)


def _serve(conn: Connection, cancel_seq: Any, recognizer: SpeechRecognizer, decoder: AudioDecoder,
           config: EngineConfig) -> None:
    """Answer jobs until the parent says stop or goes away; while idle, the decoder has a spare ffmpeg ready."""
    while True:
        decoder.prepare()
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        seq, source = message
        try:
            started = time.perf_counter()
            if isinstance(source, np.ndarray):
                audio, decode_seconds = source, 0.0
            else:
                audio = decoder.decode(Path(source))
                decode_seconds = time.perf_counter() - started
            result = recognizer.transcribe(
                audio,
                chunk_seconds=config.chunk_seconds,
                stride_seconds=config.stride_seconds,
                on_progress=lambda progress: conn.send(("progress", seq, progress)),
                progress_interval=config.progress_interval,
                should_stop=lambda: cancel_seq.value == seq,
            )
            conn.send(("result", seq, dataclasses.replace(result, decode_seconds=decode_seconds)))
        except VoiceBotError as exc:
            conn.send(("error", seq, exc))
        except Exception as exc:  # noqa: BLE001 - reported to the job, the worker lives on
            logging.getLogger(__name__).exception("job %s failed in worker", seq)
            conn.send(("error", seq, VoiceBotError(f"{type(exc).__name__}: {exc}")))


# ----------------------------------------------------------------------------------------
# Parent side
# ----------------------------------------------------------------------------------------


@dataclass(eq=False)
class _Job:
    """A job as the pool tracks it; `_JobHandle` is what callers hold."""

    seq: int
    owner: int
    source: AudioSource
    future: asyncio.Future[Transcription]
    on_progress: ProgressCallback | None
    attempts: int = 0
    fail_with: VoiceBotError | None = None  # why the pool killed its worker (timeout, cancel)
    timers: list[asyncio.TimerHandle] = field(default_factory=list)

    def stop_timers(self) -> None:
        for timer in self.timers:
            timer.cancel()
        self.timers.clear()


@dataclass(eq=False)
class _Worker:
    index: int
    process: Any
    conn: Connection
    cancel_seq: Any
    ready: bool = False
    job: _Job | None = None


class _JobHandle:
    def __init__(self, pool: ProcessPoolTranscriber, job: _Job) -> None:
        self._pool = pool
        self._job = job

    @property
    def id(self) -> int:
        return self._job.seq

    def position(self) -> int | None:
        """Jobs queued ahead of this one (0 = next or running); None once finished."""
        return self._pool._position(self._job)

    def cancel(self) -> None:
        self._pool._cancel(self._job)

    async def result(self) -> Transcription:
        return await asyncio.shield(self._job.future)


class _FairQueue:
    """Queued jobs, taken round-robin across owners."""

    def __init__(self) -> None:
        self._by_owner: dict[int, deque[_Job]] = {}
        self._turn: deque[int] = deque()

    def __len__(self) -> int:
        return sum(len(jobs) for jobs in self._by_owner.values())

    def push(self, job: _Job, *, front: bool = False) -> None:
        jobs = self._by_owner.setdefault(job.owner, deque())
        if not jobs:
            if front:
                self._turn.appendleft(job.owner)
            else:
                self._turn.append(job.owner)
        if front:
            jobs.appendleft(job)
        else:
            jobs.append(job)

    def pop(self) -> _Job | None:
        if not self._turn:
            return None
        owner = self._turn.popleft()
        jobs = self._by_owner[owner]
        job = jobs.popleft()
        if jobs:
            self._turn.append(owner)
        else:
            del self._by_owner[owner]
        return job

    def remove(self, job: _Job) -> bool:
        jobs = self._by_owner.get(job.owner)
        if not jobs or job not in jobs:
            return False
        jobs.remove(job)
        if not jobs:
            del self._by_owner[job.owner]
            self._turn.remove(job.owner)
        return True

    def in_order(self) -> Iterator[_Job]:
        """The order in which queued jobs will be taken."""
        owners = list(self._turn)
        depth = max((len(self._by_owner[o]) for o in owners), default=0)
        for round_index in range(depth):
            for owner in owners:
                jobs = self._by_owner[owner]
                if round_index < len(jobs):
                    yield jobs[round_index]

    def drain(self) -> list[_Job]:
        jobs = list(self.in_order())
        self._by_owner.clear()
        self._turn.clear()
        return jobs


class ProcessPoolTranscriber:
    """A `Transcriber` backed by forkserver worker processes sharing one copy of the model."""

    def __init__(
        self,
        config: EngineConfig,
        *,
        workers: int = 1,
        queue_size: int = 200,
        job_timeout: float = 900.0,
        on_worker_restart: Callable[[], None] | None = None,
    ) -> None:
        self.config = config
        self.workers = workers
        self.queue_size = queue_size
        self.job_timeout = job_timeout
        self._on_worker_restart = on_worker_restart
        self._ctx = worker_context()
        self._shared: SharedModel | None = None
        self._pool: list[_Worker] = []
        self._queue = _FairQueue()
        self._seq = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed_starts = 0
        self._closing = False
        self._all_ready = asyncio.Event()
        self._broken: VoiceBotError | None = None

    # -- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the model (once), start the workers and wait until every one is ready.

        The forkserver is started first (if `python -m bot run` has not already), so its
        imports run while this process loads the weights rather than after.
        """
        self._loop = asyncio.get_running_loop()
        start_forkserver()
        loaded = await asyncio.to_thread(load_ctc_model, self.config.model, attention=self.config.attention)
        self._shared = SharedModel.from_loaded(loaded, attention=self.config.attention)
        for index in range(self.workers):
            self._pool.append(self._spawn(index))
        await self._all_ready.wait()
        if self._broken is not None:
            raise self._broken

    def _spawn(self, index: int) -> _Worker:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        cancel_seq = self._ctx.Value("q", -1, lock=False)
        process = self._ctx.Process(
            target=_worker_main,
            args=(child_end, cancel_seq, self._shared, self.config),
            name=f"asr-worker-{index}",
            daemon=True,
        )
        process.start()
        child_end.close()
        worker = _Worker(index=index, process=process, conn=parent_end, cancel_seq=cancel_seq)
        threading.Thread(target=self._read, args=(worker,), name=f"asr-reader-{index}", daemon=True).start()
        return worker

    async def shutdown(self, *, grace: float = 0.0) -> None:
        """Stop taking jobs, give running ones up to `grace` seconds, then stop the workers.

        Jobs still queued or running fail with `JobCancelledError`: the bot has them
        persisted and resumes them on the next start.
        """
        self._closing = True
        deadline = time.monotonic() + grace
        while any(w.job for w in self._pool) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for job in self._queue.drain():
            self._settle(job, error=JobCancelledError("shutting down"))
        for worker in self._pool:
            if worker.job is not None:
                self._settle(worker.job, error=JobCancelledError("shutting down"))
                worker.job = None
            try:
                worker.conn.send(None)
            except OSError:
                pass
        for worker in self._pool:
            await asyncio.to_thread(worker.process.join, 2.0)
            if worker.process.is_alive():
                worker.process.kill()
                await asyncio.to_thread(worker.process.join, 2.0)
            worker.conn.close()
        self._pool.clear()

    # -- public API --------------------------------------------------------------------

    @property
    def ready_workers(self) -> int:
        return sum(1 for w in self._pool if w.ready and w.process.is_alive())

    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return sum(1 for w in self._pool if w.job is not None)

    def submit(
        self, source: AudioSource, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> _JobHandle:
        """Queue a job; raises `ExecutorOverloadedError` when the queue is full."""
        if self._loop is None or self._closing:
            raise JobCancelledError("the transcriber is not running")
        if self._broken is not None:
            raise self._broken
        if len(self._queue) >= self.queue_size:
            raise ExecutorOverloadedError(retry_after=self._estimated_wait())
        self._seq += 1
        job = _Job(self._seq, owner, source, self._loop.create_future(), on_progress)
        # Whoever awaits the handle gets the exception; a job nobody awaits any more
        # (its chat task is gone) must not log "exception was never retrieved".
        job.future.add_done_callback(lambda future: future.cancelled() or future.exception())
        self._queue.push(job)
        self._dispatch()
        return _JobHandle(self, job)

    async def transcribe(
        self, source: AudioSource, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> Transcription:
        return await self.submit(source, owner=owner, on_progress=on_progress).result()

    # -- scheduling --------------------------------------------------------------------

    def _estimated_wait(self) -> float:
        """A rough 'try again in N s' from queue length: ~10 s of work per queued job per worker."""
        return max(5.0, 10.0 * len(self._queue) / max(1, self.workers))

    def _position(self, job: _Job) -> int | None:
        if job.future.done():
            return None
        if any(w.job is job for w in self._pool):
            return 0
        for index, queued in enumerate(self._queue.in_order()):
            if queued is job:
                return index
        return None

    def _dispatch(self) -> None:
        for worker in self._pool:
            if not worker.ready or worker.job is not None:
                continue
            job = self._queue.pop()
            if job is None:
                return
            self._run_on(worker, job)

    def _run_on(self, worker: _Worker, job: _Job) -> None:
        assert self._loop is not None
        worker.job = job
        job.attempts += 1
        source = str(job.source) if isinstance(job.source, Path) else job.source
        try:
            worker.conn.send((job.seq, source))
        except OSError:
            return  # the reader thread reports the dead worker; the job is retried there
        job.timers.append(self._loop.call_later(self.job_timeout, self._kill_for, worker, job,
                                                JobTimeoutError(f"job ran over {self.job_timeout:.0f}s")))

    def _cancel(self, job: _Job) -> None:
        if job.future.done():
            return
        if self._queue.remove(job):
            self._settle(job, error=JobCancelledError("cancelled while queued"))
            return
        for worker in self._pool:
            if worker.job is job and self._loop is not None:
                worker.cancel_seq.value = job.seq
                job.timers.append(self._loop.call_later(
                    CANCEL_GRACE_SECONDS, self._kill_for, worker, job, JobCancelledError("cancelled")))

    def _kill_for(self, worker: _Worker, job: _Job, reason: VoiceBotError) -> None:
        """Kill a worker that is stuck on `job`; the exit handler settles the job with `reason`."""
        if worker.job is job and worker.process.is_alive():
            log.warning("killing %s: %s", worker.process.name, reason)
            job.fail_with = reason
            worker.process.kill()

    def _settle(self, job: _Job, *, result: Transcription | None = None, error: BaseException | None = None) -> None:
        job.stop_timers()
        if job.future.done():
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)  # type: ignore[arg-type]

    # -- messages from workers (reader threads -> event loop) ---------------------------

    def _read(self, worker: _Worker) -> None:
        """Blocking reads on one worker's pipe, in a thread; EOF means the process died."""
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                self._call_soon(self._on_exit, worker)
                return
            self._call_soon(self._on_message, worker, message)

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the bot is gone
            pass

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "ready":
            worker.ready = True
            self._failed_starts = 0
            if self.ready_workers == len(self._pool):
                self._all_ready.set()
            self._dispatch()
            return
        job = worker.job
        if job is None or job.seq != message[1]:
            return  # a stale message for a job already settled
        if kind == "progress":
            if job.on_progress is not None:
                job.on_progress(message[2])
            return
        worker.job = None
        if kind == "result":
            self._settle(job, result=message[2])
        else:
            self._settle(job, error=message[2])
        self._dispatch()

    def _on_exit(self, worker: _Worker) -> None:
        if worker not in self._pool:
            return
        worker.process.join(timeout=1.0)
        job, worker.job = worker.job, None
        if not worker.ready:
            self._failed_starts += 1
        if self._closing:
            if job is not None:
                self._settle(job, error=JobCancelledError("shutting down"))
            return
        log.error("%s exited with code %s%s", worker.process.name, worker.process.exitcode,
                  f" during job {job.seq}" if job else "")
        if job is not None:
            if job.fail_with is not None:
                self._settle(job, error=job.fail_with)
            elif job.attempts < 2:
                job.stop_timers()
                self._queue.push(job, front=True)
            else:
                self._settle(job, error=WorkerCrashedError(f"worker died twice on job {job.seq}"))
        if self._failed_starts >= MAX_FAILED_STARTS:
            self._broken = WorkerCrashedError("worker processes keep dying at start-up")
            for queued in self._queue.drain():
                self._settle(queued, error=self._broken)
            self._all_ready.set()
            return
        index = self._pool.index(worker)
        self._pool[index] = self._spawn(worker.index)
        if self._on_worker_restart is not None:
            self._on_worker_restart()
