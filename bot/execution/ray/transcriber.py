"""The model replica: a Serve deployment that loads its models once and streams each job's progress and result.

Each replica loads every model of the table (ASR_MODELS) and the punctuation model in `__init__`
into the same `Engine` as a local worker (`bot.execution.engine`: `build_recognizer` on
`load_model`, routing by the request's model and its detected language), so both backends give
the same text, and decodes the uploaded bytes with the same hardened decoder under the same
limits. The engine is synchronous and runs in a thread; when the caller goes away (the HTTP
client closed the stream, or the request was cancelled) the job's stop flag is set and the
recognizer, which polls it between chunks, stops within one chunk.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray import serve

from bot.asr.types import Progress, TextOptions, Transcription
from bot.audio.decode import decode_audio
from bot.errors import JobCancelledError, VoiceBotError
from bot.execution.engine import Engine
from bot.execution.ray.config import ReplicaEvent, ServeConfig

log = logging.getLogger("voicebot.replica")


@serve.deployment
class Transcriber:
    """Every model of the table, one job at a time per `max_ongoing_requests` slot."""

    def __init__(self, config: ServeConfig) -> None:
        engine = config.engine
        torch.set_num_threads(engine.threads)
        # Progress after every chunk: a streaming client gets one event per chunk.
        recognizer_config = dataclasses.replace(engine.recognizer, progress_interval=0.0)
        self._engine = Engine.load(engine, recognizer_config)
        self._limits = engine.limits
        self._threads = engine.threads
        self._pid = os.getpid()
        self._counts = {"jobs": 0, "chunks_run": 0, "cancelled": 0, "running": 0}
        self._lock = threading.Lock()
        log.info("replica %d ready: %s%s, %d torch threads", self._pid, ", ".join(self._engine.models),
                 f", punctuation {engine.punctuation_model}" if engine.punctuation_model else "", engine.threads)

    def language_detectors(self) -> frozenset[str]:
        """The models of this replica's engine that detect languages (every replica runs the same)."""
        return self._engine.language_detectors

    def stats(self) -> dict[str, Any]:
        """This replica's counters: jobs started, chunks run, jobs stopped by their caller, jobs running."""
        with self._lock:
            return {"pid": self._pid, **self._counts}

    async def transcribe(self, audio: bytes, options: TextOptions, progress: bool) -> AsyncIterator[ReplicaEvent]:
        """Decode and transcribe one file: progress events (when `progress`), then its result or error."""
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[ReplicaEvent] = asyncio.Queue()
        stop = threading.Event()

        def report(update: Progress) -> None:
            loop.call_soon_threadsafe(events.put_nowait, ReplicaEvent("progress", self._pid, progress=update))

        job = loop.run_in_executor(None, self._run, audio, options, stop, report if progress else None)
        try:
            while True:
                waiting = asyncio.ensure_future(events.get())
                await asyncio.wait({waiting, job}, return_when=asyncio.FIRST_COMPLETED)
                if waiting.done():
                    yield waiting.result()
                    continue
                waiting.cancel()
                while not events.empty():
                    yield events.get_nowait()
                yield job.result()
                return
        finally:
            if not job.done():  # the caller left: stop between chunks
                stop.set()
                log.info("replica %d: caller went away, stopping the job", self._pid)

    def _run(self, audio: bytes, options: TextOptions, stop: threading.Event,
             report: Any) -> ReplicaEvent:
        with self._lock:
            self._counts["jobs"] += 1
            self._counts["running"] += 1
        chunks = 0

        def should_stop() -> bool:
            nonlocal chunks
            if stop.is_set():
                return True
            chunks += 1
            with self._lock:
                self._counts["chunks_run"] += 1
            return False

        try:
            started = time.perf_counter()
            samples = self._decode(audio)
            decoded = time.perf_counter() - started
            try:
                result: Transcription = self._engine.transcribe(samples, options, on_progress=report,
                                                                should_stop=should_stop)
            except ValueError as exc:
                if chunks:  # an option is checked before any chunk runs: later, it is a bug
                    raise
                return ReplicaEvent("invalid", self._pid, detail=str(exc))
            return ReplicaEvent("result", self._pid, result=dataclasses.replace(result, decode_seconds=decoded))
        except JobCancelledError as exc:
            with self._lock:
                self._counts["cancelled"] += 1
            log.info("replica %d: job stopped after %d chunks", self._pid, chunks)
            return ReplicaEvent("error", self._pid, error=exc)
        except VoiceBotError as exc:
            return ReplicaEvent("error", self._pid, error=exc)
        finally:
            with self._lock:
                self._counts["running"] -= 1

    def _decode(self, audio: bytes) -> np.ndarray:
        """The bytes' samples, decoded from a private temporary file like a local worker's."""
        limits = self._limits
        with tempfile.TemporaryDirectory(prefix="voicebot-replica-") as directory:  # mode 0700
            path = Path(directory) / "audio"
            path.write_bytes(audio)
            return decode_audio(path, max_seconds=limits.max_seconds, timeout=limits.timeout,
                                memory_mb=limits.memory_mb, processes=self._threads)
