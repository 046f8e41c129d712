"""What the storage tests share: a settable clock, sample rows, a plain connection to the file, and
the `clock`, `db_path` and `storage` fixtures (a pytest plugin, registered in tests/conftest.py)."""

from __future__ import annotations

import sqlite3
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from bot.asr.types import TextOptions, Transcription, TranscriptionOptions, Word
from bot.storage import CacheKey, JobRequest, Storage

START = 1_700_000_000.0
GROUP = -100_123
ALICE = 111_111_111
BOB = 222_222_222
MODEL = "facebook/wav2vec2-base-960h"
OPTIONS = TranscriptionOptions(chunk_seconds=20.0, stride_seconds=2.5, device="cpu", batch_size=2)
#: What a request for the default model asks for.
TEXT_OPTIONS = TextOptions(model=MODEL)
#: Its cache key on a bot without a punctuation model.
KEY = CacheKey(TEXT_OPTIONS, punctuation_model=None)


class FakeClock:
    """A settable clock, so created_at order and retention cut-offs are exact."""

    def __init__(self, now: float = START) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def make_transcription(
    text: str,
    *,
    duration: float = 3.0,
    processing_seconds: float = 0.5,
    model: str = MODEL,
    language: str | None = None,
) -> Transcription:
    words = tuple(Word(w, round(i * 0.5, 3), round(i * 0.5 + 0.4, 3)) for i, w in enumerate(text.split()))
    return Transcription(
        text=text,
        raw_text=text.upper(),
        words=words,
        duration=duration,
        model=model,
        options=OPTIONS,
        processing_seconds=processing_seconds,
        language=language,
    )


def job_request(message_id: int, *, user_id: int = ALICE, chat_id: int = ALICE) -> JobRequest:
    return JobRequest(
        chat_id=chat_id,
        message_id=message_id,
        user_id=user_id,
        chat_type="private" if chat_id > 0 else "supergroup",
        file_id=f"file-{message_id}",
        file_unique_id=f"uniq-{message_id}",
        media_kind="voice",
        file_size=12_345,
        duration=3.0,
        mime_type="audio/ogg",
    )


async def add(
    storage: Storage,
    text: str,
    *,
    user_id: int = ALICE,
    chat_id: int | None = None,
    message_id: int = 1,
    file_unique_id: str = "uniq",
    key: CacheKey = KEY,
    duration: float = 3.0,
    processing_seconds: float = 0.5,
    language: str | None = None,
) -> int:
    """Store a transcript the way the pipeline does for work without a job row."""
    return await storage.transcripts.add(
        user_id=user_id,
        chat_id=user_id if chat_id is None else chat_id,
        message_id=message_id,
        file_unique_id=file_unique_id,
        forward_origin=None,
        transcription=make_transcription(
            text, duration=duration, processing_seconds=processing_seconds, model=key.options.model, language=language
        ),
        key=key,
    )


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """A plain connection to inspect the file behind the Storage's back (WAL allows it)."""
    conn = sqlite3.connect(path)
    try:
        with conn:
            yield conn
    finally:
        conn.close()


def job_status(path: Path, job_id: int) -> str | None:
    """A job's status as stored, or None when its row is gone."""
    with raw(path) as conn:
        row = conn.execute("SELECT status FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return None if row is None else str(row[0])


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "data" / "bot.sqlite3"


@pytest.fixture
async def storage(db_path: Path, clock: FakeClock) -> AsyncIterator[Storage]:
    async with Storage.open(db_path, clock=clock) as opened:
        yield opened
