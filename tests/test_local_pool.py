"""The local backend under the scheduler: real forkserver worker processes with the tiny model."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.asr.loading import SharedModel, load_model
from bot.asr.recognizer import Recognizer
from bot.asr.types import TextOptions
from bot.audio.decode import decode_audio
from bot.errors import (
    AudioDecodeError,
    ExecutorOverloadedError,
    JobCancelledError,
    JobTimeoutError,
    ModelLoadError,
    VoiceBotError,
    WorkerCrashedError,
)
from bot.execution.base import TranscriptionRequest
from bot.execution.config import EngineConfig
from bot.execution.local.pool import ProcessPoolBackend
from bot.execution.scheduler import Scheduler
from bot.settings import Settings
from bot.telegram.replies import failure
from tests.conftest import REPO
from tests.media import looped, make_silence
from tests.model_factory import EXACT_COMPUTE_TYPE

pytestmark = pytest.mark.slow
CHUNK, STRIDE = 2.0, 0.5


@pytest.fixture(scope="module")
def long_wav(speech_ogg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About eight minutes of speech: a job that keeps a worker busy for a few seconds."""
    path = tmp_path_factory.mktemp("executor") / "long.wav"
    looped(speech_ogg, path, 101, "-ar", "16000", "-ac", "1")
    return path


@pytest.fixture(scope="module")
def second_of_silence(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_silence(tmp_path_factory.mktemp("silence") / "second.wav", 1.0)


@pytest.fixture(scope="module")
def tenth_of_a_second(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_silence(tmp_path_factory.mktemp("silence") / "tenth.wav", 0.1)


def make_pool(model: Path, *, workers: int = 1, **options: object) -> Scheduler:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, asr_model=str(model), asr_threads_per_worker=1,
        asr_chunk_seconds=CHUNK, asr_stride_seconds=STRIDE, asr_compute_type=EXACT_COMPUTE_TYPE,
    )
    backend = ProcessPoolBackend(EngineConfig.from_settings(settings), workers=workers)
    return Scheduler(backend, **options)  # type: ignore[arg-type]


def request(model: Path, audio: Path | bytes) -> TranscriptionRequest:
    return TranscriptionRequest(audio=audio, options=TextOptions(model=str(model)))


async def running_worker(pool: Scheduler, job_id: int, timeout: float = 20) -> int:
    """The pid of the worker process that is running `job_id`."""
    assert isinstance(pool.backend, ProcessPoolBackend)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for slot in pool._slots:
            if slot.job is not None and slot.job.id == job_id and slot.ready:
                pid = pool.backend._workers[slot.index].process.pid
                assert pid is not None
                return pid
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {job_id} never started")


def test_shared_weights_are_not_copied(tiny_model: Path) -> None:
    shared = SharedModel.from_loaded(load_model(str(tiny_model)))
    rebuilt = shared.rebuild().model
    for name, tensor in rebuilt.state_dict().items():
        assert tensor.data_ptr() == shared.state[name].data_ptr(), name
        assert shared.state[name].is_shared()


#: A parent process with one worker: it transcribes a file and reports what it imported itself.
_ONE_WORKER_PARENT = """
import asyncio, json, sys
from pathlib import Path
from bot.asr.types import TextOptions
from bot.execution.base import TranscriptionRequest
from bot.execution.config import EngineConfig
from bot.execution.local.pool import ProcessPoolBackend
from bot.execution.scheduler import Scheduler
from bot.settings import Settings

async def main(model, audio, chunk, stride, compute_type):
    settings = Settings(_env_file=None, asr_model=model, asr_threads_per_worker=1, asr_compute_type=compute_type,
                        asr_chunk_seconds=float(chunk), asr_stride_seconds=float(stride))
    pool = Scheduler(ProcessPoolBackend(EngineConfig.from_settings(settings), workers=1))
    await pool.start()
    try:
        result = await pool.transcribe(TranscriptionRequest(audio=Path(audio), options=TextOptions(model=model)))
    finally:
        await pool.shutdown()
    return {"text": result.raw_text, "imported": sorted({"torch", "transformers"} & set(sys.modules))}

print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
"""


def test_a_single_worker_loads_its_own_model_and_the_parent_imports_no_torch(
    tiny_model: Path, speech_ogg: Path, make_recognizer: Callable[..., Recognizer], tmp_path: Path,
) -> None:
    """One worker has nobody to share weights with: it loads the model itself, so the bot's process
    needs neither torch nor transformers (seconds of start-up, and a copy of the weights)."""
    expected = make_recognizer(chunk_seconds=CHUNK, stride_seconds=STRIDE).transcribe(
        decode_audio(speech_ogg, max_seconds=60), TextOptions(model=str(tiny_model)))
    done = subprocess.run([sys.executable, "-c", _ONE_WORKER_PARENT, str(tiny_model), str(speech_ogg), str(CHUNK),
                           str(STRIDE), EXACT_COMPUTE_TYPE], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout)
    assert report == {"text": expected.raw_text, "imported": []}


async def test_a_model_the_single_worker_cannot_load_fails_the_start_with_the_load_error(tmp_path: Path) -> None:
    pool = make_pool(tmp_path / "no-such-model", workers=1)
    with pytest.raises(ModelLoadError, match="ASR_MODEL="):
        await asyncio.wait_for(pool.start(), 60)
    await pool.shutdown()


async def test_results_match_the_engine_and_errors_cross_processes(
    tiny_model: Path, speech_ogg: Path, make_recognizer: Callable[..., Recognizer], tmp_path: Path
) -> None:
    recognizer = make_recognizer(chunk_seconds=CHUNK, stride_seconds=STRIDE)
    expected = recognizer.transcribe(decode_audio(speech_ogg, max_seconds=60), TextOptions(model=str(tiny_model)))
    pool = make_pool(tiny_model, workers=2)
    await pool.start()
    try:
        assert pool.ready_workers == 2
        from_path = await pool.transcribe(request(tiny_model, speech_ogg))
        from_bytes = await pool.transcribe(request(tiny_model, speech_ogg.read_bytes()))
        assert from_path.raw_text == from_bytes.raw_text == expected.raw_text
        assert from_path.words == from_bytes.words == expected.words
        assert from_path.decode_seconds > 0 and from_bytes.decode_seconds > 0
        broken = tmp_path / "broken.ogg"
        broken.write_bytes(os.urandom(4096))
        for audio in (broken, broken.read_bytes()):
            with pytest.raises(AudioDecodeError) as caught:
                await pool.transcribe(request(tiny_model, audio))
            assert "couldn't read any audio" in failure(caught.value)
        with pytest.raises(VoiceBotError, match="not 'another/model'"):
            await pool.transcribe(TranscriptionRequest(audio=speech_ogg, options=TextOptions(model="another/model")))
    finally:
        await pool.shutdown()
    assert pool.ready_workers == 0


async def test_worker_killed_mid_job_is_replaced_and_the_job_retried(
    tiny_model: Path, long_wav: Path, second_of_silence: Path
) -> None:
    restarts: list[int] = []
    pool = make_pool(tiny_model, workers=1, on_worker_restart=lambda: restarts.append(1))
    await pool.start()
    try:
        job = pool.submit(request(tiny_model, long_wav), owner=1)
        os.kill(await running_worker(pool, job.id), signal.SIGKILL)
        result = await asyncio.wait_for(job.result(), 120)
        assert result.duration > 400 and result.raw_text
        assert restarts == [1] and pool.ready_workers == 1

        # Killed on both tries: a clear error, and the pool keeps serving.
        job = pool.submit(request(tiny_model, long_wav), owner=1)
        first = await running_worker(pool, job.id)
        os.kill(first, signal.SIGKILL)
        await asyncio.sleep(0.5)
        second = await running_worker(pool, job.id)
        assert second != first
        os.kill(second, signal.SIGKILL)
        with pytest.raises(WorkerCrashedError):
            await asyncio.wait_for(job.result(), 60)
        assert (await pool.transcribe(request(tiny_model, second_of_silence))).duration == 1.0
    finally:
        await pool.shutdown()


async def test_timeout_and_cancel_free_the_worker(
    tiny_model: Path, long_wav: Path, second_of_silence: Path, tenth_of_a_second: Path
) -> None:
    pool = make_pool(tiny_model, workers=1, job_timeout=1.0)
    await pool.start()
    try:
        with pytest.raises(JobTimeoutError):
            await pool.transcribe(request(tiny_model, long_wav))
        pool.job_timeout = 600
        job = pool.submit(request(tiny_model, long_wav))
        await running_worker(pool, job.id)
        started = time.monotonic()
        job.cancel()
        with pytest.raises(JobCancelledError):
            await job.result()
        assert time.monotonic() - started < 6
        running = pool.submit(request(tiny_model, long_wav))
        first = pool.submit(request(tiny_model, tenth_of_a_second))
        second = pool.submit(request(tiny_model, tenth_of_a_second))
        await running_worker(pool, running.id)
        assert (running.position(), first.position(), second.position()) == (0, 0, 1)
        second.cancel()
        with pytest.raises(JobCancelledError):
            await second.result()
        running.cancel()
        await first.result()
        assert (await pool.transcribe(request(tiny_model, second_of_silence))).duration == 1.0
    finally:
        await pool.shutdown()


async def test_fair_queue_and_bounded_queue(tiny_model: Path, speech_ogg: Path) -> None:
    pool = make_pool(tiny_model, workers=1, queue_size=8)
    await pool.start()
    try:
        finished: list[str] = []

        async def run(name: str, owner: int) -> None:
            await pool.transcribe(request(tiny_model, speech_ogg), owner=owner)
            finished.append(name)

        tasks = [asyncio.create_task(run(f"a{i}", owner=1)) for i in range(6)]
        await asyncio.sleep(0)
        tasks.append(asyncio.create_task(run("b", owner=2)))
        await asyncio.sleep(0)
        with pytest.raises(ExecutorOverloadedError) as overloaded:
            for _ in range(10):
                pool.submit(request(tiny_model, speech_ogg), owner=3)
        assert "try again in" in failure(overloaded.value)
        await asyncio.gather(*tasks, return_exceptions=True)
        # One user's six files do not hold back another user's single one.
        assert finished.index("b") <= 2
    finally:
        await pool.shutdown()


async def test_shutdown_stops_busy_workers_without_blocking_the_loop(tiny_model: Path, long_wav: Path) -> None:
    pool = make_pool(tiny_model, workers=2)
    await pool.start()
    assert isinstance(pool.backend, ProcessPoolBackend)
    processes = [worker.process for worker in pool.backend._workers.values()]
    busy = [pool.submit(request(tiny_model, long_wav), owner=i) for i in range(2)]
    for job in busy:
        await running_worker(pool, job.id)
    gaps: list[float] = []

    async def heartbeat() -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(0.01)
            now = time.monotonic()
            gaps.append(now - last)
            last = now

    beating = asyncio.create_task(heartbeat())
    await pool.shutdown(grace=0.2)
    beating.cancel()
    for job in busy:
        with pytest.raises(JobCancelledError):
            await job.result()
    assert all(process.exitcode is not None for process in processes)
    assert max(gaps) < 0.5, f"the event loop stalled for {max(gaps):.2f}s"
