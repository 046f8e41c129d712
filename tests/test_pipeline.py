"""The life of a job (`TranscriptionPipeline`) against a fake transcriber.

Everything but the model is real: a PTB bot with the bot's own rate limiter talks HTTP to the
fake Bot API server, files are really downloaded into a temporary directory, and jobs and
transcripts go to a real SQLite file. The transcriber is the seam under test: an in-process
`bot.execution.base.Transcriber` that answers with a fixed text, can refuse (queue full),
fail, or hold a job until the test lets it go.
"""

from __future__ import annotations

import asyncio
import stat
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from telegram import Message, Update
from telegram.ext import ExtBot

from bot.asr.types import Progress, TextOptions, Transcription, TranscriptionOptions, Word
from bot.errors import AudioDecodeError, ExecutorOverloadedError, JobCancelledError
from bot.execution.base import ProgressCallback, TranscriptionRequest
from bot.settings import Settings
from bot.storage import JobRequest, JobStatus, Storage
from bot.telegram import replies
from bot.telegram.attachments import find_media
from bot.telegram.delivery import rate_limiter
from bot.telegram.pipeline import TranscriptionPipeline
from tests.fake_telegram import FakeTelegram, SentMessage

USER, OTHER = 501, 502
TEXT = "Hello from the fake transcriber."
AUDIO = b"OggS" + bytes(range(256)) * 4


@dataclass
class Submitted:
    """One request the fake transcriber was given, and what its file held at that moment."""

    request: TranscriptionRequest
    owner: int
    on_progress: ProgressCallback | None
    audio: bytes
    directory_mode: int
    job: FakeJob


class FakeJob:
    """A job handle: done at once, or held until `release()`; `cancel()` ends it as cancelled."""

    def __init__(self, job_id: int, transcription: Transcription, error: BaseException | None, hold: bool) -> None:
        self._id = job_id
        self._transcription = transcription
        self._error = error
        self._released = asyncio.Event()
        self.cancelled = False
        if not hold:
            self._released.set()

    @property
    def id(self) -> int:
        return self._id

    def position(self) -> int | None:
        return None if self._released.is_set() else 0

    def cancel(self) -> None:
        self.cancelled = True
        self._released.set()

    def release(self) -> None:
        self._released.set()

    async def result(self) -> Transcription:
        await self._released.wait()
        if self.cancelled:
            raise JobCancelledError("cancelled while running")
        if self._error is not None:
            raise self._error
        return self._transcription


@dataclass
class FakeTranscriber:
    """`bot.execution.base.Transcriber` in-process, with the knobs the tests turn."""

    text: str = TEXT
    hold: bool = False
    refuse: bool = False
    error: BaseException | None = None
    submitted: list[Submitted] = field(default_factory=list)
    ready_workers: int = 1
    queue_depth: int = 0

    async def start(self) -> None:
        pass

    def submit(
        self, request: TranscriptionRequest, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> FakeJob:
        if self.refuse:
            raise ExecutorOverloadedError(retry_after=12)
        assert isinstance(request.audio, Path), "a local backend gets the downloaded file's path"
        words = tuple(Word(word, float(i), i + 0.5) for i, word in enumerate(self.text.split()))
        transcription = Transcription(
            text=self.text, raw_text=self.text.upper(), words=words, duration=5.0, model=request.options.model,
            options=TranscriptionOptions(chunk_seconds=20.0, stride_seconds=2.5), processing_seconds=0.25,
            language=request.options.language,
        )
        job = FakeJob(len(self.submitted) + 1, transcription, self.error, self.hold)
        self.submitted.append(Submitted(
            request, owner, on_progress, request.audio.read_bytes(), stat.S_IMODE(request.audio.parent.stat().st_mode),
            job,
        ))
        return job

    async def transcribe(
        self, request: TranscriptionRequest, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> Transcription:
        return await self.submit(request, owner=owner, on_progress=on_progress).result()

    async def shutdown(self, *, grace: float = 0.0) -> None:
        pass


@dataclass
class World:
    telegram: FakeTelegram
    bot: ExtBot[None]
    storage: Storage
    transcriber: FakeTranscriber
    pipeline: TranscriptionPipeline
    make_pipeline: Callable[..., TranscriptionPipeline]

    async def send_voice(
        self, chat_id: int = USER, user_id: int = USER, *, duration: int = 5, data: bytes = AUDIO,
        file_unique_id: str | None = None, pipeline: TranscriptionPipeline | None = None,
    ) -> Message:
        """A voice note arrives and is accepted; returns the user's message."""
        ref = self.telegram.add_file(data, file_unique_id=file_unique_id)
        message = Update.de_json(self.telegram.send_voice(chat_id, user_id, ref, duration=duration), self.bot).message
        assert message is not None
        media = find_media(message)
        assert media is not None
        await (pipeline or self.pipeline).accept(message, media, user_id=user_id)
        return message

    def answers(self, message: Message) -> list[SentMessage]:
        """The bot's messages replying to `message`."""
        return [m for m in self.telegram.sent_messages(message.chat.id) if m.reply_to_message_id == message.message_id]

    async def finished(self, *pipelines: TranscriptionPipeline) -> None:
        for pipeline in pipelines or (self.pipeline,):
            await pipeline.drain(timeout=10)


@pytest_asyncio.fixture
async def world(telegram: FakeTelegram, tmp_path: Path) -> AsyncIterator[World]:
    async with ExtBot(**telegram.bot_kwargs(), rate_limiter=rate_limiter()) as bot:
        async with Storage.open(tmp_path / "bot.sqlite3") as storage:
            transcriber = FakeTranscriber()

            def make_pipeline(**settings: Any) -> TranscriptionPipeline:
                values = {"asr_model": "tiny/model-a", "progress_interval_seconds": 1, **settings}
                return TranscriptionPipeline(
                    bot=bot, settings=Settings(_env_file=None, **values),  # type: ignore[call-arg]
                    storage=storage, transcriber=transcriber,  # type: ignore[arg-type]
                )

            yield World(telegram, bot, storage, transcriber, make_pipeline(), make_pipeline)


def cancel_id(placeholder: SentMessage) -> int:
    [data] = [data for label, data in placeholder.buttons if label == replies.CANCEL_BUTTON]
    assert data is not None
    return int(data.removeprefix("cancel:"))


async def test_a_voice_note_is_downloaded_transcribed_stored_and_answered(world: World) -> None:
    message = await world.send_voice(duration=5)
    await world.finished()

    [submitted] = world.transcriber.submitted
    assert submitted.request.options == TextOptions(model="tiny/model-a")
    assert (submitted.owner, submitted.audio, submitted.directory_mode) == (USER, AUDIO, 0o700)
    assert isinstance(submitted.request.audio, Path) and not submitted.request.audio.parent.exists()
    [answer] = world.answers(message)
    assert answer.text == TEXT
    assert answer.history[0] == "Transcribing… 0:05 of audio"
    [record] = await world.storage.transcripts.export_user(USER)
    assert answer.buttons == [(f".{fmt}", f"fmt:{record.id}:{fmt}") for fmt in ("txt", "srt", "vtt")]
    assert (record.chat_id, record.message_id, record.transcription.text) == (USER, message.message_id, TEXT)
    assert await world.storage.jobs.unfinished() == []
    assert world.telegram.calls("sendChatAction")[0].params["action"] == "typing"


async def test_the_cache_answers_the_same_file_only_for_the_same_text_options(world: World) -> None:
    first = await world.send_voice(file_unique_id="same-content")
    await world.finished()
    again = await world.send_voice(OTHER, OTHER, file_unique_id="same-content")
    await world.finished()
    assert len(world.transcriber.submitted) == 1 and len(world.telegram.downloads()) == 1
    assert [m.text for m in world.answers(first)] == [m.text for m in world.answers(again)] == [TEXT]

    # An operator changes ASR_MODEL: the same file is transcribed again, with the new model.
    other_model = world.make_pipeline(asr_model="tiny/model-b")
    world.transcriber.text = "Transcribed by the other model."
    third = await world.send_voice(OTHER, OTHER, file_unique_id="same-content", pipeline=other_model)
    await world.finished(other_model)
    assert [s.request.options.model for s in world.transcriber.submitted] == ["tiny/model-a", "tiny/model-b"]
    assert [m.text for m in world.answers(third)] == ["Transcribed by the other model."]


async def test_turning_punctuation_on_transcribes_a_cached_file_again(world: World) -> None:
    """PUNCTUATION_MODEL changes the text without being a request's option: a file transcribed while it
    was off is not answered from the cache once it is on; the punctuated copy then is, language and all."""
    for chat_id in (USER, OTHER):
        await world.storage.preferences.set_language(chat_id, "en")
    await world.send_voice(file_unique_id="same-content")
    await world.finished()

    punctuating = world.make_pipeline(punctuation_model="models/punctuation")
    world.transcriber.text = punctuated = "Hello, from the punctuating transcriber."
    for chat_id in (OTHER, USER):
        again = await world.send_voice(chat_id, chat_id, file_unique_id="same-content", pipeline=punctuating)
        await world.finished(punctuating)
        assert [m.text for m in world.answers(again)] == [punctuated]
    assert len(world.transcriber.submitted) == 2  # the second punctuated request came from the cache
    records = await world.storage.transcripts.export_user(USER)
    assert [(r.transcription.text, r.transcription.language) for r in records] == [(TEXT, "en"), (punctuated, "en")]
    assert [r.transcription.processing_seconds for r in records] == [0.25, 0.0]


async def test_a_job_cancelled_while_it_waits_is_never_downloaded_or_run(world: World) -> None:
    message = await world.send_voice(duration=60)  # long enough for a Cancel button
    [placeholder] = world.answers(message)
    job_id = cancel_id(placeholder)
    # Pressed before the job's task got to run: it is waiting to be claimed.
    assert await world.pipeline.cancel(job_id, user_id=OTHER) is False
    assert await world.pipeline.cancel(job_id, user_id=USER) is True
    await world.finished()

    assert world.telegram.downloads() == []
    assert world.transcriber.submitted == []
    assert [m.text for m in world.answers(message)] == ["Transcription cancelled."]
    assert await world.storage.jobs.unfinished() == []
    assert await world.pipeline.cancel(job_id, user_id=USER) is None  # nothing left to cancel


async def test_a_job_forgotten_while_it_waits_is_never_run_and_leaves_nothing_stored(world: World) -> None:
    message = await world.send_voice()
    assert await world.storage.preferences.forget_user(USER) == 0  # /forget, before the job got to run
    await world.finished()

    assert world.telegram.downloads() == []
    assert world.transcriber.submitted == []
    assert await world.storage.transcripts.export_user(USER) == []
    assert [m.text for m in world.answers(message)] == ["Transcription cancelled."]


async def test_progress_is_shown_and_cancel_stops_a_running_job(world: World) -> None:
    world.transcriber.hold = True
    message = await world.send_voice(duration=60)
    submitted = await world.telegram.wait_for(lambda _: world.transcriber.submitted)
    assert submitted[0].on_progress is not None
    submitted[0].on_progress(Progress(done_seconds=30.0, total_seconds=60.0, partial_text="hello so far"))
    placeholder = await world.telegram.wait_for(
        lambda _: [m for m in world.answers(message) if m.text == "Transcribing… 50%\n\nhello so far"]
    )
    assert placeholder[0].buttons[0][0] == replies.CANCEL_BUTTON

    assert await world.pipeline.cancel(cancel_id(placeholder[0]), user_id=USER) is True
    await world.finished()
    assert submitted[0].job.cancelled
    assert [m.text for m in world.answers(message)] == ["Transcription cancelled."]
    assert await world.storage.jobs.unfinished() == []


async def test_a_full_queue_and_a_failed_file_each_end_as_one_message(world: World, tmp_path: Path) -> None:
    world.transcriber.refuse = True
    busy = await world.send_voice()
    await world.finished()
    assert [m.text for m in world.answers(busy)] == ["I'm busy right now. Please try again in 12 s."]

    world.transcriber.refuse = False
    world.transcriber.error = AudioDecodeError("not audio at all")
    broken = await world.send_voice(OTHER, OTHER)
    await world.finished()
    assert [m.text for m in world.answers(broken)] == [replies.UNREADABLE]

    assert await world.storage.jobs.unfinished() == []
    assert await world.storage.transcripts.export_user(USER) == []
    assert await world.storage.transcripts.export_user(OTHER) == []


async def test_too_big_or_too_long_is_refused_before_any_job(world: World) -> None:
    pipeline = world.make_pipeline(max_file_mb=1, max_audio_seconds=60)
    big = await world.send_voice(data=b"x" * (2 * 2**20), pipeline=pipeline)
    long = await world.send_voice(OTHER, OTHER, duration=61, pipeline=pipeline)
    await world.finished(pipeline)
    assert [m.text for m in world.answers(big)] == [replies.too_big(2 * 2**20, 1)]
    assert [m.text for m in world.answers(long)] == ["This recording is too long (over 1:00); I transcribe up to 1:00."]
    assert world.telegram.downloads() == [] and world.transcriber.submitted == []
    assert await world.storage.jobs.unfinished() == []


async def test_a_deleted_placeholder_is_replaced_by_a_new_reply(world: World) -> None:
    world.transcriber.hold = True
    message = await world.send_voice()
    [placeholder] = world.answers(message)
    submitted = await world.telegram.wait_for(lambda _: world.transcriber.submitted)
    await world.bot.delete_message(USER, placeholder.message_id)
    submitted[0].job.release()
    await world.finished()
    [answer] = world.answers(message)
    assert answer.message_id != placeholder.message_id and answer.text == TEXT and answer.buttons


async def test_a_long_transcript_is_sent_as_a_file(world: World) -> None:
    world.transcriber.text = " ".join([TEXT] * 4)
    pipeline = world.make_pipeline(transcript_file_chars=100)
    message = await world.send_voice(pipeline=pipeline)
    await world.finished(pipeline)
    document, placeholder = sorted(world.answers(message), key=lambda m: m.document is None)
    assert document.document is not None and document.document.data.decode() == world.transcriber.text
    assert document.document.file_name == f"transcript-{message.message_id}.txt"
    assert placeholder.text == replies.sent_as_file(4 * len(TEXT.split()))
    assert [label for label, _ in placeholder.buttons] == [".txt", ".srt", ".vtt"]


async def test_without_the_database_the_transcript_still_arrives(world: World) -> None:
    await world.storage.close()
    message = await world.send_voice()
    await world.finished()
    assert len(world.transcriber.submitted) == 1
    [answer] = world.answers(message)
    assert answer.text == f"{TEXT}\n\n{replies.STORAGE_FAILED_NOTE}"
    assert answer.buttons == []


@pytest.mark.parametrize("explicit", [False, True])
async def test_a_message_delivered_twice_is_one_job(world: World, explicit: bool) -> None:
    message = await world.send_voice()
    media = find_media(message)
    assert media is not None
    await world.pipeline.accept(message, media, user_id=USER, explicit=explicit)
    await world.finished()
    assert len(world.transcriber.submitted) == 1
    texts = [m.text for m in world.answers(message)]
    assert texts == ([TEXT, replies.ALREADY] if explicit else [TEXT])


async def test_resumed_jobs_run_and_finish(world: World) -> None:
    message = await world.send_voice()
    await world.finished()
    # A job left queued by a previous process: resumed, it runs and its row is finished.
    job, created = await world.storage.jobs.create(JobRequest(
        chat_id=USER, message_id=message.message_id + 100, user_id=USER, chat_type="private",
        file_id=world.telegram.add_file(AUDIO).file_id, file_unique_id="left-over", media_kind="voice", duration=5.0,
    ))
    assert created and job.status is JobStatus.QUEUED
    world.pipeline.resume(await world.storage.jobs.unfinished())
    await world.finished()
    assert [s.request.audio for s in world.transcriber.submitted][1:] != []
    assert len(world.telegram.downloads()) == 2
    assert [m.text for m in world.telegram.sent_messages(USER)][-1] == TEXT
    assert await world.storage.jobs.unfinished() == []
