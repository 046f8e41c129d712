"""What a model worker is configured with, wherever it runs: built from `Settings` in one place.

A worker receives an `EngineConfig`, a small picklable value, rather than the settings,
which hold the bot token.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bot.asr.recognizer import RecognizerConfig
from bot.asr.routing import ANY, models_to_load
from bot.settings import Settings


@dataclass(frozen=True)
class DecodeLimits:
    """The bounds every file is decoded under (`bot.audio.decode`), whoever sent it."""

    max_seconds: float
    timeout: float
    memory_mb: int


@dataclass(frozen=True)
class EngineConfig:
    """Everything a worker needs to load its recognizer and decode files."""

    #: The model of every language without its own (`*` of ASR_MODELS, else ASR_MODEL).
    model: str
    attention: str
    #: torch threads of one worker.
    threads: int
    recognizer: RecognizerConfig
    limits: DecodeLimits
    #: Every model a request may name (`TextOptions.model`), `model` first: each loaded once.
    models: tuple[str, ...] = ()
    #: The token-classification checkpoint that punctuates CTC transcripts, or None.
    punctuation_model: str | None = None
    #: ASR_MODELS as (language or `*`, model) pairs: where a detected language is sent (`bot.asr.routing`).
    table: tuple[tuple[str, str], ...] = ()
    #: LOG_LEVEL and LOG_FORMAT: a local worker logs like the bot (its compute type, kernels, load).
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"

    @classmethod
    def from_settings(cls, settings: Settings) -> EngineConfig:
        table = settings.model_table()
        return cls(
            model=table[ANY],
            models=models_to_load(table),
            table=tuple(table.items()),
            punctuation_model=settings.punctuation_model,
            attention=settings.asr_attention,
            threads=settings.threads_per_worker(),
            recognizer=RecognizerConfig(
                device=settings.asr_device,
                compute_type=settings.asr_compute_type,
                batch_size=settings.asr_batch_size,
                compile=settings.asr_compile,
                cpu_kernels=settings.asr_cpu_kernels,
                chunk_seconds=settings.asr_chunk_seconds,
                stride_seconds=settings.asr_stride_seconds,
            ),
            limits=DecodeLimits(
                max_seconds=settings.max_audio_seconds,
                timeout=settings.ffmpeg_timeout_seconds,
                memory_mb=settings.ffmpeg_memory_mb,
            ),
            log_level=settings.log_level,
            log_format=settings.log_format,
        )
