"""The endpoint's error objects (`{"message", "type", "param", "code"}`) turned back into the bot's domain errors.

The cluster decodes and transcribes with the same code as a local worker, so a bad file gets
the same fact, and the user the same answer, whichever backend ran it.
"""

from __future__ import annotations

from typing import Any

from bot.errors import (
    AudioDecodeError,
    AudioTooLongError,
    DecodeProblem,
    FileTooBigError,
    VoiceBotError,
)

_DECODE_PROBLEMS: dict[str, DecodeProblem] = {
    "unreadable_audio": "unreadable",
    "empty_file": "unreadable",
    "unsupported_format": "unreadable",
    "no_audio_track": "no_audio",
    "decode_too_slow": "too_slow",
}


def domain_error(
    error: Any, *, audio_bytes: int, max_audio_seconds: float, max_file_mb: float
) -> VoiceBotError:
    """The domain error an endpoint error object stands for.

    Facts the object lacks (how long the audio was) fall back to the bot's own limits,
    which the cluster shares in a normal deployment.
    """
    fields = error if isinstance(error, dict) else {}
    code = str(fields.get("code") or "")
    message = str(fields.get("message") or code or "transcription server error")
    if code == "audio_too_long":
        limit = _number(fields.get("x_limit"), max_audio_seconds)
        return AudioTooLongError(_number(fields.get("x_duration"), limit), limit)
    if code == "file_too_large":
        return FileTooBigError(audio_bytes, _number(fields.get("x_limit_mb"), max_file_mb))
    if code in _DECODE_PROBLEMS:
        return AudioDecodeError(message, problem=_DECODE_PROBLEMS[code])
    return VoiceBotError(f"transcription server: {code or 'error'}: {message}")


def _number(value: object, default: float) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
