"""The Ray Serve application on a real local Ray cluster: OpenAI's transcription endpoint over real HTTP.

One cluster for the session (tests/ray_cluster.py); the tiny model; loopback only. Transcripts
are compared with the local recognizer's on the same files, decoded the same way.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.asr.formats import build_cues, to_srt, to_vtt
from bot.asr.recognizer import Recognizer
from bot.asr.types import TextOptions, Transcription
from bot.audio.decode import decode_audio
from tests.media import ffmpeg, looped
from tests.ray_cluster import RayServe

pytest.importorskip("ray")

ENDPOINT = "/v1/audio/transcriptions"


def local(recognizer: Recognizer, path: Path) -> Transcription:
    """What the local recognizer makes of a file, decoded as a worker decodes it."""
    return recognizer.transcribe(decode_audio(path, max_seconds=1800), TextOptions(model=recognizer.model_name))


def post(url: str, data: bytes, fields: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
    return httpx.post(url + ENDPOINT, files={"file": ("audio", data)}, data=fields or {}, timeout=120, **kwargs)


def events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    for line in response.iter_lines():
        if line.startswith("data: "):
            yield json.loads(line[len("data: "):])


@pytest.fixture(scope="session")
def very_long_ogg(speech_ogg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty minutes of speech (300 chunks): a job that is still running when a test acts on it."""
    path = tmp_path_factory.mktemp("ray-media") / "very-long.ogg"
    looped(speech_ogg, path, 241, "-c:a", "libopus", "-b:a", "8k")
    return path


@pytest.fixture(scope="session")
def speech_mp4(speech_ogg: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ray-media") / "speech.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=10", "-i", str(speech_ogg), "-shortest",
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", str(path))
    return path


@pytest.mark.parametrize("media", ["speech_ogg", "long_ogg", "speech_mp4"])
def test_same_transcript_as_the_local_recognizer(asr_server: str, recognizer: Recognizer, media: str,
                                                 request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(media)
    expected = local(recognizer, path)
    response = post(asr_server, path.read_bytes(), {"response_format": "verbose_json"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["text"] == expected.text and expected.text
    assert body["x_voicebot"]["raw_text"] == expected.raw_text
    assert int(response.headers["x-voicebot-replica-pid"]) > 0


def test_each_response_format(asr_server: str, recognizer: Recognizer, speech_ogg: Path) -> None:
    expected = local(recognizer, speech_ogg)
    audio = speech_ogg.read_bytes()

    assert post(asr_server, audio).json() == {"text": expected.text}
    assert post(asr_server, audio, {"model": recognizer.model_name}).json() == {"text": expected.text}
    text = post(asr_server, audio, {"response_format": "text"})
    assert text.headers["content-type"].startswith("text/plain") and text.text == expected.text
    assert post(asr_server, audio, {"response_format": "srt"}).text == to_srt(expected.words)
    vtt = post(asr_server, audio, {"response_format": "vtt"})
    assert vtt.headers["content-type"].startswith("text/vtt") and vtt.text == to_vtt(expected.words)

    verbose = post(asr_server, audio, {"response_format": "verbose_json"}).json()
    assert verbose["task"] == "transcribe" and "words" not in verbose
    assert verbose["duration"] == pytest.approx(expected.duration)
    assert [segment["text"] for segment in verbose["segments"]] == [cue.text for cue in build_cues(expected.words)]
    assert [segment["id"] for segment in verbose["segments"]] == list(range(len(verbose["segments"])))
    with_words = post(asr_server, audio, {"response_format": "verbose_json",
                                          "timestamp_granularities[]": ["word", "segment"]}).json()
    assert [w["word"] for w in with_words["words"]] == [w.word for w in expected.words]
    assert Transcription.from_dict(with_words["x_voicebot"]).words == expected.words


def test_stream_sends_a_delta_per_chunk_then_done(asr_server: str, recognizer: Recognizer, long_ogg: Path) -> None:
    expected = local(recognizer, long_ogg)
    with httpx.stream("POST", asr_server + ENDPOINT, files={"file": ("a.ogg", long_ogg.read_bytes())},
                      data={"stream": "true", "response_format": "srt"}, timeout=120) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        received = list(events(response))
    *deltas, done = received
    assert [event["type"] for event in deltas] == ["transcript.text.delta"] * len(deltas)
    chunks = len(decode_audio(long_ogg, max_seconds=1800)) / 16000 / 4.0
    assert len(deltas) >= chunks - 1
    done_seconds = [event["x_progress"]["done_seconds"] for event in deltas]
    assert done_seconds == sorted(done_seconds) and done_seconds[-1] == pytest.approx(expected.duration, abs=0.1)
    assert "".join(event["delta"] for event in deltas) == deltas[-1]["x_progress"]["partial_text"]
    assert done["type"] == "transcript.text.done" and done["text"] == expected.text
    assert Transcription.from_dict(done["x_voicebot"]).words == expected.words


@pytest.mark.parametrize(("data", "fields", "status", "code"), [
    (b"", {}, 400, "empty_file"),
    (os.urandom(50_000), {}, 400, "unreadable_audio"),
    (b"Dear team,\nplease find the minutes attached.\n" * 200, {}, 400, "unreadable_audio"),
    (None, {}, 400, "missing_file"),
    (b"OggS", {"response_format": "docx"}, 400, "unsupported_format"),
    (b"OggS", {"model": "openai/whisper-large-v3"}, 400, "model_not_found"),
    (b"OggS", {"stream": "maybe"}, 400, "invalid_value"),
], ids=["empty", "random-bytes", "text-file", "no-file", "bad-format", "unknown-model", "bad-stream"])
def test_bad_input_gets_a_clear_json_error(asr_server: str, data: bytes | None, fields: dict[str, str],
                                           status: int, code: str) -> None:
    if data is None:
        response = httpx.post(asr_server + ENDPOINT, data={"model": ""}, files={"other": ("x", b"1")}, timeout=60)
    else:
        response = post(asr_server, data, fields)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["code"] == code and error["type"] == "invalid_request_error"
    assert error["message"].endswith((".", "?")) and len(error["message"]) > 20


def test_image_and_options_the_model_lacks_are_refused(asr_server: str, speech_ogg: Path, tmp_path: Path) -> None:
    image = tmp_path / "photo.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1", str(image))
    response = post(asr_server, image.read_bytes())
    assert response.status_code == 400 and response.json()["error"]["code"] in ("no_audio_track", "unreadable_audio")
    for fields in ({"decoder": "beam"}, {"postprocess": "sentence_case,shout"}):
        refused = post(asr_server, speech_ogg.read_bytes(), {**fields, "stream": "true"})
        assert refused.status_code == 400 and refused.json()["error"]["code"] == "invalid_option"
        assert refused.headers["content-type"] == "application/json"


def test_oversize_upload_is_413_and_the_server_stays_healthy(asr_server: str, speech_ogg: Path) -> None:
    response = post(asr_server, b"\0" * (21 * 2**20))
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "file_too_large"
    assert httpx.get(asr_server + "/healthz", timeout=30).text == "ok"
    assert post(asr_server, speech_ogg.read_bytes()).status_code == 200


async def test_token_queue_full_and_cancel(ray_serve: RayServe, very_long_ogg: Path, speech_ogg: Path) -> None:
    """One application for three behaviours (each replica loads the model: one load, not three): the
    bearer token, 503 once the queue is full, and a closed stream stopping its job within a chunk.
    Its 1 s chunks make the twenty-minute file a long job even for the tiny model."""
    url = ray_serve.deploy("guarded", asr_api_key="s3cret", asr_max_ongoing_requests=1, asr_max_queued_requests=1,
                           asr_chunk_seconds=1.0, asr_stride_seconds=0.25)
    auth = {"Authorization": "Bearer s3cret"}
    note = {"file": ("note.ogg", speech_ogg.read_bytes())}
    try:
        async with httpx.AsyncClient(base_url=url, timeout=120) as client:
            for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
                refused = await client.post(ENDPOINT, files=note, headers=headers)
                assert refused.status_code == 401 and refused.json()["error"]["code"] == "unauthorized"
            assert (await client.post(ENDPOINT, files=note, headers=auth)).status_code == 200
            before = (await client.get("/v1/voicebot/stats", headers=auth)).json()

            async with client.stream("POST", ENDPOINT, files={"file": ("long.ogg", very_long_ogg.read_bytes())},
                                     data={"stream": "true"}, headers=auth) as stream:
                seen = 0
                lines = stream.aiter_lines()  # held: an abandoned iterator closes the stream when collected
                async for line in lines:
                    seen += line.startswith("data: ")
                    if seen == 3:
                        break
                # The replica is busy with that job: one more request waits in Serve's queue, the next is refused.
                queued = asyncio.create_task(client.post(ENDPOINT, files=note, headers=auth))
                await asyncio.sleep(1.0)
                busy = await client.post(ENDPOINT, files=note, headers=auth)
                assert busy.status_code == 503, busy.text
                assert busy.json()["error"]["code"] == "busy" and int(busy.headers["retry-after"]) >= 1
                assert (await client.get("/healthz")).text == "ok"  # health never waits for a model
                asked = await client.get("/v1/voicebot/stats", headers=auth)  # asked of a replica: the same 503
                assert asked.status_code == 503 and asked.json()["error"]["code"] == "busy", asked.text
                listed = await client.get("/v1/models", headers=auth)  # learnt at start-up: answered all the same
                assert listed.status_code == 200, listed.text
                assert [model["x_voicebot"] for model in listed.json()["data"]] == [{"detects_language": False}]
                assert not queued.done()
            # the long job's stream is closed: it stops, and the queued request is answered
            assert (await asyncio.wait_for(queued, 60)).status_code == 200
            after = (await client.get("/v1/voicebot/stats", headers=auth)).json()
        assert after["pid"] == before["pid"] and after["running"] == 0
        assert after["cancelled"] == before["cancelled"] + 1
        total_chunks = len(decode_audio(very_long_ogg, max_seconds=1800)) / 16000
        ran = after["chunks_run"] - before["chunks_run"] - 1  # the queued note is one chunk... or a few
        assert seen <= ran < total_chunks / 2, (seen, ran, total_chunks)
    finally:
        ray_serve.delete("guarded")
