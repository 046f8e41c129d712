"""Plain result types returned by the engine and passed across process boundaries.

Like faster-whisper's `Segment`/`TranscriptionInfo`, results are frozen dataclasses
that echo the options used, so a stored transcript says how it was made.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Word:
    """One word with its start and end time in seconds, from the model's output frames."""

    word: str
    start: float
    end: float


@dataclass(frozen=True)
class TimedText:
    """A text and its timed words: what a decoder emits and what each post-processing step maps.

    Steps change both together, so a subtitle built from the words reads like the text.
    """

    text: str
    words: tuple[Word, ...]


@dataclass(frozen=True)
class TextOptions:
    """The options that change the text: what a request asks for and the cache is keyed on.

    `model` is the model key (`ASR_MODEL`, or a routed model); `language` None means the
    model's default (or detection, for models that detect); `postprocess` None means the
    recognizer's own default chain (sentence case for CTC models that emit bare capitals,
    nothing for models that punctuate and case themselves).
    """

    model: str
    language: str | None = None
    decoder: str = "greedy"
    hotwords: tuple[str, ...] = ()
    postprocess: tuple[str, ...] | None = None
    #: With `language` None: detect, but only among these (empty: any language the model knows).
    languages: tuple[str, ...] = ()

    def cache_key(self) -> str:
        """A stable string of every option: two requests with the same key give the same text."""
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class TranscriptionOptions:
    """The options a transcription ran with (echoed in every result)."""

    chunk_seconds: float
    stride_seconds: float
    device: str = "cpu"
    compute_type: str = "float32"
    batch_size: int = 1
    #: "tuned" or "stock" CPU forward paths (`bot.asr.ctc.cpu_kernels`); "stock" on a GPU.
    cpu_kernels: str = "stock"
    language: str | None = None
    decoder: str = "greedy"
    hotwords: tuple[str, ...] = ()
    #: The post-processing steps that were applied, in order (resolved, never None).
    postprocess: tuple[str, ...] = ()


@dataclass(frozen=True)
class Transcription:
    """A finished transcription.

    `text` and `words` are post-processed (`options.postprocess`, in order): what people
    read, and what subtitles are built from. `raw_text` is exactly what the model emitted.
    """

    text: str
    raw_text: str
    words: tuple[Word, ...]
    duration: float
    model: str
    options: TranscriptionOptions
    processing_seconds: float
    decode_seconds: float = 0.0
    #: The language of the text: the requested one, the detected one, or None when unknown.
    language: str | None = None

    @property
    def real_time_factor(self) -> float:
        """Model time divided by audio duration (lower is faster)."""
        return self.processing_seconds / self.duration if self.duration > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (CLI `--json`, exports, storage)."""
        data = asdict(self)
        data["real_time_factor"] = self.real_time_factor
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transcription:
        """The inverse of `to_dict` (a result that crossed JSON): lists become tuples again, derived keys are dropped."""
        options: dict[str, Any] = {
            name: tuple(value) if isinstance(value, list) else value for name, value in data["options"].items()
        }
        fields = {field.name for field in dataclasses.fields(cls)} - {"words", "options"}
        return cls(
            **{name: data[name] for name in fields if name in data},
            words=tuple(Word(**word) for word in data["words"]),
            options=TranscriptionOptions(**options),
        )


@dataclass(frozen=True)
class Progress:
    """Reported while a long file is transcribed: how far, and the text so far."""

    done_seconds: float
    total_seconds: float
    partial_text: str = ""

    @property
    def fraction(self) -> float:
        return min(1.0, self.done_seconds / self.total_seconds) if self.total_seconds > 0 else 1.0
