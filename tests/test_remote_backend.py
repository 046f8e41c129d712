"""The cluster backend (`ASR_BACKEND=ray`) against an in-process endpoint speaking the same HTTP contract.

The endpoint is a real aiohttp server on loopback; the bot side is the real `HttpBackend` under
the real `Scheduler`, so what is tested is what the bot does: the form it posts, how it reads the
event stream, what an error means to the user, how it waits when the cluster is busy, and that
a broken stream is a lost worker whose job is retried.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from bot.asr.types import Progress, TextOptions, Transcription, TranscriptionOptions, Word
from bot.errors import (
    AudioDecodeError,
    AudioTooLongError,
    FileTooBigError,
    JobCancelledError,
    VoiceBotError,
    WorkerCrashedError,
)
from bot.execution.base import TranscriptionRequest
from bot.execution.ray import openai_api
from bot.execution.remote.backend import HttpBackend
from bot.execution.remote.sse import StreamError, read_events
from bot.execution.scheduler import Scheduler
from bot.telegram import replies

Handler = Callable[[web.Request, "Endpoint"], Awaitable[web.StreamResponse]]


def transcription(text: str = "hello world") -> Transcription:
    return Transcription(
        text=text.capitalize(), raw_text=text.upper(),
        words=(Word("Hello", 0.1, 0.4), Word("world", 0.5, 0.9)), duration=2.0, model="tiny",
        options=TranscriptionOptions(chunk_seconds=4.0, stride_seconds=1.0, hotwords=("fox",),
                                     postprocess=("sentence_case",)),
        processing_seconds=0.25, decode_seconds=0.01, language="en",
    )


@dataclass
class Endpoint:
    """A fake transcription endpoint: each POST is answered by the next handler in `script`."""

    script: list[Handler]
    api_key: str | None = None
    healthy_after: int = 0
    down: bool = False
    posts: list[dict[str, Any]] = field(default_factory=list)
    health_checks: int = 0
    disconnected: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""
    #: The answer to GET /v1/models (None: HTTP 500), after `models_busy` answers of 503.
    models: Any = field(default_factory=lambda: openai_api.model_list(("tiny",), ()))
    models_busy: int = 0
    model_reads: int = 0

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error_response(401, "unauthorized", "a wrong or missing bearer token")
        fields: dict[str, Any] = {}
        async for part in await request.multipart():
            assert not isinstance(part, type(None))
            value = await part.read()  # type: ignore[union-attr]
            name = part.name or ""
            if name == "file":
                fields["file"] = (part.filename, bytes(value))  # type: ignore[union-attr]
            else:
                fields.setdefault(name, []).append(bytes(value).decode())
        self.posts.append(fields)
        handler = self.script[min(len(self.posts), len(self.script)) - 1]
        return await handler(request, self)

    async def healthz(self, request: web.Request) -> web.Response:
        self.health_checks += 1
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return web.Response(status=401)
        healthy = self.health_checks > self.healthy_after and not self.down
        return web.Response(text="ok", status=200 if healthy else 503)

    async def model_list(self, request: web.Request) -> web.Response:
        if self.api_key and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error_response(401, "unauthorized", "a wrong or missing bearer token")
        self.model_reads += 1
        if self.model_reads <= self.models_busy:
            return error_response(503, "busy", "every replica is busy")
        return web.json_response(self.models) if self.models is not None else web.Response(status=500)


def sse(event: dict[str, Any]) -> bytes:
    return f"data: {json.dumps(event)}\n\n".encode()


def delta(done: float, total: float, text: str) -> dict[str, Any]:
    return {"type": "transcript.text.delta", "delta": text,
            "x_progress": {"done_seconds": done, "total_seconds": total, "partial_text": text}}


def done(result: Transcription) -> dict[str, Any]:
    return {"type": "transcript.text.done", "text": result.text, "x_voicebot": result.to_dict()}


def error_response(status: int, code: str, message: str, **facts: Any) -> web.Response:
    return web.json_response(
        {"error": {"message": message, "type": "invalid_request_error", "param": "file", "code": code, **facts}},
        status=status)


def streams(*events: dict[str, Any], then: str = "end") -> Handler:
    """Answer with these events; then end the stream, `abort` the connection, or `hang` until the client leaves."""

    async def handler(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "x-voicebot-replica-pid": "4242"})
        await response.prepare(request)
        for event in events:
            await response.write(sse(event))
        if then in ("abort", "abort and go down"):
            endpoint.down = then == "abort and go down"
            assert request.transport is not None
            request.transport.abort()
        elif then == "hang":
            try:
                while True:
                    await asyncio.sleep(0.05)
                    await response.write(b": still working\n\n")
            except (ConnectionResetError, asyncio.CancelledError):
                endpoint.disconnected.set()
                raise
        return response

    return handler


def busy(retry_after: str = "0.1") -> Handler:
    async def handler(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        response = error_response(503, "busy", "every replica is busy")
        response.headers["Retry-After"] = retry_after
        return response

    return handler


def refuses(status: int, code: str, **facts: Any) -> Handler:
    async def handler(request: web.Request, endpoint: Endpoint) -> web.StreamResponse:
        return error_response(status, code, f"refused: {code}", **facts)

    return handler


@pytest.fixture
async def endpoint_at() -> AsyncIterator[Callable[..., Awaitable[Endpoint]]]:
    runners: list[web.AppRunner] = []

    async def start(*script: Handler, **options: Any) -> Endpoint:
        endpoint = Endpoint(list(script), **options)
        app = web.Application()
        app.router.add_post("/v1/audio/transcriptions", endpoint.transcriptions)
        app.router.add_get("/healthz", endpoint.healthz)
        app.router.add_get("/v1/models", endpoint.model_list)
        runner = web.AppRunner(app, handle_signals=False)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        port = runner.addresses[0][1]
        endpoint.url = f"http://127.0.0.1:{port}"
        return endpoint

    yield start
    for runner in runners:
        await runner.cleanup()


@pytest.fixture
async def scheduler_for() -> AsyncIterator[Callable[..., Awaitable[Scheduler]]]:
    schedulers: list[Scheduler] = []

    async def start(url: str, *, slots: int = 1, api_key: str | None = None, restarts: list[int] | None = None,
                    start_timeout: float = 10.0, **options: Any) -> Scheduler:
        backend = HttpBackend(url, slots=slots, api_key=api_key, max_audio_seconds=1800.0, max_file_mb=20.0,
                              start_timeout=start_timeout)
        on_restart = (lambda: restarts.append(1)) if restarts is not None else None
        scheduler = Scheduler(backend, on_worker_restart=on_restart, **options)
        schedulers.append(scheduler)
        await scheduler.start()
        return scheduler

    yield start
    for scheduler in schedulers:
        await scheduler.shutdown()


OPTIONS = TextOptions(model="tiny", language="en", decoder="greedy", hotwords=("fox", "river bank"),
                      postprocess=())


# -- the request ---------------------------------------------------------------------------


async def test_a_path_request_is_sent_as_the_file_s_bytes_with_every_option(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
    tmp_path: Path,
) -> None:
    endpoint = await endpoint_at(streams(done(transcription())))
    scheduler = await scheduler_for(endpoint.url)
    audio = tmp_path / "job-7.media"
    audio.write_bytes(b"OggS\x00 compressed voice note bytes")

    await scheduler.transcribe(TranscriptionRequest(audio=audio, options=OPTIONS))

    [post] = endpoint.posts
    assert post["file"] == ("job-7.media", audio.read_bytes())
    assert str(tmp_path) not in json.dumps({k: v for k, v in post.items() if k != "file"})
    assert post["model"] == ["tiny"]
    assert post["language"] == ["en"]
    assert post["decoder"] == ["greedy"]
    assert post["hotwords"] == ["fox,river bank"]
    assert post["postprocess"] == [""]  # present and empty: no steps
    assert post["stream"] == ["true"]
    assert post["response_format"] == ["verbose_json"]
    assert post["timestamp_granularities[]"] == ["word", "segment"]


async def test_default_options_leave_language_hotwords_and_postprocess_out(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    endpoint = await endpoint_at(streams(done(transcription())), api_key="s3cret")
    scheduler = await scheduler_for(endpoint.url, api_key="s3cret")

    await scheduler.transcribe(TranscriptionRequest(audio=b"voice", options=TextOptions(model="tiny")))

    [post] = endpoint.posts
    assert post["file"] == ("audio", b"voice")
    assert not {"language", "languages", "hotwords", "postprocess"} & post.keys()


async def test_restricted_detection_sends_its_languages(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    endpoint = await endpoint_at(streams(done(transcription())))
    scheduler = await scheduler_for(endpoint.url)

    await scheduler.transcribe(TranscriptionRequest(audio=b"voice", options=TextOptions(model="tiny",
                                                                                        languages=("en", "ru"))))

    [post] = endpoint.posts
    assert post["languages"] == ["en,ru"] and "language" not in post


# -- the stream ------------------------------------------------------------------------------


async def test_progress_events_reach_the_caller_and_the_done_event_is_the_transcription(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    expected = transcription("the quick brown fox")
    endpoint = await endpoint_at(streams(delta(4.0, 10.0, "the quick"), delta(8.0, 10.0, "the quick brown"),
                                         done(expected)))
    scheduler = await scheduler_for(endpoint.url)
    seen: list[Progress] = []

    result = await scheduler.transcribe(TranscriptionRequest(audio=b"x", options=OPTIONS), on_progress=seen.append)

    assert result == expected
    assert seen == [Progress(4.0, 10.0, "the quick"), Progress(8.0, 10.0, "the quick brown")]
    assert scheduler.backend.replica_pids == {0: "4242"}  # type: ignore[attr-defined]


def test_transcription_survives_json_both_ways() -> None:
    original = transcription()
    again = Transcription.from_dict(json.loads(json.dumps(original.to_dict())))
    assert again == original
    assert isinstance(again.words, tuple) and isinstance(again.options.postprocess, tuple)


@pytest.mark.parametrize("piece", [1, 3, 7, 1000])
async def test_events_are_read_whatever_the_chunk_boundaries(piece: int) -> None:
    stream = (b": a comment\n\nevent: x\r\ndata: {\"type\": \"a\",\ndata:  \"n\": 1}\r\n\r\n"
              + sse({"type": "b", "text": "é" * 5}) + b"id: 3\n\n")

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(stream), piece):
            yield stream[start:start + piece]

    assert [event async for event in read_events(chunks())] == [{"type": "a", "n": 1}, {"type": "b", "text": "ééééé"}]


@pytest.mark.parametrize("stream", [b"data: {\"type\": \"a\"}\n", b"data: not json\n\n", b"data: [1]\n\n"])
async def test_a_cut_or_garbled_stream_is_an_error(stream: bytes) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        yield stream

    with pytest.raises(StreamError):
        [event async for event in read_events(chunks())]


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(("handler", "error_type", "answer"), [
    (refuses(400, "unreadable_audio"), AudioDecodeError, replies.UNREADABLE),
    (refuses(400, "no_audio_track"), AudioDecodeError, replies.NO_AUDIO_TRACK),
    (refuses(400, "empty_file"), AudioDecodeError, replies.UNREADABLE),
    (refuses(400, "audio_too_long", x_duration=2400.0, x_limit=1800.0), AudioTooLongError,
     replies.too_long(2400.0, 1800.0)),
    (refuses(413, "file_too_large"), FileTooBigError, replies.too_big(5, 20.0)),
    (streams(delta(4.0, 8.0, "a"), {"type": "error", "error": {"message": "decoding took too long",
                                                               "type": "server_error", "code": "decode_too_slow"}}),
     AudioDecodeError, replies.DECODE_TOO_SLOW),
    (streams({"type": "error", "error": {"message": "audio is 2000s", "code": "audio_too_long"}}),
     AudioTooLongError, replies.too_long(1800.0, 1800.0)),
    (refuses(400, "model_not_found"), VoiceBotError, replies.GENERIC_FAILURE),
], ids=["unreadable", "no-audio", "empty", "too-long", "too-big", "stream-error", "stream-too-long", "other"])
async def test_an_error_answer_is_the_domain_error_the_user_is_told_about(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
    handler: Handler, error_type: type[VoiceBotError], answer: str,
) -> None:
    endpoint = await endpoint_at(handler)
    restarts: list[int] = []
    scheduler = await scheduler_for(endpoint.url, restarts=restarts)

    with pytest.raises(error_type) as raised:
        await scheduler.transcribe(TranscriptionRequest(audio=b"12345", options=OPTIONS))

    assert replies.failure(raised.value) == answer
    assert len(endpoint.posts) == 1 and not restarts  # a refusal is not a lost worker: never retried


# -- busy, lost, cancelled -------------------------------------------------------------------


async def test_a_busy_cluster_keeps_the_job_waiting_until_it_is_accepted(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    endpoint = await endpoint_at(busy("0.1"), busy("0"), busy("not a number"), streams(done(transcription())))
    restarts: list[int] = []
    scheduler = await scheduler_for(endpoint.url, restarts=restarts)

    result = await scheduler.transcribe(TranscriptionRequest(audio=b"x", options=OPTIONS))

    assert result == transcription()
    assert len(endpoint.posts) == 4 and not restarts
    assert all(post["file"] == ("audio", b"x") for post in endpoint.posts)


async def test_a_job_the_busy_cluster_never_takes_ends_at_the_job_timeout(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    endpoint = await endpoint_at(busy("0.05"))
    scheduler = await scheduler_for(endpoint.url, job_timeout=0.5)

    with pytest.raises(VoiceBotError) as raised:
        await scheduler.transcribe(TranscriptionRequest(audio=b"x", options=OPTIONS))

    assert replies.failure(raised.value) == replies.TIMED_OUT
    assert len(endpoint.posts) >= 2


async def test_a_broken_stream_is_a_lost_worker_and_the_job_is_retried_once(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    expected = transcription("second try")
    endpoint = await endpoint_at(streams(delta(4.0, 8.0, "first"), then="abort"), streams(done(expected)))
    restarts: list[int] = []
    scheduler = await scheduler_for(endpoint.url, restarts=restarts)

    result = await scheduler.transcribe(TranscriptionRequest(audio=b"x", options=OPTIONS))

    assert result == expected
    assert len(endpoint.posts) == 2 and restarts == [1]


async def test_after_a_loss_the_slot_waits_for_the_cluster_to_come_back_however_long(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    endpoint = await endpoint_at(streams(then="abort and go down"), streams(done(transcription())))
    scheduler = await scheduler_for(endpoint.url, start_timeout=0.2)
    job = scheduler.submit(TranscriptionRequest(audio=b"x", options=OPTIONS))
    while not endpoint.down:
        await asyncio.sleep(0.01)
    checks = endpoint.health_checks
    await asyncio.sleep(1.0)  # five start timeouts: a first start would have failed three times by now
    assert endpoint.health_checks > checks and scheduler.ready_workers == 0

    endpoint.down = False

    assert await job.result() == transcription()
    assert scheduler.ready_workers == 1 and len(endpoint.posts) == 2


async def test_a_stream_that_ends_without_a_result_twice_fails_the_job(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    endpoint = await endpoint_at(streams(delta(4.0, 8.0, "first")))
    scheduler = await scheduler_for(endpoint.url)

    with pytest.raises(WorkerCrashedError):
        await scheduler.transcribe(TranscriptionRequest(audio=b"x", options=OPTIONS))
    assert len(endpoint.posts) == 2


async def test_cancel_closes_the_stream(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    endpoint = await endpoint_at(streams(delta(4.0, 60.0, "long"), then="hang"))
    scheduler = await scheduler_for(endpoint.url)
    seen: list[Progress] = []
    job = scheduler.submit(TranscriptionRequest(audio=b"x", options=OPTIONS), on_progress=seen.append)
    while not seen:
        await asyncio.sleep(0.01)

    job.cancel()

    with pytest.raises(JobCancelledError):
        await job.result()
    await asyncio.wait_for(endpoint.disconnected.wait(), 5.0)
    assert len(endpoint.posts) == 1


# -- readiness -------------------------------------------------------------------------------


async def test_slots_are_ready_once_healthz_answers(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    endpoint = await endpoint_at(streams(done(transcription())), healthy_after=4)

    scheduler = await scheduler_for(endpoint.url, slots=2)

    assert scheduler.ready_workers == 2
    assert endpoint.health_checks >= 6


async def test_the_models_that_detect_languages_are_read_from_v1_models_before_ready(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    served = await endpoint_at(api_key="s3cret", models=openai_api.model_list(("tiny", "whisper"), {"whisper"}))
    assert (await scheduler_for(served.url, api_key="s3cret")).language_detectors == {"whisper"}

    silent = await endpoint_at(models={"object": "list", "data": [{"id": "whisper", "object": "model"}]})
    assert (await scheduler_for(silent.url)).language_detectors == frozenset()  # a server that does not say

    broken = await endpoint_at(models=None)
    scheduler = await scheduler_for(broken.url)  # ready all the same: only /language's wording depends on it
    assert scheduler.ready_workers == 1 and scheduler.language_detectors == frozenset()
    assert f"could not read {broken.url}/v1/models" in caplog.text


async def test_a_model_list_the_cluster_cannot_give_yet_is_read_again_until_it_answers(
    endpoint_at: Callable[..., Awaitable[Endpoint]], scheduler_for: Callable[..., Awaitable[Scheduler]],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="bot.execution.remote.backend")
    endpoint = await endpoint_at(models=openai_api.model_list(("tiny", "whisper"), {"whisper"}), models_busy=2)

    scheduler = await scheduler_for(endpoint.url)
    assert scheduler.ready_workers == 1 and scheduler.language_detectors == frozenset()  # ready at once

    learnt = f"read {endpoint.url}/v1/models: language detection by whisper"
    async with asyncio.timeout(10):
        while learnt not in caplog.text:
            await asyncio.sleep(0.05)
    assert scheduler.language_detectors == {"whisper"} and endpoint.model_reads == 3
    assert caplog.text.count(f"could not read {endpoint.url}/v1/models") == 1  # the same problem, said once


async def test_an_unreachable_server_breaks_the_transcriber_at_start(
    scheduler_for: Callable[..., Awaitable[Scheduler]],
) -> None:
    from tests.ray_cluster import free_port

    with pytest.raises(WorkerCrashedError):
        await scheduler_for(f"http://127.0.0.1:{free_port()}", start_timeout=0.2)
