"""Logging set-up: readable lines or JSON lines, with the bot token scrubbed from everything.

The token is part of every Bot API URL (`.../bot<id>:<secret>/getUpdates`), and libraries log
those URLs (httpx at INFO) or put them in exception messages. Anyone who can read the logs
could then run the bot, so redaction happens in a filter on the handler, where it sees every
record that is written, whichever logger it came from.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import quote

REDACTED = "<redacted>"

# `bot<digits>:<secret>` as it appears in Bot API URLs; `%3A` when the URL was percent-encoded.
_TOKEN_IN_URL = re.compile(r"bot\d+(?::|%3[Aa])[A-Za-z0-9_-]+")

# Attributes every LogRecord has; anything else on a record came from `extra=`.
_STANDARD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

# Name of the handler this module installs, so that a second set-up replaces it.
_HANDLER_NAME = "voicebot"

# Loggers that write a line per HTTP request, each carrying the token in the URL.
_CHATTY_LOGGERS = ("httpx", "httpcore", "apscheduler")


class RedactingFilter(logging.Filter):
    """Rewrites each record so that no secret survives in its message, extras or traceback.

    The message is rendered (`msg % args`) before scrubbing because a secret can be split
    between the format string and its arguments; the record then carries the finished text.
    """

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        variants = {form for secret in secrets if secret for form in (secret, quote(secret, safe=""))}
        # Longest first, so a secret that contains another is replaced whole.
        self._secrets = sorted(variants, key=len, reverse=True)

    def redact(self, text: str) -> str:
        """`text` with every known secret and every token-bearing URL part replaced."""
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _TOKEN_IN_URL.sub("bot" + REDACTED, text)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad format string must not cost the line (or raise in the caller)
            message = f"{record.msg} {record.args!r}"
        record.msg = self.redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.redact(record.exc_text)
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info)
        for key, value in _extras(record).items():
            if not isinstance(value, int | float | None):
                # Anything that is not a number is written as text, so it is scrubbed as text.
                setattr(record, key, self.redact(str(value)))
        return True


class TextFormatter(logging.Formatter):
    """`2024-05-01 12:00:00,123 INFO bot.telegram.handlers: message key=value ...`: for people."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        extras = " ".join(f"{key}={value}" for key, value in _extras(record).items())
        return f"{line} {extras}" if extras else line


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers: ts, level, logger, message, extras, exc."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update(_extras(record))
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(*, level: str, fmt: Literal["text", "json"], secrets: Iterable[str] = ()) -> None:
    """Send all logs to stderr in `fmt`, at `level`, with `secrets` (the bot token) redacted.

    Safe to call again (tests, reconfiguration): the previous handler is replaced, and
    handlers that others attached to the root logger are left alone.
    """
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    handler = logging.StreamHandler(sys.stderr)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(RedactingFilter(secrets))
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in _CHATTY_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


def _extras(record: logging.LogRecord) -> Mapping[str, object]:
    """The fields a caller attached with `extra=` (user_id, job_id, duration, ...)."""
    return {key: value for key, value in record.__dict__.items() if key not in _STANDARD_ATTRS}
