"""Plain result types returned by the engine and passed across process boundaries.

Like faster-whisper's `Segment`/`TranscriptionInfo`, results are frozen dataclasses
that echo the options used, so a stored transcript says how it was made.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True)
class Word:
    """One word with its start and end time in seconds, from the CTC frames."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class TranscriptionOptions:
    """The options a transcription ran with."""

    chunk_seconds: float
    stride_seconds: float
    device: str = "cpu"
    compute_type: str = "float32"
    batch_size: int = 1
    #: "tuned" or "stock" CPU forward paths (`bot.asr.cpu_kernels`); "stock" on a GPU.
    cpu_kernels: str = "stock"


@dataclass(frozen=True)
class Transcription:
    """A finished transcription.

    `text` is for people (sentence case); `raw_text` is exactly what the model emitted.
    """

    text: str
    raw_text: str
    words: tuple[Word, ...]
    duration: float
    model: str
    options: TranscriptionOptions
    processing_seconds: float
    decode_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def real_time_factor(self) -> float:
        """Model time divided by audio duration (lower is faster)."""
        return self.processing_seconds / self.duration if self.duration > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI `--json`, exports, storage)."""
        data = asdict(self)
        data["real_time_factor"] = self.real_time_factor
        return data


@dataclass(frozen=True)
class Progress:
    """Reported while a long file is transcribed: how far, and the text so far."""

    done_seconds: float
    total_seconds: float
    partial_text: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_seconds / self.total_seconds) if self.total_seconds > 0 else 1.0
