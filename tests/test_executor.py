"""The process-pool executor: real spawned workers with the tiny model."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from bot.asr.ctc.recognizer import SpeechRecognizer
from bot.asr.ctc.loading import SharedModel, load_ctc_model
from bot.audio.decode import decode_audio
from bot.errors import (
    AudioDecodeError,
    ExecutorOverloadedError,
    JobCancelledError,
    JobTimeoutError,
    WorkerCrashedError,
)
from bot.execution.local.pool import EngineConfig, ProcessPoolTranscriber
from bot.settings import Settings
from tests.media import ffmpeg

pytestmark = pytest.mark.slow
CHUNK, STRIDE = 2.0, 0.5


@pytest.fixture(scope="module")
def long_wav(speech_ogg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About eight minutes of speech: a job that keeps a worker busy for a few seconds."""
    path = tmp_path_factory.mktemp("executor") / "long.wav"
    ffmpeg("-stream_loop", "100", "-i", str(speech_ogg), "-ar", "16000", "-ac", "1", str(path))
    return path


def make_pool(model: Path, **options: object) -> ProcessPoolTranscriber:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, asr_model=str(model), asr_threads_per_worker=1,
        asr_chunk_seconds=CHUNK, asr_stride_seconds=STRIDE,
    )
    return ProcessPoolTranscriber(EngineConfig.from_settings(settings), **options)  # type: ignore[arg-type]


async def running_worker(pool: ProcessPoolTranscriber, job_id: int, timeout: float = 20) -> int:
    """The pid of the worker process that is running `job_id`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for worker in pool._pool:
            if worker.job is not None and worker.job.seq == job_id and worker.ready:
                return worker.process.pid
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never started")


def test_shared_weights_are_not_copied(tiny_model: Path) -> None:
    shared = SharedModel.from_loaded(load_ctc_model(str(tiny_model)))
    rebuilt = shared.rebuild().model
    for name, tensor in rebuilt.state_dict().items():
        assert tensor.data_ptr() == shared.state[name].data_ptr(), name
        assert shared.state[name].is_shared()


async def test_results_match_the_engine_and_errors_cross_processes(
    tiny_model: Path, speech_ogg: Path, recognizer: SpeechRecognizer, tmp_path: Path
) -> None:
    expected = recognizer.transcribe(decode_audio(speech_ogg, max_seconds=60), chunk_seconds=CHUNK,
                                     stride_seconds=STRIDE)
    pool = make_pool(tiny_model, workers=2)
    await pool.start()
    try:
        assert pool.ready_workers == 2
        from_path = await pool.transcribe(speech_ogg)
        from_array = await pool.transcribe(decode_audio(speech_ogg, max_seconds=60))
        assert from_path.raw_text == from_array.raw_text == expected.raw_text
        assert from_path.words == expected.words
        assert from_path.decode_seconds > 0 and from_array.decode_seconds == 0
        broken = tmp_path / "broken.ogg"
        broken.write_bytes(os.urandom(4096))
        with pytest.raises(AudioDecodeError) as caught:
            await pool.transcribe(broken)
        assert "couldn't read any audio" in caught.value.user_message
    finally:
        await pool.shutdown()
    assert pool.ready_workers == 0


async def test_worker_killed_mid_job_is_replaced_and_the_job_retried(tiny_model: Path, long_wav: Path) -> None:
    restarts: list[int] = []
    pool = make_pool(tiny_model, workers=1, on_worker_restart=lambda: restarts.append(1))
    await pool.start()
    try:
        job = pool.submit(long_wav, owner=1)
        os.kill(await running_worker(pool, job.id), signal.SIGKILL)
        result = await asyncio.wait_for(job.result(), 120)
        assert result.duration > 400 and result.raw_text
        assert restarts == [1] and pool.ready_workers == 1

        # Killed on both tries: a clear error, and the pool keeps serving.
        job = pool.submit(long_wav, owner=1)
        os.kill(await running_worker(pool, job.id), signal.SIGKILL)
        await asyncio.sleep(0.5)
        os.kill(await running_worker(pool, job.id), signal.SIGKILL)
        with pytest.raises(WorkerCrashedError):
            await asyncio.wait_for(job.result(), 60)
        assert (await pool.transcribe(np.zeros(16_000, dtype=np.float32))).duration == 1.0
    finally:
        await pool.shutdown()


async def test_timeout_and_cancel_free_the_worker(tiny_model: Path, long_wav: Path) -> None:
    pool = make_pool(tiny_model, workers=1, job_timeout=1.0)
    await pool.start()
    try:
        with pytest.raises(JobTimeoutError):
            await pool.transcribe(long_wav)
        pool.job_timeout = 600
        job = pool.submit(long_wav)
        await running_worker(pool, job.id)
        started = time.monotonic()
        job.cancel()
        with pytest.raises(JobCancelledError):
            await job.result()
        assert time.monotonic() - started < 6
        running = pool.submit(long_wav)
        first = pool.submit(np.zeros(1600, dtype=np.float32))
        second = pool.submit(np.zeros(1600, dtype=np.float32))
        await running_worker(pool, running.id)
        assert (running.position(), first.position(), second.position()) == (0, 0, 1)
        second.cancel()
        with pytest.raises(JobCancelledError):
            await second.result()
        running.cancel()
        await first.result()
        assert (await pool.transcribe(np.zeros(16_000, dtype=np.float32))).duration == 1.0
    finally:
        await pool.shutdown()


async def test_fair_queue_and_bounded_queue(tiny_model: Path, speech_ogg: Path) -> None:
    pool = make_pool(tiny_model, workers=1, queue_size=8)
    await pool.start()
    try:
        finished: list[str] = []

        async def run(name: str, owner: int) -> None:
            await pool.transcribe(speech_ogg, owner=owner)
            finished.append(name)

        tasks = [asyncio.create_task(run(f"a{i}", owner=1)) for i in range(6)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(run("b", owner=2)))
        await asyncio.sleep(0)
        with pytest.raises(ExecutorOverloadedError) as overloaded:
            for _ in range(10):
                pool.submit(speech_ogg, owner=3)
        assert "try again in" in overloaded.value.user_message
        await asyncio.gather(*tasks, return_exceptions=True)
        # One user's six files do not hold back another user's single one.
        assert finished.index("b") <= 2
    finally:
        await pool.shutdown()
