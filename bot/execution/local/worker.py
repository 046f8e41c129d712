"""The worker process side of the local backend: build the recognizers once, then serve jobs from one pipe.

Messages to the parent: ("ready", the engine's language detectors), ("failed", ModelLoadError) when
its models cannot be loaded, ("progress", job_id, Progress), ("result", job_id, Transcription),
("error", job_id, VoiceBotError).
From the parent: first the models, as (shared models, punctuator or None) or as None (load
them from their checkpoints), then (job_id, TranscriptionRequest) per job, or None to exit.
A job is stopped between chunks when the shared `cancel_id` holds its id.

Every file is decoded here, by the hardened decoder under the configured limits: a path
(the parent's own temporary file, same machine) in place, bytes from a private temporary
file of the worker's own, so both go through exactly the same code.

The models and the punctuator arrive with their weights in shared memory, or (a pool of one
worker: nobody to share with) are loaded here, and become the worker's `Engine`
(`bot.execution.engine`): one recognizer per model of ASR_MODELS, routing by the request's
model and by the language it detects, exactly as on a Ray replica. torch and the engine are
imported inside `worker_main`, from the forkserver's preloaded modules, so that the parent,
which names `worker_main` to start a worker, imports none of them.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import signal
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

from bot.asr.punctuation import Punctuator
from bot.asr.types import Transcription
from bot.audio.decode import AudioDecoder
from bot.errors import ModelLoadError, VoiceBotError
from bot.execution.base import TranscriptionRequest
from bot.execution.config import EngineConfig
from bot.ops.logs import setup_logging

if TYPE_CHECKING:
    import numpy as np

    from bot.asr.loading import SharedModel
    from bot.execution.engine import Engine

log = logging.getLogger(__name__)


def worker_main(conn: Connection, cancel_id: ctypes.c_longlong, config: EngineConfig) -> None:
    """Entry point of a worker process: its first message is the models, then jobs follow."""
    # A group-wide SIGTERM/Ctrl-C (systemd, a terminal) must not kill jobs mid-chunk: the
    # parent decides when workers stop, through the pipe, or by killing them.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    setup_logging(level=config.log_level, fmt=config.log_format)  # it holds no secret to redact
    import torch

    from bot.execution.engine import Engine

    torch.set_num_threads(config.threads)
    models: tuple[tuple[SharedModel, ...], Punctuator | None] | None
    try:
        models = conn.recv()
    except (EOFError, KeyboardInterrupt):
        return
    if models is None:
        try:
            engine = Engine.load(config)
        except ModelLoadError as exc:
            conn.send(("failed", exc))
            return
    else:
        engine = Engine.from_shared(config, *models)
    del models
    limits = config.limits
    with AudioDecoder(max_seconds=limits.max_seconds, timeout=limits.timeout, memory_mb=limits.memory_mb) as decoder:
        conn.send(("ready", engine.language_detectors))
        _serve(conn, cancel_id, engine, decoder)


def _serve(conn: Connection, cancel_id: ctypes.c_longlong, engine: Engine, decoder: AudioDecoder) -> None:
    """Answer jobs until the parent says stop or goes away; while idle, the decoder has a spare ffmpeg ready."""
    while True:
        decoder.prepare()
        try:
            message = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if message is None:
            return
        job_id, request = message
        try:
            result = _transcribe(conn, job_id, request, cancel_id, engine, decoder)
            conn.send(("result", job_id, result))
        except VoiceBotError as exc:
            conn.send(("error", job_id, exc))
        except Exception as exc:  # reported to the job, the worker lives on
            log.exception("job %s failed in worker", job_id)
            conn.send(("error", job_id, VoiceBotError(f"{type(exc).__name__}: {exc}")))


def _transcribe(conn: Connection, job_id: int, request: TranscriptionRequest, cancel_id: ctypes.c_longlong,
                engine: Engine, decoder: AudioDecoder) -> Transcription:
    engine.recognizer(request.options.model)  # an unknown model is refused before the file is decoded
    started = time.perf_counter()
    audio = _decode(decoder, request.audio)
    decode_seconds = time.perf_counter() - started
    result = engine.transcribe(
        audio,
        request.options,
        on_progress=lambda progress: conn.send(("progress", job_id, progress)),
        should_stop=lambda: cancel_id.value == job_id,
    )
    return dataclasses.replace(result, decode_seconds=decode_seconds)


def _decode(decoder: AudioDecoder, audio: bytes | Path) -> np.ndarray:
    """16 kHz mono float32 samples of a file given by path, or by its bytes."""
    if isinstance(audio, Path):
        return decoder.decode(audio)
    with tempfile.TemporaryDirectory(prefix="voicebot-worker-") as directory:  # mode 0700: this worker's own
        path = Path(directory) / "audio"
        path.write_bytes(audio)
        return decoder.decode(path)
