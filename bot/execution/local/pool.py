"""The local execution backend: model workers as processes on this machine, sharing one copy of the weights.

With several workers, `ProcessPoolBackend` loads each model once in the parent (every
model of ASR_MODELS, and the punctuation model), moves their weights to shared memory,
and hands them to each worker, so N workers cost one copy of the weights. A single worker
has nobody to share with: it loads its models itself, so this process never imports torch
or transformers, and the worker is ready as soon as the forkserver's imports are done and
its own load is, instead of after the parent's imports, load and sharing too.
Workers are forked from a multiprocessing forkserver (`bot.execution.local.forkserver`)
that imported torch, transformers and the engine once, so they share those pages instead
of each importing its own copy; the worker's side is `bot.execution.local.worker`.

Each worker owns one pipe to the parent, with a reader thread that turns its messages into
events on the event loop and, once the process has gone, reaps it; and a writer thread
that sends it jobs. Forking, sending a job (the audio may be 20 MB of bytes) and waiting
for a process to exit therefore all happen off the event loop. Which job runs where, and
what a lost worker means, is the scheduler's business (`bot.execution.scheduler`).
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from queue import SimpleQueue
from typing import TYPE_CHECKING, Any

from bot.execution.backend import Attempt, BackendEvents
from bot.execution.base import TranscriptionRequest
from bot.execution.config import EngineConfig
from bot.execution.local.forkserver import start_forkserver, worker_context
from bot.execution.local.worker import worker_main

if TYPE_CHECKING:
    from bot.asr.loading import SharedModel
    from bot.asr.punctuation import Punctuator

log = logging.getLogger(__name__)

#: How long a worker may take to exit once asked (or once its pipe closed) before it is killed.
EXIT_WAIT_SECONDS = 2.0

#: What a writer thread sends a worker to make it exit, and then stops.
_EXIT = None
_Outgoing = tuple[int, TranscriptionRequest] | None


def _process_name(slot: int) -> str:
    return f"asr-worker-{slot}"


@dataclass(eq=False)
class _Worker:
    slot: int
    process: BaseProcess
    conn: Connection
    #: The id of the job the worker should stop (shared memory; -1: none).
    cancel_id: ctypes.c_longlong
    outbox: SimpleQueue[_Outgoing] = field(default_factory=SimpleQueue)
    #: The attempt last given to the process. Its messages name only the job id, which is enough:
    #: a process is never given two attempts of one job (a retry follows the loss of the process).
    attempt: Attempt | None = None
    #: Set by the reader thread once the process has exited and been reaped.
    gone: threading.Event = field(default_factory=threading.Event)


class ProcessPoolBackend:
    """An `ExecutionBackend` of forkserver worker processes on this machine."""

    def __init__(self, config: EngineConfig, *, workers: int = 1) -> None:
        self.config = config
        self._count = workers
        self._ctx = worker_context()
        #: multiprocessing reads a forkserver child's exit status once, from a pipe: two threads
        #: reading it at once get the status and EOF (then 255). Forking polls every child
        #: (`Process.start` tidies up finished ones), so forking and reaping take turns.
        self._exit_status = threading.Lock()
        #: What each worker is sent first: the shared models and punctuator, or None (it loads its own).
        self._models: tuple[tuple[SharedModel, ...], Punctuator | None] | None = None
        self._workers: dict[int, _Worker] = {}
        self._starting: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._events: BackendEvents | None = None
        #: What the workers' engines report when they are ready (every worker runs the same models).
        self.language_detectors: frozenset[str] = frozenset()

    @property
    def workers(self) -> int:
        return self._count

    async def open(self, events: BackendEvents) -> None:
        """With several workers, load every model (once each) and put their weights in shared memory.

        The forkserver is started first (if `python -m bot run` has not already), so its
        imports run while this process loads the weights rather than after.
        """
        self._loop = asyncio.get_running_loop()
        self._events = events
        start_forkserver()
        if self._count > 1:
            self._models = await asyncio.to_thread(self._share_models)

    def _share_models(self) -> tuple[tuple[SharedModel, ...], Punctuator | None]:
        from bot.asr.loading import SharedModel, load_model
        from bot.asr.punctuation import load_punctuator

        shared = tuple(SharedModel.from_loaded(load_model(name, attention=self.config.attention))
                       for name in self.config.models or (self.config.model,))
        punctuation = self.config.punctuation_model
        return shared, load_punctuator(punctuation).share_memory() if punctuation else None

    def start_worker(self, slot: int) -> None:
        assert self._loop is not None
        task = self._loop.create_task(self._start(slot))
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    def run(self, slot: int, attempt: Attempt, request: TranscriptionRequest) -> None:
        worker = self._workers[slot]
        worker.attempt = attempt
        worker.outbox.put((attempt.job_id, request))

    def stop(self, slot: int, attempt: Attempt) -> None:
        worker = self._workers.get(slot)
        if worker is not None:
            worker.cancel_id.value = attempt.job_id

    def kill(self, slot: int) -> None:
        worker = self._workers.get(slot)
        if worker is not None and not worker.gone.is_set():
            worker.process.kill()

    async def close(self) -> None:
        """Ask every worker to exit, kill those still busy after `EXIT_WAIT_SECONDS`; no events after this."""
        if self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)
        workers = list(self._workers.values())
        self._workers.clear()
        for worker in workers:
            worker.outbox.put(_EXIT)
        await asyncio.gather(*(self._reap(worker) for worker in workers))

    # -- starting and stopping processes -------------------------------------------------

    async def _start(self, slot: int) -> None:
        """Fork the worker off the loop (it waits for the forkserver), then attend to its pipe."""
        assert self._events is not None
        try:
            process, conn, cancel_id = await asyncio.to_thread(self._fork, slot)
        except Exception as exc:  # any failure to fork is a worker lost at start-up
            log.exception("could not start %s", _process_name(slot))
            self._events.worker_lost(slot, f"{_process_name(slot)} could not start: {type(exc).__name__}: {exc}")
            return
        worker = _Worker(slot=slot, process=process, conn=conn, cancel_id=cancel_id)
        self._workers[slot] = worker
        threading.Thread(target=self._read, args=(worker,), name=f"asr-reader-{slot}", daemon=True).start()
        threading.Thread(target=self._write, args=(worker,), name=f"asr-writer-{slot}", daemon=True).start()

    def _fork(self, slot: int) -> tuple[BaseProcess, Connection, ctypes.c_longlong]:
        parent_end, child_end = self._ctx.Pipe(duplex=True)
        cancel_id = self._ctx.Value("q", -1, lock=False)
        process = self._ctx.Process(
            target=worker_main,
            args=(child_end, cancel_id, self.config),
            name=_process_name(slot),
            daemon=True,
        )
        with self._exit_status:
            process.start()
        child_end.close()
        try:
            # The weights go through the pipe, not the start arguments: every shared tensor is
            # one file descriptor, and a forkserver start passes at most 256 (two models pass more).
            parent_end.send(self._models)
        except BaseException:
            process.kill()
            parent_end.close()
            raise
        return process, parent_end, cancel_id

    async def _reap(self, worker: _Worker) -> None:
        if not await asyncio.to_thread(worker.gone.wait, EXIT_WAIT_SECONDS):
            worker.process.kill()
            await asyncio.to_thread(worker.gone.wait, EXIT_WAIT_SECONDS)
        worker.conn.close()

    # -- one worker's pipe (its reader and writer threads) -------------------------------

    def _write(self, worker: _Worker) -> None:
        """Send the worker its jobs in order; after `_EXIT`, or once the pipe is broken, stop."""
        while True:
            message = worker.outbox.get()
            try:
                worker.conn.send(message)
            except OSError:  # the process is gone: its reader thread reports that
                return
            if message is _EXIT:
                return

    def _read(self, worker: _Worker) -> None:
        """Blocking reads on the worker's pipe; at EOF (the process is gone) reap it and report the loss."""
        while True:
            try:
                message = worker.conn.recv()
            except (EOFError, OSError):
                break
            self._call_soon(self._on_message, worker, message)
        worker.outbox.put(_EXIT)  # ends the writer thread
        exitcode = self._exit_code(worker, EXIT_WAIT_SECONDS)
        if exitcode is None:  # closed its pipe but lingers
            worker.process.kill()
            exitcode = self._exit_code(worker, None)
        reason = f"{worker.process.name} exited with code {exitcode}"
        worker.gone.set()
        self._call_soon(self._on_exit, worker, reason)

    def _exit_code(self, worker: _Worker, timeout: float | None) -> int | None:
        """Wait up to `timeout` seconds for the process to end; its exit code, or None while it runs."""
        wait([worker.process.sentinel], timeout)
        with self._exit_status:
            return worker.process.exitcode

    def _call_soon(self, callback: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        try:
            self._loop.call_soon_threadsafe(callback, *args)
        except RuntimeError:  # the loop is closed: the bot is gone
            pass

    def _on_message(self, worker: _Worker, message: tuple[Any, ...]) -> None:
        if self._workers.get(worker.slot) is not worker or self._events is None:
            return  # closed, or a replaced worker's last words
        kind = message[0]
        if kind == "ready":
            self.language_detectors = message[1]
            self._events.worker_ready(worker.slot)
            return
        if kind == "failed":
            self._events.backend_failed(message[1])
            return
        attempt = worker.attempt
        if attempt is None or attempt.job_id != message[1]:
            return  # not a job this process was given
        if kind == "progress":
            self._events.job_progress(worker.slot, attempt, message[2])
        elif kind == "result":
            self._events.job_done(worker.slot, attempt, message[2])
        else:
            self._events.job_failed(worker.slot, attempt, message[2])

    def _on_exit(self, worker: _Worker, reason: str) -> None:
        if self._workers.get(worker.slot) is not worker or self._events is None:
            return
        del self._workers[worker.slot]
        self._events.worker_lost(worker.slot, reason)
