"""Shared fixtures: a tiny real model on disk, the fake Bot API server, and the bot as a process.

End-to-end tests run the real `python -m bot run` as a subprocess against the fake
server over real HTTP, with a real SQLite file and the real worker pool.
"""

from __future__ import annotations

import os

# Tests never reach the Hugging Face hub: fail fast instead of retrying a dead network
# (set before transformers/huggingface_hub read it at import; bot subprocesses inherit it).
os.environ["HF_HUB_OFFLINE"] = "1"

import asyncio
import signal as signals
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from bot.asr.loading import load_model
from bot.asr.recognizer import Recognizer, RecognizerConfig, build_recognizer
from bot.asr.types import TextOptions
from bot.audio import decode as audio
from bot.audio.decode import decode_audio
from tests.fake_telegram import FakeTelegram, SentMessage
from tests.media import convert, looped, synth_speech
from tests.model_factory import EXACT_COMPUTE_TYPE, build_random_ctc_model

#: The local Ray cluster fixtures (`ray_serve`, `asr_server`); they skip without the `cluster` extra.
pytest_plugins = ["tests.ray_cluster", "tests.storage_support"]

REPO = Path(__file__).resolve().parents[1]
CORPUS = REPO.parent / "shared" / "corpus"
#: Chunking used by end-to-end tests: short, so a few seconds of speech spans several chunks.
E2E_CHUNK_SECONDS = 4.0
E2E_STRIDE_SECONDS = 1.0


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random tiny wav2vec2 CTC model with the 960h vocabulary, saved with save_pretrained."""
    return build_random_ctc_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def make_recognizer(tiny_model: Path) -> Callable[..., Recognizer]:
    """Recognizers on the tiny model by their settings (`RecognizerConfig` fields, on the CPU),
    loaded and built through the production code path, each once per session."""
    built: dict[RecognizerConfig, Recognizer] = {}

    def make(**settings: Any) -> Recognizer:
        config = RecognizerConfig(device="cpu", **{"compute_type": EXACT_COMPUTE_TYPE, **settings})
        if config not in built:  # a model of its own: int8 and bfloat16 convert it, tuned kernels patch it
            built[config] = build_recognizer(load_model(str(tiny_model)), config)
        return built[config]

    return make


@pytest.fixture(scope="session")
def recognizer(make_recognizer: Callable[..., Recognizer]) -> Recognizer:
    """The engine on the tiny model as the end-to-end tests' bot runs it (their chunking)."""
    return make_recognizer(chunk_seconds=E2E_CHUNK_SECONDS, stride_seconds=E2E_STRIDE_SECONDS)


@pytest.fixture(scope="session")
def speech_ogg(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About five seconds of synthesised speech as an OGG/Opus voice note."""
    directory = tmp_path_factory.mktemp("speech")
    wav = synth_speech("the quick brown fox jumps over the lazy dog near the river bank", directory / "speech.wav")
    return convert(wav, directory / "speech.ogg", "-c:a", "libopus", "-b:a", "24k", "-ar", "48000")


@pytest.fixture(scope="session")
def long_ogg(speech_ogg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About a minute of speech (`speech_ogg` twelve times): many chunks, so a job is still running
    when a test interferes with it."""
    return looped(speech_ogg, tmp_path_factory.mktemp("long") / "long.ogg", 12, "-c:a", "libopus", "-b:a", "16k")


@pytest.fixture(scope="session")
def minutes_ogg(speech_ogg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A few minutes of speech: a transcript longer than one message, a job that keeps a worker busy."""
    return looped(speech_ogg, tmp_path_factory.mktemp("minutes") / "minutes.ogg", 41, "-c:a", "libopus", "-b:a", "16k")


def engine_text(recognizer: Recognizer, path: Path) -> str:
    """What the engine makes of a file, decoded as the bot decodes it, with the default options: the expected reply."""
    audio: np.ndarray = decode_audio(path, max_seconds=3600)
    return recognizer.transcribe(audio, TextOptions(model=recognizer.model_name)).text


@pytest.fixture
async def telegram(tmp_path: Path) -> AsyncIterator[FakeTelegram]:
    async with FakeTelegram() as server:
        yield server


class BotProcess:
    """`python -m bot run` in a subprocess, pointed at the fake server."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self.log_path = log_path
        self.commands_before = 0
        self._log = log_path.open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bot", "run"], cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signum)

    async def stop(self, signum: int = signals.SIGTERM, timeout: float = 30.0) -> int:
        """Send `signum` and wait for the exit code (SIGKILL kills workers too: the whole group)."""
        self.signal(signum)
        loop = asyncio.get_running_loop()
        try:
            code = await asyncio.wait_for(loop.run_in_executor(None, self.process.wait), timeout)
        except TimeoutError:
            self.signal(signals.SIGKILL)
            code = await loop.run_in_executor(None, self.process.wait)
        self._log.close()
        return code


def exits_within(pid: int, seconds: float) -> bool:
    """Whether process `pid` is gone (or a zombie: an orphan may wait for init to reap it)
    within `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state == "Z":
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)


@pytest.fixture
def audio_spawns(monkeypatch: pytest.MonkeyPatch) -> list[subprocess.Popen[bytes]]:
    """Every ffmpeg/ffprobe process bot.audio.decode starts during the test, in order (real processes)."""
    spawned: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def spy(argv, *args, **kwargs):  # type: ignore[no-untyped-def]
        spawned.append(real_popen(argv, *args, **kwargs))
        return spawned[-1]

    monkeypatch.setattr(audio.subprocess, "Popen", spy)
    return spawned


@pytest.fixture
def start_bot(telegram: FakeTelegram, tiny_model: Path, tmp_path: Path) -> Iterator[Callable[..., BotProcess]]:
    """Start the bot with settings overrides; every started process is stopped at teardown."""
    started: list[BotProcess] = []

    def start(**settings: str) -> BotProcess:
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("ASR_", "TELEGRAM_", "MAX_"))},
            **telegram.env(),
            "ASR_MODEL": str(tiny_model),
            "ASR_WORKERS": "1",
            "ASR_THREADS_PER_WORKER": "1",
            "ASR_COMPUTE_TYPE": EXACT_COMPUTE_TYPE,
            "ASR_CHUNK_SECONDS": str(E2E_CHUNK_SECONDS),
            "ASR_STRIDE_SECONDS": str(E2E_STRIDE_SECONDS),
            "DATABASE_PATH": str(tmp_path / "bot.sqlite3"),
            "PROGRESS_INTERVAL_SECONDS": "1",
            "PYTHONUNBUFFERED": "1",
            **settings,
        }
        process = BotProcess(env, tmp_path / f"bot-{len(started)}.log")
        process.commands_before = len(telegram.calls("setMyCommands"))
        started.append(process)
        return process

    yield start
    for process in started:
        process.signal(signals.SIGKILL)
        process.process.wait()


async def wait_ready(telegram: FakeTelegram, bot: BotProcess, *, timeout: float = 60.0) -> None:
    """The bot finished post_init (commands set) and polls for updates."""
    def ready(server: FakeTelegram) -> bool:
        if bot.process.poll() is not None:
            raise AssertionError(f"bot exited with {bot.process.returncode}:\n{bot.log[-3000:]}")
        return len(server.calls("setMyCommands")) > bot.commands_before

    await telegram.wait_for(ready, timeout=timeout)


def final_replies(server: FakeTelegram, chat_id: int, message_id: int) -> list[SentMessage]:
    """The bot's messages answering `message_id`, once none of them is a placeholder any more."""
    replies = [m for m in server.sent_messages(chat_id) if m.reply_to_message_id == message_id]
    if not replies or any(m.text and m.text.startswith("Transcribing") for m in replies):
        return []
    return replies


async def wait_answer(
    server: FakeTelegram, chat_id: int, message_id: int, *, timeout: float = 60.0
) -> list[SentMessage]:
    """Wait for the final answer to a message (placeholder edited into its result)."""
    return await server.wait_for(lambda s: final_replies(s, chat_id, message_id), timeout=timeout)
