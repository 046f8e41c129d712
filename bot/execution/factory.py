"""The transcriber the settings ask for: the scheduler over the backend named by `ASR_BACKEND`.

Backends are imported only when chosen, so building the bot imports torch only for a
backend that runs the model in this process tree.
"""

from __future__ import annotations

from collections.abc import Callable

from bot.execution.backend import ExecutionBackend
from bot.execution.base import Transcriber
from bot.execution.config import EngineConfig
from bot.execution.scheduler import Scheduler
from bot.settings import Settings


def _local_backend(settings: Settings) -> ExecutionBackend:
    from bot.execution.local.pool import ProcessPoolBackend

    return ProcessPoolBackend(EngineConfig.from_settings(settings), workers=settings.asr_workers)


def _ray_backend(settings: Settings) -> ExecutionBackend:
    from bot.execution.remote.backend import HttpBackend

    return HttpBackend(
        settings.asr_server_url,
        slots=settings.asr_remote_concurrency,
        api_key=settings.asr_api_key.get_secret_value() if settings.asr_api_key else None,
        max_audio_seconds=settings.max_audio_seconds,
        max_file_mb=settings.max_file_mb,
    )


_BACKENDS: dict[str, Callable[[Settings], ExecutionBackend]] = {"local": _local_backend, "ray": _ray_backend}


def create_transcriber(settings: Settings, *, on_worker_restart: Callable[[], None] | None = None) -> Transcriber:
    """A not yet started `Transcriber`; `on_worker_restart` is called each time a lost worker is replaced."""
    return Scheduler(
        _BACKENDS[settings.asr_backend](settings),
        queue_size=settings.asr_queue_size,
        job_timeout=settings.asr_job_timeout_seconds,
        on_worker_restart=on_worker_restart,
    )
