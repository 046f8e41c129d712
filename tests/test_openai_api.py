"""The OpenAI transcription convention as the cluster speaks it: form parsing, bodies, events, errors (no Ray)."""

from __future__ import annotations

import json

import pytest

from bot.asr.formats import to_srt, to_vtt
from bot.asr.types import Progress, TextOptions, Transcription, TranscriptionOptions, Word
from bot.errors import AudioDecodeError, AudioTooLongError, ExecutorOverloadedError, FileTooBigError, VoiceBotError
from bot.execution.ray import openai_api
from bot.execution.ray.openai_api import ApiError, TranscriptionForm
from bot.telegram import replies

MODEL = "facebook/wav2vec2-base-960h"
WORDS = (Word("Hello", 0.0, 0.4), Word("there", 0.5, 0.9), Word("general", 2.0, 2.5), Word("kenobi", 2.6, 3.1))
RESULT = Transcription(text="Hello there general kenobi", raw_text="HELLO THERE GENERAL KENOBI", words=WORDS,
                       duration=3.2, model=MODEL, options=TranscriptionOptions(chunk_seconds=30, stride_seconds=2.5),
                       processing_seconds=0.1, language="en")


def parse(**fields: str | list[str]) -> TranscriptionForm:
    return openai_api.parse_form({k: v if isinstance(v, list) else [v] for k, v in fields.items()}, models=(MODEL,))


def refused(**fields: str | list[str]) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(**fields)
    return caught.value


def test_defaults_follow_openai() -> None:
    form = parse()
    assert form == TranscriptionForm(TextOptions(model=MODEL), "json", frozenset({"segment"}), stream=False)
    assert parse(model="").options.model == MODEL and parse(model=MODEL).options.model == MODEL


def test_voicebot_extensions_become_text_options() -> None:
    form = parse(language="en", decoder="greedy", hotwords="kenobi, obi wan,", postprocess="sentence_case",
                 stream="true", response_format="verbose_json", **{"timestamp_granularities[]": ["word"]})
    assert form.options == TextOptions(model=MODEL, language="en", decoder="greedy",
                                       hotwords=("kenobi", "obi wan"), postprocess=("sentence_case",))
    assert form.stream and form.response_format == "verbose_json" and form.granularities == {"word"}
    assert parse(postprocess="").options.postprocess == ()  # present and empty: no steps
    assert parse().options.postprocess is None  # absent: the model's default chain


def test_a_request_names_any_served_model_and_may_restrict_detection() -> None:
    served = ("openai/whisper-small", MODEL)
    form = openai_api.parse_form({"model": [MODEL]}, models=served)
    assert form.options.model == MODEL
    assert openai_api.parse_form({}, models=served).options.model == "openai/whisper-small"
    restricted = openai_api.parse_form({"languages": ["en, ru,"]}, models=served).options
    assert (restricted.language, restricted.languages) == (None, ("en", "ru"))
    with pytest.raises(ApiError) as caught:
        openai_api.parse_form({"model": ["whisper-1"]}, models=served)
    assert caught.value.code == "model_not_found"
    assert all(repr(name) in caught.value.message for name in served)
    assert openai_api.model_list(served, {"openai/whisper-small"}) == {"object": "list", "data": [
        {"id": "openai/whisper-small", "object": "model", "owned_by": "voicebot", "x_voicebot": {"detects_language": True}},
        {"id": MODEL, "object": "model", "owned_by": "voicebot", "x_voicebot": {"detects_language": False}}]}


@pytest.mark.parametrize(("fields", "param", "code"), [
    ({"model": "whisper-1"}, "model", "model_not_found"),
    ({"response_format": "docx"}, "response_format", "unsupported_format"),
    ({"timestamp_granularities[]": ["char"]}, "timestamp_granularities[]", "invalid_value"),
    ({"stream": "yes"}, "stream", "invalid_value"),
])
def test_bad_fields_name_the_field(fields: dict[str, str | list[str]], param: str, code: str) -> None:
    error = refused(**fields)
    assert (error.status, error.param, error.code, error.type) == (400, param, code, "invalid_request_error")
    assert error.body() == {"error": {"message": error.message, "type": "invalid_request_error", "param": param,
                                      "code": code}}


def test_upload_checks() -> None:
    for size, status, code in [(None, 400, "missing_file"), (0, 400, "empty_file"),
                               (21 * 2**20, 413, "file_too_large")]:
        with pytest.raises(ApiError) as caught:
            openai_api.check_upload(size, max_file_mb=20)
        assert (caught.value.status, caught.value.code) == (status, code)
    openai_api.check_upload(20 * 2**20, max_file_mb=20)
    assert "21 MB" in caught.value.message and "20 MB" in caught.value.message


def test_bearer_token() -> None:
    openai_api.check_token(None, None)
    openai_api.check_token("Bearer k3y", "k3y")
    openai_api.check_token("bearer k3y", "k3y")
    for header in (None, "", "Bearer", "Bearer other", "k3y", "Basic k3y"):
        with pytest.raises(ApiError) as caught:
            openai_api.check_token(header, "k3y")
        assert caught.value.status == 401 and caught.value.code == "unauthorized"
        assert caught.value.headers == {"WWW-Authenticate": "Bearer"}


@pytest.mark.parametrize(("error", "status", "code"), [
    (AudioDecodeError("x"), 400, "unreadable_audio"),
    (AudioDecodeError("x", problem="no_audio"), 400, "no_audio_track"),
    (AudioDecodeError("x", problem="too_slow"), 400, "decode_too_slow"),
    (AudioTooLongError(4000, 1800), 400, "audio_too_long"),
    (FileTooBigError(30 * 2**20, 20), 413, "file_too_large"),
    (ExecutorOverloadedError(7), 503, "busy"),
    (VoiceBotError("boom"), 500, "server_error"),
])
def test_domain_errors_keep_the_bots_words(error: VoiceBotError, status: int, code: str) -> None:
    answer = openai_api.error_for(error)
    assert (answer.status, answer.code) == (status, code)
    assert answer.message == replies.failure(error)
    assert answer.type == ("invalid_request_error" if status < 500 else "server_error")
    if status == 503:
        assert answer.headers == {"Retry-After": "7"}
    assert answer.event() == {"type": "error", "error": {"message": answer.message, "type": answer.type,
                                                         "code": code}}


def test_invalid_option_is_a_sentence() -> None:
    error = openai_api.invalid_option("unknown decoder 'beam'; the CTC decoders are: greedy")
    assert error.status == 400 and error.message == "Unknown decoder 'beam'; the CTC decoders are: greedy."


def test_response_formats() -> None:
    def render(fmt: str, *granularities: str) -> tuple[str, str]:
        return openai_api.render(RESULT, TranscriptionForm(TextOptions(model=MODEL), fmt,
                                                           frozenset(granularities or {"segment"})))

    assert render("json") == (json.dumps({"text": RESULT.text}), "application/json")
    assert render("text") == (RESULT.text, "text/plain; charset=utf-8")
    assert render("srt")[0] == to_srt(WORDS) and render("vtt")[0] == to_vtt(WORDS)
    verbose = json.loads(render("verbose_json")[0])
    assert verbose["task"] == "transcribe" and verbose["language"] == "en" and verbose["duration"] == 3.2
    assert verbose["segments"] == [{"id": 0, "start": 0.0, "end": 0.9, "text": "Hello there"},
                                   {"id": 1, "start": 2.0, "end": 3.1, "text": "general kenobi"}]
    assert "words" not in verbose
    assert Transcription.from_dict(verbose["x_voicebot"]) == RESULT
    words = json.loads(render("verbose_json", "word")[0])["words"]
    assert words[0] == {"word": "Hello", "start": 0.0, "end": 0.4} and len(words) == 4


def test_stream_events() -> None:
    first = openai_api.delta_event(Progress(1.5, 3.2, "Hello there"), "")
    second = openai_api.delta_event(Progress(3.2, 3.2, "Hello there general kenobi"), "Hello there")
    assert first == {"type": "transcript.text.delta", "delta": "Hello there",
                     "x_progress": {"done_seconds": 1.5, "total_seconds": 3.2, "partial_text": "Hello there"}}
    assert second["delta"] == " general kenobi"
    done = openai_api.done_event(RESULT)
    assert done["type"] == "transcript.text.done" and done["text"] == RESULT.text
    assert openai_api.sse(done) == b"data: " + json.dumps(done).encode() + b"\n\n"
