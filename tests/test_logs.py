"""Log output: readable or JSON lines, extras carried, and never the bot token."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from bot.ops.logs import RedactingFilter, setup_logging

TOKEN = "123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw"
OTHER_TOKEN = "987654321:ZZZ-other_token_not_configured_xyz"


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """setup_logging changes process-wide state; put it back for the other tests."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: logging.getLogger(name).level for name in ("httpx", "httpcore")}
    yield
    for handler in root.handlers[:]:
        if handler not in handlers:
            root.removeHandler(handler)
            handler.close()
    root.setLevel(level)
    for name, old in levels.items():
        logging.getLogger(name).setLevel(old)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line]


def _json_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, object]]:
    return [json.loads(line) for line in _lines(capsys)]


def test_json_lines_carry_standard_fields_and_extras(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(level="INFO", fmt="json", secrets=[TOKEN])
    logging.getLogger("bot.jobs").info(
        "job %s finished",
        "j1",
        extra={"user_id": 42, "chat_id": -100, "job_id": "j1", "duration": 3.5, "rtf": 0.12, "outcome": "done"},
    )
    [entry] = _json_lines(capsys)
    assert entry["level"] == "INFO"
    assert entry["logger"] == "bot.jobs"
    assert entry["message"] == "job j1 finished"
    assert isinstance(entry["ts"], str) and entry["ts"].endswith("+00:00")
    assert {k: entry[k] for k in ("user_id", "chat_id", "job_id", "duration", "rtf", "outcome")} == {
        "user_id": 42,
        "chat_id": -100,
        "job_id": "j1",
        "duration": 3.5,
        "rtf": 0.12,
        "outcome": "done",
    }


def test_level_filters_records(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(level="WARNING", fmt="json")
    logging.getLogger("bot").info("quiet")
    logging.getLogger("bot").warning("loud")
    assert [entry["message"] for entry in _json_lines(capsys)] == ["loud"]


def test_exception_is_one_string_field_without_the_token(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(level="INFO", fmt="json", secrets=[TOKEN])
    try:
        raise ConnectionError(f"cannot reach https://api.telegram.org/bot{TOKEN}/getMe")
    except ConnectionError:
        logging.getLogger("bot").exception("polling failed")
    out = _lines(capsys)
    assert len(out) == 1  # the traceback is inside the JSON object, not extra lines
    entry = json.loads(out[0])
    assert "ConnectionError" in entry["exc"] and "Traceback" in entry["exc"]
    assert TOKEN not in out[0]
    assert "<redacted>" in entry["exc"]


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_token_never_appears(capsys: pytest.CaptureFixture[str], fmt: str) -> None:
    setup_logging(level="DEBUG", fmt=fmt, secrets=[TOKEN])  # type: ignore[arg-type]
    log = logging.getLogger("telegram.ext")
    log.info("token is %s", TOKEN)  # in the arguments
    log.info(f"token is {TOKEN}")  # in the message itself
    log.info("split %s", TOKEN[:10], extra={"url": f"https://api.telegram.org/bot{TOKEN}/getFile"})
    log.info("percent-encoded %s", TOKEN.replace(":", "%3A"))
    log.info("unknown token https://api.telegram.org/bot%s/getMe", OTHER_TOKEN)  # pattern, not secret
    log.info("local file /var/lib/telegram-bot-api/%s/voice/file_1.oga", TOKEN)
    log.debug("stack", stack_info=True, extra={"payload": {"token": TOKEN}})
    text = capsys.readouterr().err
    assert len(text.splitlines()) >= 7
    for secret in (TOKEN, TOKEN.replace(":", "%3A"), TOKEN.split(":")[1], OTHER_TOKEN.split(":")[1]):
        assert secret not in text


def test_httpx_request_urls_are_redacted_and_quietened(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(level="DEBUG", fmt="text", secrets=[TOKEN])
    httpx_log = logging.getLogger("httpx")
    assert httpx_log.getEffectiveLevel() == logging.WARNING
    assert logging.getLogger("httpcore").getEffectiveLevel() == logging.WARNING
    # What httpx writes for each request (at INFO, now suppressed) and on trouble (WARNING).
    url = f"https://api.telegram.org/bot{TOKEN}/getUpdates"
    httpx_log.info('HTTP Request: %s %s "%s %d %s"', "POST", url, "HTTP/1.1", 200, "OK")
    httpx_log.warning('HTTP Request: %s %s "%s %d %s"', "POST", url, "HTTP/1.1", 502, "Bad Gateway")
    [line] = _lines(capsys)
    assert TOKEN not in line
    assert "https://api.telegram.org/bot<redacted>/getUpdates" in line
    assert "502 Bad Gateway" in line


def test_text_format_is_readable_with_extras(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(level="INFO", fmt="text")
    logging.getLogger("bot.telegram.handlers").info("transcribed", extra={"job_id": "j7", "outcome": "done"})
    [line] = _lines(capsys)
    assert "INFO bot.telegram.handlers: transcribed" in line
    assert line.endswith("job_id=j7 outcome=done")


def test_setup_twice_keeps_one_handler(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging(level="INFO", fmt="text")
    setup_logging(level="INFO", fmt="json")
    logging.getLogger("bot").info("once")
    [entry] = _json_lines(capsys)
    assert entry["message"] == "once"


def test_bad_format_arguments_do_not_raise() -> None:
    """The filter runs outside the handler's error handling, so it must not raise itself."""
    record = logging.LogRecord("bot", logging.INFO, __file__, 1, "two %s %s", (TOKEN,), None)
    assert RedactingFilter([TOKEN]).filter(record)
    assert TOKEN not in record.getMessage()
    assert "two %s %s" in record.getMessage()
