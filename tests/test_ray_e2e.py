"""The bot's cluster backend against a real local Ray Serve cluster (`tests.ray_cluster`), and the bot on it end to end.

The tiny model runs in Serve replicas; the bot side is the real `HttpBackend` under the real
scheduler, or the real `python -m bot run` with `ASR_BACKEND=ray` against the fake Bot API.
Skipped without the `cluster` extra.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bot.asr.recognizer import Recognizer
from bot.asr.types import TextOptions, Transcription
from bot.execution.base import TranscriptionRequest
from bot.execution.remote.backend import HttpBackend
from bot.execution.scheduler import Scheduler
from tests.conftest import BotProcess, engine_text, final_replies, wait_answer, wait_ready
from tests.fake_telegram import FakeTelegram, SentMessage
from tests.media import looped
from tests.ray_cluster import RayServe

pytest.importorskip("ray")
pytestmark = pytest.mark.slow

GROUP = -100400500


@pytest.fixture(scope="module")
def very_long_ogg(speech_ogg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About eight minutes of speech: long enough for progress edits, and to kill a replica in the middle."""
    path = tmp_path_factory.mktemp("very-long") / "very-long.ogg"
    looped(speech_ogg, path, 96, "-c:a", "libopus", "-b:a", "12k")
    return path


@pytest.fixture
async def scheduler_at() -> AsyncIterator[Callable[..., Awaitable[Scheduler]]]:
    schedulers: list[Scheduler] = []

    async def start(url: str, *, slots: int = 1) -> Scheduler:
        backend = HttpBackend(url, slots=slots, max_audio_seconds=1800.0, max_file_mb=20.0)
        scheduler = Scheduler(backend, job_timeout=120.0)
        schedulers.append(scheduler)
        await scheduler.start()
        return scheduler

    yield start
    for scheduler in schedulers:
        await scheduler.shutdown()


def request(path: Path, recognizer: Recognizer) -> TranscriptionRequest:
    return TranscriptionRequest(audio=path, options=TextOptions(model=recognizer.model_name))


def replica_pids(app: str) -> set[int]:
    """The live model replica processes of application `app` (Ray names them `ray::ServeReplica:<app>:Transcriber`)."""
    import psutil

    found = set()
    for process in psutil.process_iter(["pid", "cmdline"]):
        if any(f"ServeReplica:{app}:Transcriber" in part for part in process.info["cmdline"] or ()):
            found.add(process.info["pid"])
    return found


async def test_the_cluster_gives_the_same_transcript_as_the_local_engine(
    asr_server: str, scheduler_at: Callable[..., Awaitable[Scheduler]], recognizer: Recognizer,
    speech_ogg: Path, long_ogg: Path,
) -> None:
    scheduler = await scheduler_at(asr_server, slots=2)

    short, long = await asyncio.gather(
        scheduler.transcribe(request(speech_ogg, recognizer)), scheduler.transcribe(request(long_ogg, recognizer)))

    assert short.text == engine_text(recognizer, speech_ogg)
    assert long.text == engine_text(recognizer, long_ogg)
    assert isinstance(long, Transcription) and long.words and long.duration > 50


async def test_a_full_cluster_queue_makes_jobs_wait_and_all_are_answered(
    ray_serve: RayServe, scheduler_at: Callable[..., Awaitable[Scheduler]], recognizer: Recognizer,
    long_ogg: Path, very_long_ogg: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    url = ray_serve.deploy("narrow", asr_max_ongoing_requests=1, asr_max_queued_requests=1)
    try:
        scheduler = await scheduler_at(url, slots=3)
        # Every slot ready first: a slot still reading /v1/models would wait behind the first job in
        # the replica's queue, and send its job only after that one ends, to a queue with room.
        deadline = asyncio.get_running_loop().time() + 60
        while scheduler.ready_workers < 3:
            assert asyncio.get_running_loop().time() < deadline, "the slots never became ready"
            await asyncio.sleep(0.05)
        # The long job holds the one replica slot (it has reported progress) while the other two
        # arrive: one fills the queue, the other is refused until there is room.
        running = asyncio.Event()
        long_job = asyncio.create_task(scheduler.transcribe(request(very_long_ogg, recognizer),
                                                            on_progress=lambda _: running.set()))
        await asyncio.wait_for(running.wait(), 60)
        with caplog.at_level(logging.INFO, logger="bot.execution.remote.backend"):
            results = await asyncio.gather(*(scheduler.transcribe(request(long_ogg, recognizer)) for _ in range(2)))
        long_result = await long_job
    finally:
        ray_serve.delete("narrow")

    assert {result.text for result in results} == {engine_text(recognizer, long_ogg)}
    assert long_result.text == engine_text(recognizer, very_long_ogg)
    assert any("the cluster is busy (HTTP 503)" in record.getMessage() for record in caplog.records)


def bot_env(url: str) -> dict[str, str]:
    return {"ASR_BACKEND": "ray", "ASR_SERVER_URL": url, "ASR_REMOTE_CONCURRENCY": "2", "LOG_LEVEL": "INFO"}


def transcript_files(answer: list[SentMessage]) -> list[str]:
    """The transcripts sent as .txt files in an answer (a long transcript comes as one)."""
    return [message.document.data.decode().strip() for message in answer if message.document]


def mapped_libraries(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


async def test_the_bot_on_the_cluster_answers_private_and_group_voice_notes_with_progress(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], asr_server: str,
    recognizer: Recognizer, speech_ogg: Path, very_long_ogg: Path,
) -> None:
    bot = start_bot(**bot_env(asr_server))
    await wait_ready(telegram, bot)

    private = telegram.send_voice(901, 901, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    [reply] = await wait_answer(telegram, 901, private["message"]["message_id"])
    assert reply.text == engine_text(recognizer, speech_ogg)

    telegram.add_chat(GROUP, chat_type="supergroup", title="Team")
    in_group = telegram.send_voice(GROUP, 902, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    [group_reply] = await wait_answer(telegram, GROUP, in_group["message"]["message_id"])
    assert group_reply.text == reply.text

    long = telegram.send_voice(903, 903, telegram.add_file(very_long_ogg.read_bytes()), duration=480)
    answer = await wait_answer(telegram, 903, long["message"]["message_id"], timeout=120)
    assert transcript_files(answer) == [engine_text(recognizer, very_long_ogg)]
    edits = [edit for message in answer for edit in message.history]
    assert any(re.match(r"Transcribing… \d+%", edit) for edit in edits), edits

    # Neither torch nor Ray was loaded by the bot: their shared libraries are not mapped in its process.
    maps = mapped_libraries(bot.process.pid)
    assert "libtorch" not in maps and "_raylet" not in maps
    assert "libpython" in maps or "python" in maps  # the check reads a real map
    assert await bot.stop() == 0


async def test_a_replica_killed_mid_job_is_retried_and_the_user_gets_one_answer(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], ray_serve: RayServe,
    recognizer: Recognizer, very_long_ogg: Path,
) -> None:
    url = ray_serve.deploy("fragile")
    try:
        bot = start_bot(**bot_env(url))
        await wait_ready(telegram, bot)
        voice = telegram.send_voice(911, 911, telegram.add_file(very_long_ogg.read_bytes()), duration=480)
        message_id = voice["message"]["message_id"]
        # Once a progress edit shows, the replica is mid-job: kill it.
        await telegram.wait_for(lambda s: any(
            re.match(r"Transcribing… \d+%", edit) for m in s.sent_messages(911) for edit in (*m.history, m.text or "")
        ), timeout=60)
        [victim] = replica_pids("fragile")
        os.kill(victim, signal.SIGKILL)

        answer = await wait_answer(telegram, 911, message_id, timeout=120)
        assert transcript_files(answer) == [engine_text(recognizer, very_long_ogg)]
        await asyncio.sleep(2)  # a late duplicate would arrive now
        assert transcript_files(final_replies(telegram, 911, message_id)) == transcript_files(answer)
        assert len(telegram.calls("sendDocument")) == 1
        assert "during job" in bot.log and victim not in replica_pids("fragile")
        assert await bot.stop() == 0
    finally:
        ray_serve.delete("fragile")


