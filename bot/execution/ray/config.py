"""What the Serve application's deployments are built with, and what a model replica streams back.

Plain picklable values, built from `Settings` in one place: Ray carries them to the replicas
(they never see the settings, which hold the bot token), and neither this module nor the
values import Ray or torch.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Literal

from bot.asr.types import Progress, Transcription
from bot.errors import VoiceBotError
from bot.execution.config import EngineConfig
from bot.settings import Settings

#: How often Serve's controller checks each model replica. A replica whose process or node died is
#: replaced only once a check fails, and the jobs sent again meanwhile wait for it: Serve's default
#: (10 s) leaves them waiting that long before a new replica even starts. A check is one actor call.
REPLICA_HEALTH_CHECK_SECONDS = 2.0


@dataclass(frozen=True)
class ServeConfig:
    """The application: the model replicas' engine and resources, the gateway's checks."""

    engine: EngineConfig
    #: The bearer token requests must carry; None: no token.
    api_key: str | None
    max_file_mb: float
    replica_cpus: float
    replica_gpus: float
    max_ongoing_requests: int
    max_queued_requests: int
    min_replicas: int
    max_replicas: int
    target_ongoing_requests: float

    @classmethod
    def from_settings(cls, settings: Settings) -> ServeConfig:
        engine = EngineConfig.from_settings(settings)
        threads = settings.asr_threads_per_worker or max(1, int(settings.asr_replica_cpus))
        return cls(
            engine=dataclasses.replace(engine, threads=threads),
            api_key=settings.asr_api_key.get_secret_value() if settings.asr_api_key else None,
            max_file_mb=settings.max_file_mb,
            replica_cpus=settings.asr_replica_cpus,
            replica_gpus=settings.asr_replica_gpus,
            max_ongoing_requests=settings.asr_max_ongoing_requests,
            max_queued_requests=settings.asr_max_queued_requests,
            min_replicas=settings.asr_min_replicas,
            max_replicas=max(settings.asr_max_replicas, settings.asr_min_replicas),
            target_ongoing_requests=settings.asr_target_ongoing_requests,
        )

    def replica_options(self) -> dict[str, Any]:
        """`serve.deployment` options of the model replicas."""
        return {
            "ray_actor_options": {"num_cpus": self.replica_cpus, "num_gpus": self.replica_gpus},
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "health_check_period_s": REPLICA_HEALTH_CHECK_SECONDS,
            "autoscaling_config": {
                "min_replicas": self.min_replicas,
                "initial_replicas": max(1, self.min_replicas),
                "max_replicas": self.max_replicas,
                "target_ongoing_requests": self.target_ongoing_requests,
            },
        }


@dataclass(frozen=True)
class ReplicaEvent:
    """One step of a job on a model replica, in order: progress per chunk, then a result or an error.

    `invalid` carries the recognizer's sentence about an option it does not have (raised
    before any audio ran). Every event names the replica's process, which the gateway
    reports in the `x-voicebot-replica-pid` header.
    """

    kind: Literal["progress", "result", "error", "invalid"]
    pid: int
    progress: Progress | None = None
    result: Transcription | None = None
    error: VoiceBotError | None = None
    detail: str = ""
