"""What one job looks like on the wire: the multipart form of `POST /v1/audio/transcriptions`.

The audio goes as the file's bytes as downloaded (compressed), never as a path: the cluster
shares no disk with the bot. The bot always asks for a stream of `verbose_json` events, so it
gets progress while the job runs and, at the end, the whole `Transcription` (`x_voicebot`).
Of `GET /v1/models` it reads which models detect languages (each entry's `x_voicebot`).
"""

from __future__ import annotations

import aiohttp

from bot.asr.types import TextOptions

TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
HEALTH_PATH = "/healthz"
MODELS_PATH = "/v1/models"


def transcription_form(audio: bytes, options: TextOptions, *, filename: str = "audio") -> aiohttp.FormData:
    """The form for one job: the audio, every text option, and a streamed verbose answer."""
    form = aiohttp.FormData()
    form.add_field("file", audio, filename=filename, content_type="application/octet-stream")
    form.add_field("model", options.model)
    if options.language is not None:
        form.add_field("language", options.language)
    if options.languages:  # detection restricted to these
        form.add_field("languages", ",".join(options.languages))
    form.add_field("response_format", "verbose_json")
    form.add_field("timestamp_granularities[]", "word")
    form.add_field("timestamp_granularities[]", "segment")
    form.add_field("stream", "true")
    form.add_field("decoder", options.decoder)
    if options.hotwords:
        form.add_field("hotwords", ",".join(options.hotwords))
    if options.postprocess is not None:  # absent: the model's default chain; empty: no steps
        form.add_field("postprocess", ",".join(options.postprocess))
    return form


def auth_headers(api_key: str | None) -> dict[str, str]:
    """The bearer token header, when the endpoint wants one."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def language_detectors(model_list: object) -> frozenset[str]:
    """The models of a `GET /v1/models` answer whose `x_voicebot.detects_language` is true; an answer
    of another shape (a server that does not say) names none."""
    entries = model_list.get("data") if isinstance(model_list, dict) else None
    if not isinstance(entries, list):
        return frozenset()
    return frozenset(entry["id"] for entry in entries
                     if isinstance(entry, dict) and isinstance(entry.get("id"), str)
                     and isinstance(entry.get("x_voicebot"), dict) and entry["x_voicebot"].get("detects_language") is True)
