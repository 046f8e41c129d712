"""What a Telegram message carries that we can transcribe.

Voice notes, audio files, video notes, videos and documents whose MIME type is audio/*
or video/*: each becomes one `Media` with the fields the bot needs before downloading
(size and duration, to refuse early), plus who it was forwarded from, if anyone.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import timedelta

from telegram import (
    Message,
    MessageOrigin,
    MessageOriginChannel,
    MessageOriginChat,
    MessageOriginHiddenUser,
    MessageOriginUser,
)

#: Kinds transcribed automatically in groups (what people send to be heard).
AUTO_KINDS = frozenset({"voice", "video_note"})


@dataclass(frozen=True)
class Media:
    kind: str  # voice | audio | video_note | video | document
    file_id: str
    file_unique_id: str
    file_size: int | None
    duration: float | None
    mime_type: str | None


def find_media(message: Message | None) -> Media | None:
    """The transcribable file in `message`, or None."""
    if message is None:
        return None
    if message.voice:
        v = message.voice
        return Media("voice", v.file_id, v.file_unique_id, v.file_size, _seconds(v.duration), v.mime_type)
    if message.audio:
        a = message.audio
        return Media("audio", a.file_id, a.file_unique_id, a.file_size, _seconds(a.duration), a.mime_type)
    if message.video_note:
        n = message.video_note
        return Media("video_note", n.file_id, n.file_unique_id, n.file_size, _seconds(n.duration), "video/mp4")
    if message.video:
        video = message.video
        return Media("video", video.file_id, video.file_unique_id, video.file_size, _seconds(video.duration),
                     video.mime_type)
    document = message.document
    if document and document.mime_type and document.mime_type.split("/")[0] in {"audio", "video"}:
        return Media(
            "document", document.file_id, document.file_unique_id, document.file_size, None, document.mime_type
        )
    return None


def _seconds(value: int | timedelta | None) -> float | None:
    """Bot API durations are whole seconds (PTB may give them as timedelta)."""
    if value is None:
        return None
    return value.total_seconds() if isinstance(value, timedelta) else float(value)


def describe_origin(origin: MessageOrigin | None) -> str | None:
    """A forwarded message's origin as JSON for the history: type, name and date."""
    if origin is None:
        return None
    if isinstance(origin, MessageOriginUser):
        name = origin.sender_user.full_name
    elif isinstance(origin, MessageOriginHiddenUser):
        name = origin.sender_user_name
    elif isinstance(origin, MessageOriginChat):
        name = origin.sender_chat.title or ""
    elif isinstance(origin, MessageOriginChannel):
        name = origin.chat.title or ""
    else:
        name = ""
    return json.dumps({"type": origin.type, "name": name, "date": origin.date.isoformat()})


def origin_name(origin_json: str | None) -> str | None:
    """The display name stored by `describe_origin`."""
    if not origin_json:
        return None
    return json.loads(origin_json).get("name") or None
