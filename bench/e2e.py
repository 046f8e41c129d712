"""End to end: the real bot and the fake Bot API server, from its launch to answered voice notes.

`python -m bot run` runs as a subprocess against `tests.fake_telegram.FakeTelegram`
(served from a background thread here) with the default worker layout (one worker). Its
start-up is the time from the launch to its `setMyCommands` call, which it makes once the
database is open and its worker ready. Then each 10-second note is sent as an update;
the latency is from queueing the update to the arrival of the
`editMessageText` that puts the transcript into the placeholder (both stamped with
`time.monotonic()`, one clock for every process). Model time is the transcript's
`processing_seconds` as the bot stored it in its database, so the overhead (polling,
download, decode, queueing, IPC, Telegram calls) is latency minus model time.
Notes are sent one at a time, each `IDLE_SECONDS` after the last answer (a bot idle
between notes, which is when its worker starts a spare ffmpeg), after one unmeasured
note that warms the worker.
"""

from __future__ import annotations

import importlib.util
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import (
    IDLE_SECONDS,
    PYTHON,
    ROOT,
    Options,
    Row,
    Section,
    child_env,
    median,
    not_run,
    stop_group,
    voice_note,
)

TARGET_OVERHEAD_MS = 150.0
TARGET_READY_SECONDS = 5.0
NOTE_SECONDS = 10
CHAT = 4242
READY_TIMEOUT = 180.0
ANSWER_TIMEOUT = 120.0


def _transcript_edit(tg: Any, chat_id: int, message_id: int) -> Any:
    """The first edit of the bot's reply to `message_id` that is no longer the placeholder."""
    replies = {m.message_id for m in tg.sent_messages(chat_id) if m.reply_to_message_id == message_id}
    for call in tg.calls("editMessageText"):
        params = call.params
        if (params.get("chat_id") == chat_id and params.get("message_id") in replies and call.status == 200
                and not str(params.get("text", "")).startswith("Transcribing")):
            return call
    return None


def _send_and_time(tg: Any, ogg: bytes) -> tuple[float, str, list[tuple[str, float]]]:
    """One note: seconds from update to transcript edit, the file's unique id, and the
    bot's requests in between (method, ms after the update), which show where time goes."""
    ref = tg.add_file(ogg)
    sent_at = time.monotonic()
    update = tg.send_voice(CHAT, CHAT, ref, duration=NOTE_SECONDS)
    message_id = update["message"]["message_id"]
    edit = tg.wait_for_sync(lambda server: _transcript_edit(server, CHAT, message_id), timeout=ANSWER_TIMEOUT)
    timeline = [(call.method, (call.at - sent_at) * 1000.0) for call in tg.calls()
                if sent_at <= call.at <= edit.at and call.method.lower() != "getupdates"]
    return edit.at - sent_at, ref.file_unique_id, timeline


def _model_seconds(database: Path, unique_ids: list[str]) -> dict[str, float]:
    with sqlite3.connect(database) as db:
        rows = db.execute(
            f"SELECT file_unique_id, processing_seconds FROM transcripts WHERE file_unique_id IN "
            f"({','.join('?' * len(unique_ids))})", unique_ids,
        ).fetchall()
    return {unique_id: seconds for unique_id, seconds in rows}


def run(opts: Options) -> Section:
    if importlib.util.find_spec("bot.app") is None:
        return not_run("e2e", "bot.app missing")
    try:
        from tests.fake_telegram import FakeTelegram
    except ImportError as exc:
        return not_run("e2e", f"tests.fake_telegram not importable: {exc}")

    n = opts.reps(7, 5)
    ogg = voice_note(NOTE_SECONDS, offset=42.0).read_bytes()
    with tempfile.TemporaryDirectory(prefix="voicebot-e2e-") as tmp, FakeTelegram() as tg:
        database = Path(tmp) / "bot.sqlite3"
        env = {k: v for k, v in child_env().items() if not k.startswith(("ASR_", "TELEGRAM_", "MAX_"))}
        env.update(tg.env(), ASR_MODEL=str(opts.model_dir), ASR_DEVICE="cpu", DATABASE_PATH=str(database),
                   PYTHONUNBUFFERED="1")
        log_path = Path(tmp) / "bot.log"
        with open(log_path, "wb") as log:
            launched = time.monotonic()
            bot = subprocess.Popen([PYTHON, "-m", "bot", "run"], cwd=ROOT, env=env, stdout=log,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        try:
            def ready(server: Any) -> bool:
                if bot.poll() is not None:
                    raise RuntimeError(f"the bot exited with {bot.returncode}: {log_path.read_text()[-2000:]}")
                return bool(server.calls("setMyCommands"))

            tg.wait_for_sync(ready, timeout=READY_TIMEOUT)
            ready_seconds = tg.calls("setMyCommands")[0].at - launched
            print(f"e2e: bot ready {ready_seconds:.2f} s after launch; warm-up note", file=sys.stderr, flush=True)
            _send_and_time(tg, ogg)
            measured: list[tuple[float, str, list[tuple[str, float]]]] = []
            for index in range(n):
                print(f"e2e: note {index + 1}/{n}", file=sys.stderr, flush=True)
                time.sleep(IDLE_SECONDS)  # the note arrives at an idle bot, as most do
                measured.append(_send_and_time(tg, ogg))
        finally:
            stop_group(bot, 30)
        model = _model_seconds(database, [unique_id for _, unique_id, _ in measured])

    runs = [{"latency": latency, "model": model[unique_id], "overhead": latency - model[unique_id],
             "timeline_ms": timeline}
            for latency, unique_id, timeline in measured if unique_id in model]
    if len(runs) < len(measured):
        raise RuntimeError(f"only {len(runs)} of {len(measured)} transcripts were stored with their model time")
    latency = median([r["latency"] for r in runs])
    overhead_ms = median([r["overhead"] for r in runs]) * 1000.0
    section = Section(data={"runs": runs, "latency_median": latency, "overhead_ms_median": overhead_ms,
                            "ready_seconds": ready_seconds})
    section.add(Row("e2e", "`python -m bot run` launch → worker ready (its setMyCommands)", f"{ready_seconds:.2f} s", 1,
                    f"≤ {TARGET_READY_SECONDS:.0f} s", ready_seconds <= TARGET_READY_SECONDS))
    section.add(Row("e2e", f"{NOTE_SECONDS} s voice note: update → transcript edit", f"{latency:.2f} s", n))
    section.add(Row("e2e", "non-model share of that (latency − model time)",
                    f"{overhead_ms:.0f} ms ({overhead_ms / 10 / latency:.0f}%)", n,
                    f"≤ {TARGET_OVERHEAD_MS:.0f} ms", overhead_ms <= TARGET_OVERHEAD_MS))
    section.add(Row("e2e", "bot requests, ms after the update (median)", _median_timeline(runs), n))
    decode_ms = _decode_ms(opts)
    section.data["decode_ms_in_process"] = decode_ms
    section.add(Row("e2e", "of the overhead: decoding this note, spare ffmpeg ready / none (timed here)",
                    f"{decode_ms['spare']:.0f} / {decode_ms['none']:.0f} ms", opts.reps(7, 5)))
    return section


def _median_timeline(runs: list[dict[str, Any]]) -> str:
    """'method +ms' for each request the bot made in order, medians over the runs."""
    sequences = [[method for method, _ in run["timeline_ms"]] for run in runs]
    if any(sequence != sequences[0] for sequence in sequences):
        return "varies between runs (see results.json)"
    return ", ".join(f"{method} +{median([run['timeline_ms'][i][1] for run in runs]):.0f}"
                     for i, method in enumerate(sequences[0]))


def _decode_ms(opts: Options) -> dict[str, float]:
    """What decoding the same note costs, so the overhead can be split into decode and the rest:
    as an idle worker does it (its spare ffmpeg waiting), and with an ffmpeg started for it."""
    from bot.audio.decode import AudioDecoder

    path = voice_note(NOTE_SECONDS, offset=42.0)
    times: dict[str, list[float]] = {"spare": [], "none": []}
    with AudioDecoder(max_seconds=60.0) as decoder:
        decoder.decode(path)
        for _ in range(opts.reps(7, 5)):
            for kind in times:
                if kind == "spare":
                    decoder.prepare()
                    time.sleep(IDLE_SECONDS)
                started = time.perf_counter()
                decoder.decode(path)
                times[kind].append((time.perf_counter() - started) * 1000.0)
    return {kind: median(values) for kind, values in times.items()}
