"""All configuration in one place, read from the environment and an optional `.env` file.

Every field here is mirrored in `.env.example` and in the README's configuration table
(a test checks the three agree). A bad value stops the program at start with one line
naming the setting, instead of failing later in the middle of a request.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from bot.asr.routing import parse_models

IdList = Annotated[frozenset[int], NoDecode]


class SettingsError(Exception):
    """A setting has a bad value; the message is one line that names it."""


class Settings(BaseSettings):
    """The bot's settings. Environment variable names are the upper-case field names."""

    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", case_sensitive=False
    )

    # --- Telegram ---------------------------------------------------------------------
    telegram_bot_token: SecretStr | None = Field(
        default=None, description="Bot token from @BotFather (secret; never logged)."
    )
    telegram_api_base_url: str = Field(
        default="https://api.telegram.org/bot",
        description="Bot API base URL; point it at a self-hosted telegram-bot-api server to lift the 20 MB limit.",
    )
    telegram_file_base_url: str = Field(
        default="https://api.telegram.org/file/bot",
        description="Bot API file download base URL (self-hosted servers: their /file/bot URL).",
    )
    telegram_local_mode: bool = Field(
        default=False,
        description="Set when the self-hosted Bot API server runs with --local: file paths are read from its disk.",
    )
    telegram_read_timeout_seconds: float = Field(
        default=30.0, gt=0,
        description="Seconds to wait for Telegram to answer a Bot API call or send a file's bytes before that "
        "try counts as timed out (and is retried).",
    )
    webhook_url: str | None = Field(
        default=None, description="Public HTTPS URL for webhook mode; empty means long polling."
    )
    webhook_secret: SecretStr | None = Field(
        default=None,
        description="Secret Telegram sends in X-Telegram-Bot-Api-Secret-Token; required with WEBHOOK_URL.",
    )
    webhook_listen: str = Field(default="0.0.0.0", description="Address the webhook server listens on.")
    webhook_port: int = Field(default=8443, ge=1, le=65535, description="Port the webhook server listens on.")

    # --- Speech recognition -----------------------------------------------------------
    asr_model: str = Field(
        default="facebook/wav2vec2-base-960h",
        description="Hugging Face model id or local directory of a CTC checkpoint (wav2vec2, XLS-R, HuBERT, WavLM).",
    )
    asr_device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto", description="Where the model runs: auto (CUDA when available), cpu or cuda."
    )
    asr_backend: Literal["local", "ray"] = Field(
        default="local",
        description="Where the model workers run: local (worker processes on this machine) or ray (a Ray Serve "
        "cluster at ASR_SERVER_URL; the bot then loads no model).",
    )
    asr_workers: int = Field(default=1, ge=1, le=64, description="Model worker processes.")
    asr_threads_per_worker: int = Field(
        default=0, ge=0, le=256, description="torch threads per worker; 0 = CPU cores divided by workers."
    )
    asr_chunk_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Long audio is processed in chunks of this length."
    )
    asr_stride_seconds: float = Field(
        default=2.5, ge=0, le=300, description="Context overlap on each side of a chunk; its logits are dropped."
    )
    asr_job_timeout_seconds: float = Field(
        default=900.0, gt=0, description="A transcription running longer than this is killed and reported."
    )
    asr_queue_size: int = Field(default=200, ge=1, description="Most jobs waiting for a worker at once (all users).")
    asr_compute_type: Literal["auto", "float32", "bfloat16", "float16", "int8"] = Field(
        default="auto",
        description="auto: float16 on CUDA, bfloat16 on CPUs with AMX-BF16/AVX512-BF16, else float32 (exact); "
        "bfloat16/float16/int8 are faster modes that may change words.",
    )
    asr_attention: Literal["sdpa", "eager"] = Field(
        default="sdpa", description="Attention kernel: sdpa (PyTorch fused attention) or eager (reference)."
    )
    asr_compile: bool = Field(default=False, description="Compile the model with torch.compile (slower start).")
    asr_cpu_kernels: Literal["tuned", "stock"] = Field(
        default="tuned",
        description="CPU forward paths: tuned (same float32 result, 1.2-1.4x faster; bfloat16 ~2x faster; "
        "see bot/asr/ctc/cpu_kernels.py) or stock (transformers as is). GPU and ASR_COMPILE runs use stock.",
    )
    asr_batch_size: int = Field(
        default=1, ge=1, le=256, description="Chunks of one long file run together in a batch (useful on GPU)."
    )
    max_audio_seconds: float = Field(
        default=1800.0, gt=0, description="Longer audio is refused (and decoding is cut off at this length)."
    )
    max_file_mb: float = Field(
        default=20.0, gt=0, description="Larger files are refused before download (Bot API limit: 20 MB)."
    )
    ffmpeg_timeout_seconds: float = Field(default=120.0, gt=0, description="ffmpeg is killed after this long.")
    ffmpeg_memory_mb: int = Field(default=1024, ge=384, description="Address-space limit of each ffmpeg process.")

    # --- Languages, model routing and punctuation --------------------------------------
    asr_models: str = Field(
        default="",
        description="Models per language, e.g. `en:facebook/wav2vec2-base-960h,*:openai/whisper-small`; `*` is "
        "every other language and detection (default: ASR_MODEL). Each model is loaded once. Empty: ASR_MODEL only.",
    )
    punctuation_model: str | None = Field(
        default=None,
        description="Token-classification checkpoint (hub id or directory) that restores punctuation and casing of "
        "CTC transcripts, e.g. `oliverguhr/fullstop-punctuation-multilang-large`. Empty: off.",
    )

    # --- Cluster (ASR_BACKEND=ray / python -m bot serve) ---------------------------------
    asr_api_key: SecretStr | None = Field(
        default=None,
        description="Bearer token of the cluster's transcription endpoint (`Authorization: Bearer ...`); "
        "the bot sends it, `python -m bot serve` requires it. Empty: no token.",
    )
    asr_replica_cpus: float = Field(
        default=1.0, gt=0, description="CPUs each Ray Serve model replica reserves (also its torch threads)."
    )
    asr_replica_gpus: float = Field(
        default=0.0, ge=0, description="GPUs each model replica reserves; fractional (0.5) shares one GPU."
    )
    asr_max_ongoing_requests: int = Field(
        default=1, ge=1, description="Jobs one model replica runs at once; more wait in Serve's queue."
    )
    asr_max_queued_requests: int = Field(
        default=100, ge=-1, description="Jobs Serve queues for the replicas before answering 503; -1 = no limit."
    )
    asr_min_replicas: int = Field(default=1, ge=0, description="Fewest model replicas the autoscaler keeps.")
    asr_max_replicas: int = Field(default=1, ge=1, description="Most model replicas the autoscaler starts.")
    asr_target_ongoing_requests: float = Field(
        default=1.0, gt=0, description="Jobs per replica the autoscaler aims for (it adds replicas above this)."
    )
    asr_server_url: str = Field(
        default="http://127.0.0.1:8000",
        description="With ASR_BACKEND=ray: base URL of the cluster's OpenAI-compatible endpoint "
        "(`python -m bot serve`); the bot posts to its /v1/audio/transcriptions.",
    )
    asr_remote_concurrency: int = Field(
        default=4, ge=1, le=1024,
        description="With ASR_BACKEND=ray: jobs the bot keeps in flight at the cluster at once (the rest wait "
        "in the bot's fair queue); about the replicas' total ongoing requests, so the order stays the bot's.",
    )

    # --- Bot behaviour ----------------------------------------------------------------
    transcript_file_chars: int = Field(
        default=12000, ge=100, description="Transcripts longer than this are sent as a .txt document."
    )
    progress_interval_seconds: float = Field(
        default=4.0, ge=1, description="Least time between progress edits of a placeholder message."
    )
    user_max_concurrent_jobs: int = Field(default=3, ge=1, description="Jobs one user may have queued or running.")
    user_jobs_per_minute: int = Field(default=20, ge=1, description="Files one user may send per minute.")

    # --- Storage ----------------------------------------------------------------------
    database_path: Path = Field(default=Path("data/voicebot.sqlite3"), description="SQLite database file.")

    history_enabled: bool = Field(
        default=True, description="Keep transcripts for /history and /search (users can still opt out)."
    )
    history_retention_days: int = Field(
        default=0, ge=0, description="Delete transcripts older than this many days; 0 keeps them forever."
    )

    # --- Operations -------------------------------------------------------------------
    metrics_host: str = Field(default="127.0.0.1", description="Address of the /healthz, /readyz, /metrics server.")
    metrics_port: int | None = Field(
        default=None, ge=1, le=65535, description="Port of the health and Prometheus metrics server; empty = off."
    )

    # --- Logging ----------------------------------------------------------------------
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(default="INFO", description="Log level.")
    log_format: Literal["text", "json"] = Field(default="text", description="text, or json for one JSON object per line.")

    # --- Access -----------------------------------------------------------------------
    allowed_user_ids: IdList = Field(
        default=frozenset(), description="Comma-separated user ids allowed to use the bot; empty = everyone."
    )
    allowed_chat_ids: IdList = Field(
        default=frozenset(), description="Comma-separated group chat ids the bot serves; empty = every chat."
    )
    admin_user_ids: IdList = Field(
        default=frozenset(), description="Comma-separated user ids allowed to use admin commands such as /stats."
    )

    @field_validator("allowed_user_ids", "allowed_chat_ids", "admin_user_ids", mode="before")
    @classmethod
    def _split_ids(cls, value: object) -> object:
        """Accept `1,2,3` (the natural way to write a list in a .env file)."""
        if isinstance(value, str):
            return frozenset(int(part) for part in value.replace(" ", "").split(",") if part)
        return value

    @field_validator("asr_models")
    @classmethod
    def _check_models(cls, value: str) -> str:
        """A wrong table fails at start-up, naming the entry, not on the first voice note."""
        parse_models(value, default="")
        return value

    @field_validator("telegram_bot_token", "webhook_secret", "asr_api_key", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("webhook_url", "metrics_port", "punctuation_model", mode="before")
    @classmethod
    def _empty_url_is_none(cls, value: object) -> object:
        return None if value == "" else value

    def model_table(self) -> dict[str, str]:
        """ASR_MODELS as language -> model, `*` falling back to ASR_MODEL (`bot.asr.routing`)."""
        return parse_models(self.asr_models, default=self.asr_model)

    def threads_per_worker(self) -> int:
        """The torch thread count each worker should use."""
        if self.asr_threads_per_worker:
            return self.asr_threads_per_worker
        return max(1, (os.cpu_count() or 1) // self.asr_workers)


def load_settings(**overrides: object) -> Settings:
    """Build the settings, turning a validation failure into one line that names the setting."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        error = exc.errors()[0]
        name = ".".join(str(part) for part in error["loc"]).upper() or "settings"
        value = error.get("input")
        shown = "" if name in {"TELEGRAM_BOT_TOKEN", "WEBHOOK_SECRET", "ASR_API_KEY"} else f" (got {value!r})"
        raise SettingsError(f"Invalid setting {name}: {error['msg']}{shown}") from None
