"""The recognizer seam: one protocol for every model family, and the factory that builds one.

A `Recognizer` turns 16 kHz mono float32 audio into a `Transcription` for the given
`TextOptions`. Which implementation runs follows the loaded checkpoint's family, which
`bot.asr.loading.load_model` read from its config, never from its name. Workers (local or
remote) and the CLI build recognizers only through `build_recognizer`, so every backend
gives the same text for the same options.

This module imports no torch: configuration code builds a `RecognizerConfig` without
loading the model stack; the implementations are imported when one is built.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from bot.asr.types import Progress, TextOptions, Transcription
from bot.errors import ModelLoadError

if TYPE_CHECKING:
    import numpy as np

    from bot.asr.loading import LoadedModel


@dataclass(frozen=True)
class RecognizerConfig:
    """How a recognizer runs (speed and memory), as opposed to what text it makes (`TextOptions`)."""

    device: str = "auto"
    compute_type: str = "auto"
    batch_size: int = 1
    compile: bool = False
    cpu_kernels: str = "tuned"
    chunk_seconds: float = 30.0
    stride_seconds: float = 2.5
    #: How often progress is reported (the bot edits its message less often than this).
    progress_interval: float = 2.0


class Recognizer(Protocol):
    """What a worker needs from a loaded model."""

    model_name: str
    sampling_rate: int

    def transcribe(
        self,
        audio: np.ndarray,
        options: TextOptions,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Transcription: ...


@runtime_checkable
class LanguageDetector(Protocol):
    """A recognizer that can tell the language of audio without transcribing it (Whisper), so a request
    can be routed by the language it detects (`bot.asr.routing.route_detected`)."""

    @property
    def languages(self) -> Collection[str]:
        """The language codes it knows."""
        ...

    def detect_language(self, audio: np.ndarray, among: Sequence[str] = ()) -> str:
        """The language `transcribe` would detect in `audio`, among `among` if given (ValueError for a code
        it does not know)."""
        ...


def resolve(config: RecognizerConfig) -> RecognizerConfig:
    """`config` with "auto" device and compute type made concrete (an automatic choice is logged)."""
    from bot.asr.hardware import resolve_compute_type, resolve_device

    device = resolve_device(config.device)
    return replace(config, device=device, compute_type=resolve_compute_type(config.compute_type, device))


def load_recognizer(name: str, config: RecognizerConfig, *, attention: str = "sdpa") -> Recognizer:
    """The recognizer for a checkpoint that this process alone uses, its weights loaded straight
    in the compute type when that is a 16-bit float: one pass, where loading float32 and then
    converting reads and writes every weight twice (~0.4 s of a worker's start on 2 cores).
    Weights shared between processes stay float32 (`SharedModel`) and use `build_recognizer`."""
    from bot.asr.loading import load_model

    config = resolve(config)
    dtype = config.compute_type if config.compute_type in ("bfloat16", "float16") else None
    return build_recognizer(load_model(name, attention=attention, dtype=dtype), config)


def build_recognizer(loaded: LoadedModel, config: RecognizerConfig) -> Recognizer:
    """The recognizer for a loaded checkpoint's family, set up as `config` says.

    "auto" device and compute type are resolved here, once, so every family runs (and its
    results echo) the concrete choice.
    """
    config = resolve(config)
    if loaded.family == "ctc":
        from bot.asr.ctc.recognizer import CTCRecognizer

        return CTCRecognizer(loaded, config)
    if loaded.family == "whisper":
        from bot.asr.whisper.recognizer import WhisperRecognizer

        return WhisperRecognizer(loaded, config)
    raise ModelLoadError(f"ASR_MODEL={loaded.name!r}: no recognizer runs the {loaded.family!r} model family")
