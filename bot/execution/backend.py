"""What an execution backend implements: workers that run one attempt at a time and say what happened.

The policy (which job runs next and where, timeouts, retries, cancelling, shutting down) is
`bot.execution.scheduler.Scheduler`'s, the same for every backend. A backend only owns its
workers: the local one (`bot.execution.local.pool`) runs them as processes on this machine;
a cluster backend would run them elsewhere and implement exactly these calls.

A worker is named by its slot, 0 .. `workers - 1`; a lost worker is restarted in the same
slot. Each run of a job is an `Attempt`, named by the job's id and its attempt number, and every
report about it carries that name back: a retried job's first attempt may still report (a
result already in flight, a stream that broke after its last event), and the scheduler must
be able to tell it from the retry. Torch-free, like `bot.execution.base`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from bot.asr.types import Progress, Transcription
from bot.errors import VoiceBotError
from bot.execution.base import TranscriptionRequest


@dataclass(frozen=True)
class Attempt:
    """One run of a job: the scheduler's job id and which try this is (1, then 2 for a retry)."""

    job_id: int
    number: int

    def __str__(self) -> str:
        return f"job {self.job_id} attempt {self.number}"


class BackendEvents(Protocol):
    """What a backend reports, always on the event loop `open` ran on, never from inside a backend call.

    Events about an attempt come from the slot it was given to, named by that `Attempt`; a
    backend never reports an attempt it was not given, and reports nothing once `close` has begun.
    """

    def worker_ready(self, slot: int) -> None:
        """The worker in `slot` has started and can run a job."""

    def job_progress(self, slot: int, attempt: Attempt, progress: Progress) -> None:
        """The attempt has got this far (reported every few seconds of work)."""

    def job_done(self, slot: int, attempt: Attempt, result: Transcription) -> None:
        """The attempt's result; its worker is free again."""

    def job_failed(self, slot: int, attempt: Attempt, error: VoiceBotError) -> None:
        """The attempt failed (bad audio, cancelled between chunks...); its worker is free again."""

    def backend_failed(self, error: VoiceBotError) -> None:
        """No worker can run (its models failed to load): every job fails with `error`, and no worker
        lost from now on is started again."""

    def worker_lost(self, slot: int, reason: str) -> None:
        """The worker in `slot` is gone, with whatever it was running.

        `reason` names the worker and says what happened (it died, was killed, could not
        start), as the log shows it: "asr-worker-0 exited with code -9".
        """


class ExecutionBackend(Protocol):
    """Workers that each run one attempt at a time. No call may block the event loop."""

    @property
    def workers(self) -> int:
        """How many worker slots the backend runs."""

    @property
    def language_detectors(self) -> frozenset[str]:
        """The models that detect the language of a request that fixes none (`Engine.language_detectors`),
        as the workers report it: known once one has been ready, empty before."""

    async def open(self, events: BackendEvents) -> None:
        """Get ready to start workers (load what they share); events go to `events` from now on."""

    def start_worker(self, slot: int) -> None:
        """Start the worker in `slot` (again, after `worker_lost`); it reports `worker_ready` or `worker_lost`."""

    def run(self, slot: int, attempt: Attempt, request: TranscriptionRequest) -> None:
        """Begin `attempt` at `request` on the ready, idle worker in `slot`."""

    def stop(self, slot: int, attempt: Attempt) -> None:
        """Ask the worker in `slot` to give up `attempt` at its next chance (it reports `job_failed`)."""

    def kill(self, slot: int) -> None:
        """End the worker in `slot` now, whatever it is doing; it reports `worker_lost`."""

    async def close(self) -> None:
        """Stop every worker: let idle ones exit, kill the rest after a short wait."""
