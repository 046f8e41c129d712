"""Domain errors shared by the audio, engine, executor and bot layers.

Each carries a `user_message` fit to show in a chat: the bot answers with it as is,
so the wording here is what people read.
"""

from __future__ import annotations


class VoiceBotError(Exception):
    """Base class: a failure the bot explains to the user instead of crashing."""

    user_message = "Sorry, something went wrong while transcribing this file."

    def __init__(self, detail: str = "", *, user_message: str | None = None) -> None:
        super().__init__(detail or user_message or self.user_message)
        if user_message is not None:
            self.user_message = user_message

    def __reduce__(self) -> tuple[object, ...]:
        """Pickle by state, so errors raised in a worker process arrive intact in the bot."""
        return (_restore, (type(self), str(self), self.__dict__))


def _restore(cls: type[VoiceBotError], detail: str, state: dict[str, object]) -> VoiceBotError:
    error = cls.__new__(cls)
    Exception.__init__(error, detail)
    error.__dict__.update(state)
    return error


class AudioDecodeError(VoiceBotError):
    """The file is corrupt, empty, not audio, or cannot be decoded safely."""

    user_message = "I couldn't read any audio in this file. Is it a valid voice note, audio or video file?"


class AudioTooLongError(AudioDecodeError):
    """The audio is longer than MAX_AUDIO_SECONDS."""

    def __init__(self, duration: float, limit: float) -> None:
        self.duration = duration
        self.limit = limit
        # When decoding was cut off at the limit, the real length is unknown: say "longer than".
        length = f"({format_duration(duration)})" if duration > limit + 1 else f"(over {format_duration(limit)})"
        super().__init__(
            f"audio is {duration:.0f}s, limit {limit:.0f}s",
            user_message=f"This recording is too long {length}; I transcribe up to {format_duration(limit)}.",
        )


class FFmpegMissingError(VoiceBotError):
    """ffmpeg/ffprobe are not installed: a start-up error, not a per-request one."""

    user_message = "The transcription service is misconfigured (ffmpeg is missing)."


class ModelLoadError(VoiceBotError):
    """The configured ASR_MODEL could not be loaded."""

    user_message = "The speech model could not be loaded."


class ExecutorOverloadedError(VoiceBotError):
    """The job queue is full."""

    def __init__(self, retry_after: float = 30.0) -> None:
        self.retry_after = retry_after
        super().__init__(
            "queue full",
            user_message=f"I'm busy right now. Please try again in {max(1, round(retry_after))} s.",
        )


class JobCancelledError(VoiceBotError):
    """The requester cancelled the job."""

    user_message = "Transcription cancelled."


class JobTimeoutError(VoiceBotError):
    """The job ran past ASR_JOB_TIMEOUT_SECONDS."""

    user_message = "This transcription took too long and was stopped. Please try a shorter recording."


class WorkerCrashedError(VoiceBotError):
    """A worker process died on this job twice (killed, out of memory)."""

    user_message = "The transcription worker failed on this file. Please try again later."


def format_duration(seconds: float) -> str:
    """`42` -> `0:42`, `3725` -> `1:02:05`: how durations are shown in chats."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
