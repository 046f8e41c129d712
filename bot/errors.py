"""Domain errors shared by the audio, engine, execution and bot layers.

They say what went wrong, with the facts an answer needs (a length, a limit, a wait), and
never how to say it to a person: `bot.telegram.replies.failure` turns them into the words a
chat shows. They pickle by state, so an error raised in a worker process arrives whole.
"""

from __future__ import annotations

from typing import Literal


class VoiceBotError(Exception):
    """Base class: a failure the bot explains to the user instead of crashing."""

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle by state, so errors raised in a worker process arrive intact in the bot."""
        return (_restore, (type(self), str(self), self.__dict__))


def _restore(cls: type[VoiceBotError], detail: str, state: dict[str, object]) -> VoiceBotError:
    error = cls.__new__(cls)
    Exception.__init__(error, detail)
    error.__dict__.update(state)
    return error


#: Why a file could not be decoded: not audio at all (or damaged), a container without an
#: audio stream, or a decode that ran out of time.
DecodeProblem = Literal["unreadable", "no_audio", "too_slow"]


class AudioDecodeError(VoiceBotError):
    """The file is corrupt, empty, not audio, or cannot be decoded safely."""

    def __init__(self, detail: str = "", *, problem: DecodeProblem = "unreadable") -> None:
        super().__init__(detail or problem)
        self.problem = problem


class AudioTooLongError(AudioDecodeError):
    """The audio is longer than MAX_AUDIO_SECONDS (`duration` is past `limit` when decoding was cut off)."""

    def __init__(self, duration: float, limit: float) -> None:
        super().__init__(f"audio is {duration:.0f}s, limit {limit:.0f}s")
        self.duration = duration
        self.limit = limit


class FileTooBigError(VoiceBotError):
    """The file is larger than MAX_FILE_MB (or than the Bot API lets a bot download)."""

    def __init__(self, size_bytes: int, limit_mb: float) -> None:
        super().__init__(f"file is {size_bytes} bytes, limit {limit_mb:g} MB")
        self.size_bytes = size_bytes
        self.limit_mb = limit_mb


class RateLimitedError(VoiceBotError):
    """The user has too many files in flight or sent too many this minute."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"user rate limit, retry after {retry_after:.0f}s")
        self.retry_after = retry_after


class FFmpegMissingError(VoiceBotError):
    """ffmpeg/ffprobe are not installed: a start-up error, not a per-request one."""


class ModelLoadError(VoiceBotError):
    """The configured ASR_MODEL could not be loaded."""


class WorkerStartError(VoiceBotError):
    """The model worker processes cannot be started as this machine is set up: a start-up error."""


class ExecutorOverloadedError(VoiceBotError):
    """The job queue is full."""

    def __init__(self, retry_after: float = 30.0) -> None:
        super().__init__("queue full")
        self.retry_after = retry_after


class JobCancelledError(VoiceBotError):
    """The requester cancelled the job (or the bot is shutting down)."""


class JobTimeoutError(VoiceBotError):
    """The job ran past ASR_JOB_TIMEOUT_SECONDS."""


class WorkerCrashedError(VoiceBotError):
    """A worker process died on this job twice (killed, out of memory)."""
