"""`HttpBackend`: an `ExecutionBackend` whose workers are requests in flight at a transcription cluster.

A slot is one job the bot keeps in flight at `ASR_SERVER_URL` (`ASR_REMOTE_CONCURRENCY` slots);
the cluster's replicas and their queue sit behind them. Each attempt is one streamed
`POST /v1/audio/transcriptions` (`bot.execution.remote.request`), run as one task:

- progress events become `job_progress`, the final event `job_done` (its `x_voicebot` is the
  `Transcription`), an error event or a 4xx answer `job_failed` with the matching domain error;
- 503 and 429 mean the cluster is busy: the job stays on its slot, not failed and not counted as
  another attempt, and is sent again after Retry-After (or a short backoff) until it is accepted,
  cancelled (`stop`), or the scheduler's job timeout kills the slot;
- a refused connection or a stream that breaks before the result means whatever ran the job is
  gone: `worker_lost`, and the scheduler retries the job once;
- `stop` and `kill` close the stream by cancelling the task; the replica notices the closed
  connection and stops within one chunk.

Every report names the attempt its task was started for, and a lost attempt's task has ended
before its loss is reported, so it can never report a result afterwards. A slot is ready
once the server's /healthz answers: at the first start within `start_timeout` (else it is a
worker that could not start), after a loss however long the cluster takes to come back.
Before it reports ready it reads /v1/models for the models that detect languages
(`language_detectors`), and goes on reading it in the background until it answers.
Needs neither torch nor Ray.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bot.asr.types import Progress, Transcription
from bot.errors import JobCancelledError, VoiceBotError
from bot.execution.backend import Attempt, BackendEvents
from bot.execution.base import TranscriptionRequest
from bot.execution.remote.errors import domain_error
from bot.execution.remote.request import (
    HEALTH_PATH,
    MODELS_PATH,
    TRANSCRIPTIONS_PATH,
    auth_headers,
    language_detectors,
    transcription_form,
)
from bot.execution.remote.sse import StreamError, read_events

log = logging.getLogger(__name__)

#: How long a slot's first start waits for /healthz before it counts as a worker that could not start.
START_TIMEOUT_SECONDS = 60.0
#: The first wait between /healthz polls and between busy retries without Retry-After; it doubles up to the max.
BACKOFF_SECONDS = 0.5
MAX_BACKOFF_SECONDS = 10.0
#: A Retry-After longer than this is shortened: the scheduler's timeout and cancel still apply meanwhile.
MAX_RETRY_AFTER_SECONDS = 30.0
CONNECT_TIMEOUT_SECONDS = 10.0
_HEALTH_TIMEOUT = aiohttp.ClientTimeout(total=5.0)
#: Answers that mean "busy, try again": Serve's full queue (503) or a proxy's rate limit (429).
_BUSY = frozenset({503, 429})
#: Answers from a proxy in front of a replica that is gone or hung.
_GATEWAY = frozenset({502, 504})


class _Lost(Exception):
    """Whatever ran the attempt is gone (refused connection, broken stream)."""


@dataclass(eq=False)
class _Slot:
    """What a slot is doing: waiting for /healthz (`attempt` None) or running one attempt."""

    task: asyncio.Task[None]
    attempt: Attempt | None = None
    killed: bool = False


class HttpBackend:
    """Slots of jobs in flight at an OpenAI-compatible transcription endpoint (see the module docstring)."""

    def __init__(
        self,
        server_url: str,
        *,
        slots: int,
        api_key: str | None = None,
        max_audio_seconds: float,
        max_file_mb: float,
        start_timeout: float = START_TIMEOUT_SECONDS,
    ) -> None:
        self.server_url = server_url.rstrip("/")
        self._count = slots
        self._headers = auth_headers(api_key)
        self._max_audio_seconds = max_audio_seconds
        self._max_file_mb = max_file_mb
        self._start_timeout = start_timeout
        self._slots: dict[int, _Slot] = {}
        self._ever_ready: set[int] = set()
        self._session: aiohttp.ClientSession | None = None
        self._events: BackendEvents | None = None
        self._closing = False
        #: The replica that answered each slot's latest attempt (its `x-voicebot-replica-pid`), for logs.
        self.replica_pids: dict[int, str] = {}
        #: What the server's /v1/models said last (`_learn_language_detectors`).
        self.language_detectors: frozenset[str] = frozenset()
        #: Reads /v1/models again until it answers, after a read that failed.
        self._detectors_retry: asyncio.Task[None] | None = None

    @property
    def workers(self) -> int:
        return self._count

    async def open(self, events: BackendEvents) -> None:
        self._events = events
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_SECONDS)
        self._session = aiohttp.ClientSession(timeout=timeout, headers=self._headers)

    def start_worker(self, slot: int) -> None:
        self._begin(slot, None, self._wait_healthy(slot))

    def run(self, slot: int, attempt: Attempt, request: TranscriptionRequest) -> None:
        self._begin(slot, attempt, self._attempt(slot, attempt, request))

    def stop(self, slot: int, attempt: Attempt) -> None:
        current = self._slots.get(slot)
        if current is not None and current.attempt == attempt:
            current.task.cancel()

    def kill(self, slot: int) -> None:
        current = self._slots.get(slot)
        if current is not None:
            current.killed = True
            current.task.cancel()

    async def close(self) -> None:
        """Close every stream (the replicas stop their jobs) and the HTTP session; no events after this."""
        self._closing = True
        tasks = [current.task for current in self._slots.values()]
        if self._detectors_retry is not None:
            tasks.append(self._detectors_retry)
        self._slots.clear()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()

    # -- one slot's task -----------------------------------------------------------------

    def _begin(self, slot: int, attempt: Attempt | None, work: Any) -> None:
        label = f"job-{attempt.job_id}-attempt-{attempt.number}" if attempt else "start"
        task = asyncio.get_running_loop().create_task(work, name=f"{self._name(slot)}-{label}")
        self._slots[slot] = _Slot(task, attempt)

    def _current(self, slot: int) -> _Slot | None:
        """The slot's state if the calling task is still the one it runs (else its reports are stale)."""
        current = self._slots.get(slot)
        if current is None or current.task is not asyncio.current_task() or self._closing:
            return None
        return current

    async def _wait_healthy(self, slot: int) -> None:
        """Poll /healthz until it answers 200 (ready) or the start timeout passes (a worker that could not start)."""
        assert self._events is not None
        try:
            # A slot that was ready before waits for the cluster to come back however long it takes
            # (its jobs wait in the bot's queue meanwhile); only a first start can fail.
            problem = await self._health_problem(None if slot in self._ever_ready else self._start_timeout)
            if problem is None:
                await self._learn_language_detectors()
        except asyncio.CancelledError:
            if self._current(slot) is not None:
                self._slots.pop(slot)
                self._events.worker_lost(slot, f"{self._name(slot)} was killed while starting")
            raise
        if self._current(slot) is None:
            return
        if problem is None:
            self._ever_ready.add(slot)
            self._events.worker_ready(slot)
        else:
            self._slots.pop(slot)
            self._events.worker_lost(
                slot, f"{self._name(slot)} could not reach {self.server_url}{HEALTH_PATH} ({problem})")

    async def _health_problem(self, timeout: float | None) -> str | None:
        """None once /healthz answers 200; what went wrong last if it has not within `timeout` (None: no limit)."""
        deadline = time.monotonic() + timeout if timeout is not None else float("inf")
        problem = await self._check_health()
        if problem is None:
            return None
        return await self._until_answered(self._check_health, HEALTH_PATH, "%s is not ready yet: %s", problem,
                                          deadline)

    async def _check_health(self) -> str | None:
        """One GET /healthz: None for a 200, else what went wrong."""
        assert self._session is not None
        try:
            async with self._session.get(self.server_url + HEALTH_PATH, timeout=_HEALTH_TIMEOUT) as response:
                return None if response.status == 200 else f"HTTP {response.status}"
        except (aiohttp.ClientError, OSError) as exc:
            return _describe(exc)

    async def _until_answered(self, attempt: Callable[[], Awaitable[str | None]], path: str, message: str,
                              problem: str, deadline: float = float("inf")) -> str | None:
        """Call `attempt` (None: answered, else what went wrong) again after pauses that double up to
        MAX_BACKOFF_SECONDS, until it answers (None) or `deadline` (monotonic) passes (what went wrong
        last). `problem` is what the call before said; it and each change are logged once, as `message`
        with the URL of `path` and the problem."""
        url = self.server_url + path
        log.warning(message, url, problem)
        delay = BACKOFF_SECONDS
        while True:
            await asyncio.sleep(min(delay, max(0.0, deadline - time.monotonic())))
            if time.monotonic() >= deadline:
                return problem
            latest = await attempt()
            if latest is None:
                return None
            if latest != problem:
                log.warning(message, url, latest)
                problem = latest
            delay = min(2 * delay, MAX_BACKOFF_SECONDS)

    async def _learn_language_detectors(self) -> None:
        """Update `language_detectors` from /v1/models. After a failure (a cluster whose replicas are
        still loading, or busy) it is read again in the background until it answers; the slot is ready
        either way, as only the /language replies depend on it."""
        problem = await self._read_language_detectors()
        if problem is not None and self._detectors_retry is None:
            self._detectors_retry = asyncio.get_running_loop().create_task(
                self._reread_language_detectors(problem), name="read-language-detectors")

    async def _reread_language_detectors(self, problem: str) -> None:
        await self._until_answered(self._read_language_detectors, MODELS_PATH, "could not read %s: %s; trying again",
                                   problem)
        log.info("read %s: language detection by %s", self.server_url + MODELS_PATH,
                 ", ".join(sorted(self.language_detectors)) or "no model")
        self._detectors_retry = None

    async def _read_language_detectors(self) -> str | None:
        """Read /v1/models into `language_detectors`: None, or what went wrong (it keeps what it was)."""
        assert self._session is not None
        try:
            async with self._session.get(self.server_url + MODELS_PATH, timeout=_HEALTH_TIMEOUT) as response:
                response.raise_for_status()
                self.language_detectors = language_detectors(await response.json(content_type=None))
        except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as exc:
            return _describe(exc)
        return None

    async def _attempt(self, slot: int, attempt: Attempt, request: TranscriptionRequest) -> None:
        """Run one attempt and report how it ended, as the only report of this task."""
        assert self._events is not None
        try:
            result = await self._transcribe(slot, attempt, request)
        except asyncio.CancelledError:
            current = self._current(slot)
            if current is not None and current.killed:
                self._slots.pop(slot)
                self._events.worker_lost(slot, f"{self._name(slot)} was killed during job {attempt.job_id}")
            elif current is not None:
                self._finish(slot)
                self._events.job_failed(slot, attempt, JobCancelledError("cancelled"))
            raise
        except VoiceBotError as error:
            if self._current(slot) is not None:
                self._finish(slot)
                self._events.job_failed(slot, attempt, error)
        except (_Lost, StreamError, aiohttp.ClientError, OSError) as exc:
            if self._current(slot) is not None:
                self._slots.pop(slot)
                self._events.worker_lost(slot, f"{self._name(slot)} lost {self.server_url}: {_describe(exc)}")
        else:
            if self._current(slot) is not None:
                self._finish(slot)
                self._events.job_done(slot, attempt, result)

    def _finish(self, slot: int) -> None:
        """The attempt has ended and the slot is idle and ready again."""
        self._slots[slot].attempt = None

    async def _transcribe(self, slot: int, attempt: Attempt, request: TranscriptionRequest) -> Transcription:
        """POST the audio, waiting out busy answers, and read the stream to its result."""
        assert self._session is not None
        audio = request.audio if isinstance(request.audio, bytes) else await asyncio.to_thread(request.audio.read_bytes)
        filename = request.audio.name if isinstance(request.audio, Path) else "audio"
        delay = BACKOFF_SECONDS
        while True:
            form = transcription_form(audio, request.options, filename=filename)
            async with self._session.post(self.server_url + TRANSCRIPTIONS_PATH, data=form) as response:
                if response.status in _BUSY:
                    hinted = _retry_after(response.headers.get("Retry-After"))
                    wait = delay if hinted is None else hinted
                    if hinted is None:
                        delay = min(2 * delay, MAX_BACKOFF_SECONDS)
                    log.info("job %s waits: the cluster is busy (HTTP %s), sending it again in %.1fs",
                             attempt.job_id, response.status, wait)
                elif response.status in _GATEWAY:
                    raise _Lost(f"HTTP {response.status} from a gateway")
                elif response.status >= 400:
                    raise await self._refused(response, len(audio))
                else:
                    self.replica_pids[slot] = response.headers.get("x-voicebot-replica-pid", "?")
                    return await self._read_stream(slot, attempt, response, len(audio))
            await asyncio.sleep(wait)

    async def _read_stream(
        self, slot: int, attempt: Attempt, response: aiohttp.ClientResponse, audio_bytes: int
    ) -> Transcription:
        assert self._events is not None
        async for event in read_events(response.content.iter_any()):
            kind = event.get("type")
            if kind == "transcript.text.delta":
                progress = event.get("x_progress")
                if isinstance(progress, dict) and self._current(slot) is not None:
                    self._events.job_progress(slot, attempt, Progress(
                        done_seconds=float(progress.get("done_seconds", 0.0)),
                        total_seconds=float(progress.get("total_seconds", 0.0)),
                        partial_text=str(progress.get("partial_text", "")),
                    ))
            elif kind == "transcript.text.done":
                try:
                    return Transcription.from_dict(event["x_voicebot"])
                except (KeyError, TypeError, ValueError) as exc:
                    raise StreamError(f"the result event is malformed: {_describe(exc)}") from exc
            elif kind == "error":
                raise domain_error(event.get("error"), audio_bytes=audio_bytes, **self._limits())
        raise _Lost(f"the stream of {attempt} ended before its result")

    async def _refused(self, response: aiohttp.ClientResponse, audio_bytes: int) -> VoiceBotError:
        """The domain error of a 4xx/5xx answer; a body that is not the expected JSON still names the status."""
        try:
            body = await response.json(content_type=None)
        except (ValueError, aiohttp.ClientError):
            body = None
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            error = {"message": f"HTTP {response.status}", "code": f"http_{response.status}"}
        log.warning("the transcription server refused a job: HTTP %s %s: %s",
                    response.status, error.get("code"), error.get("message"))
        return domain_error(error, audio_bytes=audio_bytes, **self._limits())

    def _limits(self) -> dict[str, float]:
        return {"max_audio_seconds": self._max_audio_seconds, "max_file_mb": self._max_file_mb}

    @staticmethod
    def _name(slot: int) -> str:
        return f"asr-remote-{slot}"


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (a number or an HTTP date), capped; None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - time.time()
        except (TypeError, ValueError):
            return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_SECONDS)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
