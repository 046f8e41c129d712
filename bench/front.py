"""What one front handles: the real bot (`ASR_BACKEND=ray`) against the fake Bot API, the model work elsewhere.

The front is `python -m bot run`, as in production; the cluster is `python -m bot serve` (a
local Ray with Serve on loopback) running the tiny random CTC model of the tests, so each job
costs the cluster a few milliseconds and the figures are the front's own cost: polling, the
per-user limits, the durable job table, downloading from the Bot API, the HTTP stream to the
cluster, the placeholder and its edit. Both share this machine's cores, so the cluster's part
is not free here, just small. Figures:

- dispatched updates per second: N distinct voice notes (each its own `file_unique_id`) from
  N/3 users, three each (the default per-user limit of jobs at once), all queued at once;
  from queueing the first update to the last note's final reply;
- cached re-forwards per second: the same N notes forwarded again by N/3 other users: each
  is answered from the SQLite cache, which the run checks by the bot downloading nothing.

Not run when the `cluster` extra (Ray) is not installed.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.common import (
    PYTHON,
    ROOT,
    Options,
    Row,
    Section,
    child_env,
    median,
    not_run,
    percentile,
    stop_group,
    voice_note,
)

NOTE_SECONDS = 3
#: Notes each user sends at once: the default USER_MAX_CONCURRENT_JOBS, so none is refused.
NOTES_PER_USER = 3
FIRST_USER = 700_000
READY_TIMEOUT = 240.0
PHASE_TIMEOUT = 600.0
#: How often the answers are looked at: one call to the fake server per look.
POLL_SECONDS = 0.05
#: The cluster: two replicas of one CPU, two jobs at once each; the bot keeps four in flight.
SERVE_ENV = {"ASR_MIN_REPLICAS": "2", "ASR_MAX_REPLICAS": "2", "ASR_REPLICA_CPUS": "1",
             "ASR_MAX_ONGOING_REQUESTS": "2"}
REMOTE_CONCURRENCY = 4


def run(opts: Options) -> Section:
    if importlib.util.find_spec("ray") is None:
        return not_run("front", "the cluster extra is not installed (pip install -e .[cluster])")
    from tests.fake_telegram import FakeTelegram
    from tests.model_factory import build_random_ctc_model

    count = opts.reps(150, 45)
    ogg = voice_note(NOTE_SECONDS, offset=7.0).read_bytes()
    with tempfile.TemporaryDirectory(prefix="voicebot-front-") as tmp, FakeTelegram() as tg:
        model = build_random_ctc_model(Path(tmp) / "tiny-model")
        port = _free_port()
        base = {k: v for k, v in child_env().items() if not k.startswith(("ASR_", "TELEGRAM_", "MAX_", "RAY_"))}
        common = {**base, "ASR_MODEL": str(model), "ASR_DEVICE": "cpu", "RAY_USAGE_STATS_ENABLED": "0",
                  "PYTHONUNBUFFERED": "1"}
        server = _start([PYTHON, "-m", "bot", "serve", "--port", str(port)], {**common, **SERVE_ENV},
                        Path(tmp) / "serve.log")
        bot = None
        try:
            _wait_healthy(f"http://127.0.0.1:{port}/healthz", server, Path(tmp) / "serve.log")
            bot = _start([PYTHON, "-m", "bot", "run"], {
                **common, **tg.env(), "ASR_BACKEND": "ray", "ASR_SERVER_URL": f"http://127.0.0.1:{port}",
                "ASR_REMOTE_CONCURRENCY": str(REMOTE_CONCURRENCY), "DATABASE_PATH": str(Path(tmp) / "bot.sqlite3"),
            }, Path(tmp) / "bot.log")
            tg.wait_for_sync(lambda server: _alive(bot, Path(tmp) / "bot.log") and server.calls("setMyCommands"),
                             timeout=READY_TIMEOUT)
            print("front: bot ready; warm-up note", file=sys.stderr, flush=True)
            _phase(tg, [(FIRST_USER - 1, tg.add_file(ogg), None)])
            refs = [tg.add_file(ogg) for _ in range(count)]
            users = [FIRST_USER + index // NOTES_PER_USER for index in range(count)]
            print(f"front: {count} distinct notes from {count // NOTES_PER_USER} users", file=sys.stderr, flush=True)
            dispatched = _phase(tg, list(zip(users, refs, [None] * count, strict=True)))
            downloads = len(tg.calls("getFile"))
            print(f"front: {count} re-forwards of the same notes", file=sys.stderr, flush=True)
            others = [user + count for user in users]
            cached = _phase(tg, list(zip(others, refs, users, strict=True)))
            if len(tg.calls("getFile")) != downloads:
                raise RuntimeError("a re-forwarded note was downloaded again: it was not answered from the cache")
        finally:
            for process in (bot, server):
                if process is not None:
                    stop_group(process, 60)
    return _section(dispatched, cached, count)


def _section(dispatched: dict[str, Any], cached: dict[str, Any], count: int) -> Section:
    section = Section(data={"dispatched": dispatched, "cached": cached, "notes": count,
                            "note_seconds": NOTE_SECONDS, "serve_env": SERVE_ENV,
                            "remote_concurrency": REMOTE_CONCURRENCY})
    users = count // NOTES_PER_USER
    section.add(Row("front", f"{count} distinct {NOTE_SECONDS} s notes from {users} users: updates/s dispatched",
                    f"{count / dispatched['wall_seconds']:.1f}/s", count))
    section.add(Row("front", "  their latency update → final reply, median / p95",
                    f"{dispatched['latency_median']:.2f} / {dispatched['latency_p95']:.2f} s", count))
    section.add(Row("front", f"{count} cached re-forwards from {users} other users: answered/s",
                    f"{count / cached['wall_seconds']:.1f}/s", count))
    section.add(Row("front", "  their latency update → reply, median / p95",
                    f"{cached['latency_median']:.2f} / {cached['latency_p95']:.2f} s", count))
    section.add(Row("front", "note: the cluster runs the tiny random model, so these are the front's own cost",
                    "", None))
    return section


def _phase(tg: Any, notes: list[tuple[int, Any, int | None]]) -> dict[str, Any]:
    """Queue every note at once (user, file, forwarded from); wait for each one's final reply."""
    began = time.monotonic()
    pending: dict[tuple[int, int], float] = {}
    for user, ref, origin in notes:
        update = tg.send_voice(user, user, ref, duration=NOTE_SECONDS, forward_from=origin)
        pending[(user, update["message"]["message_id"])] = time.monotonic()
    latencies: list[float] = []
    deadline = began + PHASE_TIMEOUT
    while pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(pending)} of {len(notes)} notes were not answered in {PHASE_TIMEOUT:.0f} s")
        time.sleep(POLL_SECONDS)
        now = time.monotonic()
        final = _final_replies(tg.sent_messages())
        for key in [key for key in pending if key in final]:
            latencies.append(now - pending.pop(key))
    wall = time.monotonic() - began
    return {"wall_seconds": wall, "latency_median": median(latencies), "latency_p95": percentile(latencies, 95)}


def _final_replies(messages: list[Any]) -> set[tuple[int, int]]:
    """(chat, message) of every message the bot has answered for good: replies, none a placeholder any more
    (as tests/conftest.py's `final_replies` reads them)."""
    final: dict[tuple[int, int], bool] = {}
    for message in messages:
        if message.reply_to_message_id is not None:
            key = (message.chat_id, message.reply_to_message_id)
            placeholder = bool(message.text and message.text.startswith("Transcribing"))
            final[key] = final.get(key, True) and not placeholder
    return {key for key, done in final.items() if done}


def _start(argv: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:
        return subprocess.Popen(argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)


def _alive(process: subprocess.Popen[bytes], log_path: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"{process.args!r} exited with {process.returncode}: {log_path.read_text()[-2000:]}")
    return True


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        _alive(process, log_path)
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                if response.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer within {READY_TIMEOUT:.0f} s: {log_path.read_text()[-2000:]}")


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
