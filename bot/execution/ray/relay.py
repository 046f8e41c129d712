"""Relaying a model replica's events to the HTTP client: the SSE stream, errors, refusals.

Module functions the gateway calls through the module (`relay.x`): Serve ships the ingress
class by value, and names it reaches through an imported module always resolve in the replica.
"""

import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from ray.exceptions import RayActorError
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentResponse, DeploymentResponseGenerator

from bot.execution.ray import openai_api
from bot.execution.ray.config import ReplicaEvent
from bot.execution.ray.openai_api import ApiError

log = logging.getLogger("voicebot.gateway")

#: Seconds a client is asked to wait when every replica is busy and the queue is full.
BUSY_RETRY_AFTER = 2.0
PID_HEADER = "x-voicebot-replica-pid"


class ReplicaLost(Exception):
    """The model replica running a job died; the stream is broken off so the client retries."""


def lost() -> ApiError:
    return ApiError(503, "The model replica was lost; please retry.", "worker_lost", type="server_error",
                    headers={"Retry-After": "1"})


async def answer(call: DeploymentResponse) -> Any:
    """What a replica method returned; busy (503) when Serve's queue is full, `lost` when the replica
    died: a client asking while every replica is taken gets the same answer as a transcription."""
    try:
        return await call
    except BackPressureError as exc:
        raise openai_api.busy(BUSY_RETRY_AFTER) from exc
    except RayActorError as exc:
        raise lost() from exc


async def next_event(replica: DeploymentResponseGenerator) -> ReplicaEvent | None:
    """The replica's next event; None when the replica died; busy when Serve's queue is full."""
    try:
        event: ReplicaEvent = await replica.__anext__()
    except BackPressureError as exc:
        raise openai_api.busy(BUSY_RETRY_AFTER) from exc
    except RayActorError:
        return None
    return event


async def next_or_raise(replica: DeploymentResponseGenerator) -> ReplicaEvent:
    event = await next_event(replica)
    if event is None:
        raise ReplicaLost
    return event


async def events(request: Request, first: ReplicaEvent, replica: DeploymentResponseGenerator) -> AsyncIterator[bytes]:
    """The SSE stream: a delta per chunk, then done (or an error event); broken off if the replica dies."""
    text = ""
    event = first
    try:
        while True:
            if event.kind == "progress" and event.progress is not None:
                yield openai_api.sse(openai_api.delta_event(event.progress, text))
                text = event.progress.partial_text
            elif event.kind == "result" and event.result is not None:
                yield openai_api.sse(openai_api.done_event(event.result))
                return
            else:
                error = event_error(event)
                log.info("stream failed after it began: %s %s", error.code, error.message)
                yield openai_api.sse(error.event())
                return
            event = await next_or_raise(replica)
    finally:
        replica.cancel()  # the client went away (or the stream ended): the replica stops between chunks


async def broken() -> AsyncIterator[bytes]:
    raise ReplicaLost
    yield b""  # an async generator that fails before its first byte


def event_error(event: ReplicaEvent) -> ApiError:
    if event.kind == "invalid":
        return openai_api.invalid_option(event.detail)
    if event.error is not None:
        return openai_api.error_for(event.error)
    return ApiError(500, "The replica answered out of order.", "server_error", type="server_error")


def refuse(request: Request, error: ApiError) -> JSONResponse:
    client = request.client.host if request.client else "?"
    log.warning("refused %s %s from %s: %d %s (%s)", request.method, request.url.path, client, error.status,
                error.code, error.message)
    return JSONResponse(error.body(), status_code=error.status, headers=dict(error.headers))
