"""Server-sent events as the transcription endpoint streams them: one `data: <json>` event per blank-line block.

Only `data` lines matter to this client (comments, `event`, `id` and `retry` lines are skipped).
The reader buffers bytes itself rather than reading lines, because the last event carries the
whole transcription with its words, which for a long file is far longer than a reader's line limit.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

#: An event larger than this is not one the endpoint sends: the stream is broken or not ours.
MAX_EVENT_BYTES = 64 * 1024 * 1024


class StreamError(Exception):
    """The stream is not well-formed server-sent JSON events."""


async def read_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[dict[str, Any]]:
    """The JSON object of each event in the byte stream `chunks`, in order."""
    buffer = b""
    data: list[bytes] = []
    async for chunk in chunks:
        buffer += chunk
        if len(buffer) > MAX_EVENT_BYTES:
            raise StreamError(f"an event is over {MAX_EVENT_BYTES} bytes")
        *lines, buffer = buffer.split(b"\n")
        for line in lines:
            line = line.rstrip(b"\r")
            if line:
                field, _, value = line.partition(b":")
                if field == b"data":
                    data.append(value[1:] if value.startswith(b" ") else value)
            elif data:
                yield _parse(b"\n".join(data))
                data.clear()
    if data or buffer.strip():
        raise StreamError("the stream ended in the middle of an event")


def _parse(payload: bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except ValueError as exc:
        raise StreamError(f"an event is not JSON: {payload[:80]!r}") from exc
    if not isinstance(event, dict):
        raise StreamError(f"an event is not a JSON object: {payload[:80]!r}")
    return event
