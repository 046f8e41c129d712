"""OpenAI's `POST /v1/audio/transcriptions` convention: request fields in, response bodies, events and errors out.

Pure functions over plain values (no Ray, no HTTP server), so every answer the cluster gives
can be tested on its own. Field names, response formats and error bodies follow OpenAI's
API, so OpenAI-compatible clients and `curl` work unchanged; voicebot's own additions are the
`decoder`, `hotwords`, `postprocess` and `languages` fields and the `x_voicebot` / `x_progress` members.
The sentences of error messages are the bot's own (`bot.telegram.replies.failure`).
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from bot.asr.formats import build_cues, to_srt, to_vtt
from bot.asr.types import Progress, TextOptions, Transcription
from bot.errors import AudioDecodeError, AudioTooLongError, ExecutorOverloadedError, FileTooBigError, VoiceBotError
from bot.telegram.replies import failure

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("word", "segment")
ErrorType = Literal["invalid_request_error", "server_error"]
_DECODE_CODES = {"unreadable": "unreadable_audio", "no_audio": "no_audio_track", "too_slow": "decode_too_slow"}


@dataclass(frozen=True)
class ApiError(Exception):
    """A request the endpoint refuses: its HTTP status and OpenAI-style error body."""

    status: int
    message: str
    code: str
    type: ErrorType = "invalid_request_error"
    param: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def event(self) -> dict[str, Any]:
        """The same error as the last event of a stream that had already begun."""
        return {"type": "error", "error": {"message": self.message, "type": self.type, "code": self.code}}


@dataclass(frozen=True)
class TranscriptionForm:
    """What one request asks for, checked."""

    options: TextOptions
    response_format: str = "json"
    granularities: frozenset[str] = frozenset({"segment"})
    stream: bool = False


def parse_form(fields: Mapping[str, Sequence[str]], *, models: Sequence[str]) -> TranscriptionForm:
    """The request's non-file fields (each name with its values, as multipart carries them), checked.

    `models` are the models this cluster runs, the one for every language (`*`) first: a
    request names one of them, or leaves `model` empty for the first (OpenAI's clients always
    send one, so the cluster's own keys are the only accepted names). `languages`
    (comma-separated, with no `language`) restricts detection to those languages. Decoder,
    post-processing step and language names are checked by the recognizer, before any audio runs.
    """
    def one(name: str, default: str = "") -> str:
        values = fields.get(name) or [default]
        return values[-1].strip()

    asked_model = one("model") or models[0]
    if asked_model not in models:
        raise ApiError(400, f"Unknown model {asked_model!r}: this server runs {', '.join(map(repr, models))}.",
                       "model_not_found", param="model")
    response_format = one("response_format", "json") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(400, f"Unknown response_format {response_format!r}; use one of: {', '.join(RESPONSE_FORMATS)}.",
                       "unsupported_format", param="response_format")
    granularities = frozenset(value.strip() for value in fields.get("timestamp_granularities[]", []) if value.strip())
    unknown = sorted(granularities - set(GRANULARITIES))
    if unknown:
        raise ApiError(400, f"Unknown timestamp granularity {unknown[0]!r}; use word and/or segment.",
                       "invalid_value", param="timestamp_granularities[]")
    stream = one("stream", "false").lower()
    if stream not in ("true", "false"):
        raise ApiError(400, f"stream must be true or false, not {stream!r}.", "invalid_value", param="stream")
    postprocess = one("postprocess") if "postprocess" in fields else None
    options = TextOptions(
        model=asked_model,
        language=one("language") or None,
        languages=_names(one("languages")),
        decoder=one("decoder", "greedy") or "greedy",
        hotwords=_names(one("hotwords")),
        postprocess=None if postprocess is None else _names(postprocess),
    )
    return TranscriptionForm(options, response_format, granularities or frozenset({"segment"}), stream == "true")


def _names(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def check_upload(size: int | None, *, max_file_mb: float) -> None:
    """Refuse a missing, empty or oversized `file` before anything decodes it."""
    if size is None:
        raise ApiError(400, "The request has no file: send the audio as the multipart field `file`.",
                       "missing_file", param="file")
    if size == 0:
        raise ApiError(400, "The file is empty: there is no audio to transcribe.", "empty_file", param="file")
    if size > max_file_mb * 2**20:
        raise error_for(FileTooBigError(size, max_file_mb))


def check_token(authorization: str | None, api_key: str | None) -> None:
    """With an API key configured, the request must carry `Authorization: Bearer <key>`."""
    if api_key is None:
        return
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), api_key.encode()):
        raise ApiError(401, "Missing or wrong API key: send `Authorization: Bearer <ASR_API_KEY>`.", "unauthorized",
                       headers={"WWW-Authenticate": "Bearer"})


def busy(retry_after: float) -> ApiError:
    """Every replica is busy and the queue is full: come back later."""
    return error_for(ExecutorOverloadedError(retry_after))


def invalid_option(detail: str) -> ApiError:
    """A decoder or post-processing step the recognizer does not have (its own sentence names them)."""
    return ApiError(400, detail[:1].upper() + detail[1:] + ".", "invalid_option")


def error_for(error: VoiceBotError) -> ApiError:
    """The HTTP answer to a domain error, in the words the bot uses for it."""
    message = failure(error)
    match error:
        case AudioTooLongError():
            return ApiError(400, message, "audio_too_long", param="file")
        case AudioDecodeError(problem=problem):
            return ApiError(400, message, _DECODE_CODES.get(problem, "unreadable_audio"), param="file")
        case FileTooBigError():
            return ApiError(413, message, "file_too_large", param="file")
        case ExecutorOverloadedError(retry_after=wait):
            return ApiError(503, message, "busy", type="server_error",
                            headers={"Retry-After": str(max(1, round(wait)))})
    return ApiError(500, message, "server_error", type="server_error")


def render(result: Transcription, form: TranscriptionForm) -> tuple[str, str]:
    """The body and media type of a finished transcription in the requested `response_format`."""
    match form.response_format:
        case "text":
            return result.text, "text/plain; charset=utf-8"
        case "srt":
            return to_srt(result.words), "application/x-subrip; charset=utf-8"
        case "vtt":
            return to_vtt(result.words), "text/vtt; charset=utf-8"
        case "verbose_json":
            return json.dumps(verbose_json(result, words="word" in form.granularities)), "application/json"
    return json.dumps({"text": result.text}), "application/json"


def verbose_json(result: Transcription, *, words: bool) -> dict[str, Any]:
    """OpenAI's verbose form: segments are the subtitle cues; words only when asked for."""
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": result.language,
        "duration": result.duration,
        "text": result.text,
        "segments": [{"id": index, "start": cue.start, "end": cue.end, "text": cue.text}
                     for index, cue in enumerate(build_cues(result.words))],
    }
    if words:
        body["words"] = [{"word": word.word, "start": word.start, "end": word.end} for word in result.words]
    body["x_voicebot"] = result.to_dict()
    return body


def model_list(models: Sequence[str], detectors: Collection[str]) -> dict[str, Any]:
    """`GET /v1/models`: the models a request may name, as OpenAI lists them, and in each one's `x_voicebot`
    whether it detects the language of a request that names none (`detectors`)."""
    return {"object": "list", "data": [
        {"id": name, "object": "model", "owned_by": "voicebot",
         "x_voicebot": {"detects_language": name in detectors}} for name in models]}


def delta_event(progress: Progress, previous_text: str) -> dict[str, Any]:
    """A chunk done: the text added since the previous event, and how far the job is."""
    text = progress.partial_text
    delta = text[len(previous_text):] if text.startswith(previous_text) else text
    return {
        "type": "transcript.text.delta",
        "delta": delta,
        "x_progress": {"done_seconds": progress.done_seconds, "total_seconds": progress.total_seconds,
                       "partial_text": text},
    }


def done_event(result: Transcription) -> dict[str, Any]:
    return {"type": "transcript.text.done", "text": result.text, "x_voicebot": result.to_dict()}


def sse(event: Mapping[str, Any]) -> bytes:
    """One server-sent event."""
    return f"data: {json.dumps(event)}\n\n".encode()
