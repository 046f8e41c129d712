"""What the bot needs from an execution backend: torch-free, so the Telegram side never imports torch.

A `TranscriptionRequest` is small and picklable: the audio (the file's bytes as downloaded,
or, for backends on the same machine only, a path) and the `TextOptions` that change the
text. Whatever runs it answers with a `Transcription` that echoes those options.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.asr.types import Progress, TextOptions, Transcription

ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class TranscriptionRequest:
    """One file to transcribe, and how."""

    audio: bytes | Path
    options: TextOptions

    def __post_init__(self) -> None:
        if not isinstance(self.audio, bytes | Path):
            raise TypeError(f"audio must be bytes or a Path, not {type(self.audio).__name__}")


class TranscriptionJob(Protocol):
    """A submitted job: await `result()`, ask its `position()`, or `cancel()` it."""

    @property
    def id(self) -> int: ...

    def position(self) -> int | None: ...

    def cancel(self) -> None: ...

    async def result(self) -> Transcription: ...


class Transcriber(Protocol):
    """A model executor as the bot sees it, whatever backend runs the model."""

    async def start(self) -> None: ...

    def submit(
        self, request: TranscriptionRequest, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> TranscriptionJob: ...

    async def transcribe(
        self, request: TranscriptionRequest, *, owner: int = 0, on_progress: ProgressCallback | None = None
    ) -> Transcription: ...

    @property
    def ready_workers(self) -> int: ...

    @property
    def queue_depth(self) -> int: ...

    @property
    def language_detectors(self) -> frozenset[str]:
        """The models that detect a request's language when it fixes none (Whisper); any other model
        transcribes such a request as it is. Known once `start` has returned."""
        ...

    async def shutdown(self, *, grace: float = 0.0) -> None: ...
