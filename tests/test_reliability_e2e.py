"""Reliability end to end: hostile files, crashes, faults and restarts, through the real bot process.

Each test starts `python -m bot run` against the fake Bot API server (see conftest) and
checks what a user would see: every input gets one clear answer, the bot keeps serving
afterwards, and nothing is left behind (temporary files, half-finished jobs).
Scenarios share one bot where they do not interfere, because a start costs ~8 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import shutil
import signal
import socket
import sqlite3
import struct
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from bot.asr.recognizer import Recognizer
from tests.conftest import BotProcess, engine_text, exits_within, final_replies, wait_answer, wait_ready
from tests.fake_telegram import FakeTelegram, SentMessage
from tests.media import convert, looped, make_silence, make_video

pytestmark = pytest.mark.slow

UNREADABLE = "I couldn't read any audio in this file. Is it a valid voice note, audio or video file?"
NO_AUDIO_TRACK = "This file has no audio track, so there is nothing to transcribe."
STORAGE_NOTE = "(I couldn't save this one to your history.)"
NOT_MODIFIED = (
    "Bad Request: message is not modified: specified new message content and reply markup "
    "are exactly the same as a current content and reply markup of the message"
)
#: The bot's read timeout for Bot API calls and downloads (TELEGRAM_READ_TIMEOUT_SECONDS, shorter
#: than the default 30 s to keep the test short); delays past it are timeouts.
BOT_READ_TIMEOUT = 6.0


# --- media ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory, speech_ogg: Path) -> dict[str, Path]:
    """Every file the tests send, made once per module with the real ffmpeg."""
    directory = tmp_path_factory.mktemp("reliability-media")
    files: dict[str, Path] = {}

    # Long recordings by looping the speech note with stream copy (fast): a job that keeps
    # a worker busy for seconds with the tiny model.
    files["medium"] = directory / "medium.ogg"  # ~3 min: ~1.5 s of work
    looped(speech_ogg, files["medium"], 41)
    files["long"] = directory / "long.ogg"  # ~14 min: ~8 s of work
    looped(speech_ogg, files["long"], 201)
    files["longer"] = directory / "longer.ogg"  # ~42 min (MAX_AUDIO_SECONDS raised for it): ~14 s of work
    looped(speech_ogg, files["longer"], 601)

    # 3 h of Opus silence in a few MB: a 60 s encode looped by stream copy.
    minute = make_silence(directory / "minute.ogg", 60, "-c:a", "libopus", "-b:a", "6k", rate=8_000)
    files["three_hours"] = directory / "three-hours.ogg"
    looped(minute, files["three_hours"], 180)

    # Two hours of FLAC silence in a few KB, its STREAMINFO sample count zeroed ("unknown"),
    # so only the decoder's output cap can stop it.
    honest = make_silence(directory / "honest-bomb.flac", 7200, "-frame_size", "65535", rate=8_000)
    files["flac_bomb"] = _flac_with_unknown_length(honest, directory / "bomb.flac")

    files["no_audio_video"] = make_video(directory / "no-sound.mp4", 2.0, audio=False)
    files["surround"] = convert(speech_ogg, directory / "surround.flac", "-ac", "8", "-ar", "96000")
    data = speech_ogg.read_bytes()
    files["truncated"] = directory / "truncated.ogg"
    files["truncated"].write_bytes(data[: len(data) * 2 // 3])
    return files


def _flac_with_unknown_length(src: Path, dst: Path) -> Path:
    """Copy a FLAC file with STREAMINFO's 36-bit total-samples field set to 0 (allowed: "unknown")."""
    data = bytearray(src.read_bytes())
    assert data[:4] == b"fLaC"
    (packed,) = struct.unpack_from(">Q", data, 18)
    struct.pack_into(">Q", data, 18, packed & ~((1 << 36) - 1))
    dst.write_bytes(data)
    return dst


def _hls(target: str) -> bytes:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{target}\n#EXT-X-ENDLIST\n".encode()


def _ffconcat(target: str) -> bytes:
    return f"ffconcat version 1.0\nfile '{target}'\n".encode()


# --- helpers ----------------------------------------------------------------------------------


def message_id(update: dict) -> int:
    return int(update["message"]["message_id"])


def replies_to(telegram: FakeTelegram, chat_id: int, to: int) -> list[SentMessage]:
    return [m for m in telegram.sent_messages(chat_id) if m.reply_to_message_id == to]


async def answer_text(telegram: FakeTelegram, chat_id: int, to: int, *, timeout: float = 60.0) -> str:
    """The text of the single final answer to message `to`."""
    [reply] = await wait_answer(telegram, chat_id, to, timeout=timeout)
    return reply.text or ""


def workers(bot: BotProcess) -> list[psutil.Process]:
    """The bot's model worker processes: what its multiprocessing forkserver has forked."""
    return [
        worker
        for child in psutil.Process(bot.process.pid).children()
        if "forkserver" in " ".join(child.cmdline())
        for worker in child.children()
    ]


def alive(process: psutil.Process) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def cpu_seconds(process: psutil.Process) -> float:
    """CPU time `process` has used, or -1 once it is gone."""
    try:
        times = process.cpu_times()
    except psutil.NoSuchProcess:
        return -1.0
    return times.user + times.system


async def busy_worker(bot: BotProcess, *, timeout: float = 30.0) -> psutil.Process:
    """The worker running a job right now: it has an ffmpeg reading a file, or uses CPU (the
    model) where idle ones sleep. (Any ffmpeg child does not tell: an idle worker keeps a spare
    one waiting on its stdin.)"""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        before = {worker: cpu_seconds(worker) for worker in workers(bot)}
        for worker in before:
            with contextlib.suppress(psutil.Error):
                if any("file:" in " ".join(child.cmdline()) for child in worker.children()):
                    return worker
        await asyncio.sleep(0.1)
        for worker, used in before.items():
            if used >= 0 and cpu_seconds(worker) - used > 0.03:
                return worker
    raise AssertionError(f"no worker started a job within {timeout} s:\n{bot.log[-3000:]}")


async def exit_code(bot: BotProcess, timeout: float = 60.0) -> int:
    """Wait for a bot that is expected to stop by itself."""
    return await asyncio.wait_for(asyncio.to_thread(bot.process.wait), timeout)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def metric(port: int, name: str) -> float:
    """One sample of the bot's Prometheus metrics (0 when absent)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        for line in response.read().decode().splitlines():
            if line.startswith(name + " "):
                return float(line.split()[1])
    return 0.0


# --- hostile input ----------------------------------------------------------------------------


@pytest.fixture
def bot_tmp() -> Iterator[Path]:
    """A TMPDIR of the bot's own, short: the worker forkserver's socket lives under it, and an AF_UNIX
    path must fit 107 bytes (pytest's tmp_path under xdist, one folder deeper, does not)."""
    path = Path(tempfile.mkdtemp(prefix="bot-tmp-", dir="/tmp"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


async def test_hostile_files_each_get_a_clear_reply_and_leave_no_temp_files(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], media: dict[str, Path], speech_ogg: Path,
    recognizer: Recognizer, bot_tmp: Path,
) -> None:
    # Expected texts first: computing them blocks the event loop the fake server runs on.
    partial, surround, normal_text = (engine_text(recognizer, path)
                                      for path in (media["truncated"], media["surround"], speech_ogg))
    bot = start_bot(TMPDIR=str(bot_tmp), MAX_AUDIO_SECONDS="600", ASR_WORKERS="2")
    await wait_ready(telegram, bot)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    port = listener.getsockname()[1]
    add = telegram.add_file
    user = iter(range(1001, 1100))  # one user per file, so per-user limits stay out of the way

    rng = random.Random(7)
    cases: dict[str, tuple[dict, str]] = {}

    def case(name: str, update: dict, expected: str) -> None:
        cases[name] = (update, expected)

    # Refused before download, from what the update itself says.
    too_big = add(speech_ogg.read_bytes(), file_size=25 * 2**20)
    too_long = add(speech_ogg.read_bytes())
    case("25 MB (advertised) voice note", telegram.send_voice(u := next(user), u, too_big, duration=5),
         "This file is too big (25 MB): I can download files up to 20 MB.")
    case("voice note of 1 h (advertised)", telegram.send_voice(u := next(user), u, too_long, duration=3600),
         "This recording is too long (1:00:00); I transcribe up to 10:00.")
    # The rest is downloaded and meets the decoder.
    case("random bytes named .ogg",
         telegram.send_voice(u := next(user), u, add(rng.randbytes(50_000)), duration=3), UNREADABLE)
    case("truncated OGG",
         telegram.send_voice(u := next(user), u, add(media["truncated"].read_bytes()), duration=5),
         partial)
    case("3 h OGG/Opus claiming 5 s",
         telegram.send_voice(u := next(user), u, add(media["three_hours"].read_bytes()), duration=5),
         "This recording is too long (3:00:00); I transcribe up to 10:00.")
    case("FLAC bomb with unknown length",
         telegram.send_document(u := next(user), u, add(media["flac_bomb"].read_bytes()),
                                mime_type="audio/flac", file_name="voice.flac"),
         # Only the decoder's cap stops it, at the limit: the real length is unknown.
         "This recording is too long (over 10:00); I transcribe up to 10:00.")
    case("video without an audio track",
         telegram.send_video(u := next(user), u, add(media["no_audio_video"].read_bytes()), duration=2),
         NO_AUDIO_TRACK)
    case("8-channel 96 kHz FLAC",
         telegram.send_audio(u := next(user), u, add(media["surround"].read_bytes()), duration=5,
                             mime_type="audio/flac", file_name="surround.flac"),
         surround)
    case("zero-byte file", telegram.send_voice(u := next(user), u, add(b""), duration=1), UNREADABLE)
    case("HLS playlist to a URL, as a voice note",
         telegram.send_voice(u := next(user), u, add(_hls(f"http://127.0.0.1:{port}/x.ts")), duration=3),
         UNREADABLE)
    case("HLS playlist to /etc/passwd, as an audio document",
         telegram.send_document(u := next(user), u, add(_hls("/etc/passwd")), mime_type="audio/ogg",
                                file_name="voice.ogg"),
         UNREADABLE)
    case("ffconcat to /etc/passwd, as music",
         telegram.send_audio(u := next(user), u, add(_ffconcat("/etc/passwd")), duration=3, file_name="song.mp3"),
         UNREADABLE)
    case("ffconcat to a URL, as a voice note",
         telegram.send_voice(u := next(user), u, add(_ffconcat(f"http://127.0.0.1:{port}/x.wav")), duration=3),
         UNREADABLE)
    case("text file with an audio MIME type",
         telegram.send_document(u := next(user), u, add(b"Never gonna give you up\n" * 200),
                                mime_type="audio/mpeg", file_name="lyrics.mp3"),
         UNREADABLE)

    answered: dict[str, str] = {}
    for name, (update, _) in cases.items():
        answered[name] = await answer_text(telegram, update["message"]["chat"]["id"], message_id(update))
    print("\nhostile input -> reply:")
    for name, text in answered.items():
        print(f"  {name}: {text[:100]!r}")
    for name, (_, expected) in cases.items():
        assert answered[name] == expected, name

    # The bot keeps serving: a normal voice note afterwards gets its transcript.
    normal = telegram.send_voice(1200, 1200, add(speech_ogg.read_bytes()), duration=5)
    assert await answer_text(telegram, 1200, message_id(normal)) == normal_text

    fetched = {call.params.get("file_id") for call in telegram.calls("getFile")}
    assert not fetched & {too_big.file_id, too_long.file_id}, "refused files must not be downloaded"
    with pytest.raises(BlockingIOError):
        listener.accept()  # no playlist made ffmpeg connect anywhere
    listener.close()
    assert await bot.stop() == 0
    assert not list(bot_tmp.glob("voicebot-*")), "temporary job directories leaked"
    assert "Traceback" not in bot.log


# --- workers and restarts ---------------------------------------------------------------------


async def test_killed_worker_is_replaced_and_sigterm_resumes_the_job_after_restart(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], media: dict[str, Path], speech_ogg: Path,
    recognizer: Recognizer, tmp_path: Path,
) -> None:
    expected = engine_text(recognizer, media["medium"])  # before the bot starts: this blocks the fake server
    bot = start_bot(ASR_WORKERS="2", MAX_AUDIO_SECONDS="3600")
    await wait_ready(telegram, bot)

    # A worker killed mid-job (as by the OOM killer): replaced, and the job retried and answered.
    medium = telegram.send_voice(1301, 1301, telegram.add_file(media["medium"].read_bytes()), duration=171)
    victim = await busy_worker(bot)
    its_ffmpegs = victim.children()  # the spare and/or the ffmpeg decoding the file
    victim.send_signal(signal.SIGKILL)
    # A split transcript carries its buttons on the last part: wait for that one.
    answer = await telegram.wait_for(
        lambda s: (found := final_replies(s, 1301, message_id(medium))) and found[-1].buttons and found, timeout=90
    )
    assert " ".join(m.text or "" for m in answer).split() == expected.split()
    assert "exited with code -9 during job" in bot.log
    assert victim.pid not in [w.pid for w in workers(bot)] and len(workers(bot)) == 2
    assert not [p for p in its_ffmpegs if alive(p)]  # none outlives its worker

    # SIGTERM while a long and a short job run: the short one finishes within the grace
    # period and is answered; the long one stays in the database; the bot exits cleanly.
    longer = telegram.send_voice(1302, 1302, telegram.add_file(media["longer"].read_bytes()), duration=2501)
    await busy_worker(bot)
    short_file = telegram.add_file(speech_ogg.read_bytes())
    short = telegram.send_voice(1303, 1303, short_file, duration=5)
    await telegram.wait_for(lambda s: short_file.file_id in s.downloads(), timeout=30)
    await asyncio.sleep(0.3)  # the download reaches the worker queue
    bot.process.send_signal(signal.SIGTERM)  # the main process, as `docker stop` does
    assert await exit_code(bot) == 0
    assert await answer_text(telegram, 1303, message_id(short), timeout=1) == engine_text(recognizer, speech_ogg)
    assert "interrupted by shutdown" in bot.log
    assert not (tmp_path / "bot.sqlite3-wal").exists(), "the database was not closed cleanly"
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        [(status,)] = db.execute("SELECT status FROM jobs WHERE chat_id = 1302").fetchall()
    assert status in ("queued", "running")
    assert not final_replies(telegram, 1302, message_id(longer))

    # The next start resumes it: answered exactly once, in the same placeholder.
    bot = start_bot(MAX_AUDIO_SECONDS="3600")
    await wait_ready(telegram, bot)
    answer = await wait_answer(telegram, 1302, message_id(longer), timeout=120)
    assert "resuming 1 unfinished jobs" in bot.log
    assert len(answer) == 2 and [m.document is not None for m in answer].count(True) == 1
    assert len(telegram.calls("sendDocument")) == 1  # the transcript came once
    assert await bot.stop() == 0
    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        assert db.execute("SELECT status FROM jobs WHERE status != 'done'").fetchall() == []
    assert "Task was destroyed" not in bot.log


async def test_sigterm_while_starting_or_just_ready_stops_cleanly(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], tmp_path: Path,
) -> None:
    """`docker stop` right after `docker start`: while the model loads, and in the instant the bot
    is ready (a stop signal there once left the shutdown stopped half-way, and the process hung)."""
    bot = start_bot()
    deadline = time.monotonic() + 60
    while "migrated to schema" not in bot.log and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert await bot.stop(timeout=15) == 0  # the start-up is cancelled, not waited for
    assert "stopped" in bot.log and "Traceback" not in bot.log
    assert not telegram.calls("getUpdates")

    bot = start_bot()
    await wait_ready(telegram, bot)
    descendants = psutil.Process(bot.process.pid).children(recursive=True)  # forkserver, worker, spare ffmpeg
    assert workers(bot) and len(descendants) >= 2
    assert await bot.stop(timeout=15) == 0
    assert "stopped" in bot.log and "Traceback" not in bot.log
    assert not (tmp_path / "bot.sqlite3-wal").exists(), "the database was not closed cleanly"
    # The process ends itself once stopped (no interpreter teardown): nothing it started outlives it.
    assert all(exits_within(process.pid, 5) for process in descendants), [p.cmdline() for p in descendants if alive(p)]


# --- start-up errors --------------------------------------------------------------------------


async def test_missing_ffmpeg_is_a_one_line_start_up_error(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], tmp_path: Path,
) -> None:
    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    bot = start_bot(PATH=str(empty_bin))
    assert await exit_code(bot) != 0
    assert "ffmpeg not found on PATH" in bot.log
    assert "Traceback" not in bot.log
    assert not telegram.calls("getUpdates")


async def test_bad_asr_model_is_a_start_up_error_naming_the_setting(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], tmp_path: Path,
) -> None:
    bot = start_bot(ASR_MODEL=str(tmp_path / "no-such-model"))
    assert await exit_code(bot) != 0
    error_lines = [line for line in bot.log.splitlines() if "ASR_MODEL=" in line]
    assert error_lines and error_lines[-1].startswith("error: ASR_MODEL=")
    assert "Traceback" not in bot.log
    assert not telegram.calls("getUpdates")


# --- storage failure --------------------------------------------------------------------------


async def test_locked_database_still_delivers_the_transcript(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], speech_ogg: Path, recognizer: Recognizer,
    tmp_path: Path,
) -> None:
    metrics_port = free_port()
    bot = start_bot(METRICS_PORT=str(metrics_port))
    await wait_ready(telegram, bot)
    expected = engine_text(recognizer, speech_ogg)
    before = metric(metrics_port, "storage_errors_total")

    # Another process holds the write lock far longer than the bot's busy timeout (5 s).
    lock = sqlite3.connect(tmp_path / "bot.sqlite3", isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")
    try:
        update = telegram.send_voice(1401, 1401, telegram.add_file(speech_ogg.read_bytes()), duration=5)
        [reply] = await wait_answer(telegram, 1401, message_id(update), timeout=60)
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert reply.text == f"{expected}\n\n{STORAGE_NOTE}"
    assert not reply.buttons  # nothing stored, so nothing to download later
    assert "could not persist job" in bot.log and "storage error: database is locked" in bot.log
    assert metric(metrics_port, "storage_errors_total") >= before + 2

    # Once the lock is gone the bot writes again: transcript stored, buttons back.
    update = telegram.send_voice(1401, 1401, telegram.add_file(speech_ogg.read_bytes()), duration=5)
    [reply] = await wait_answer(telegram, 1401, message_id(update))
    assert reply.text == expected and reply.buttons
    assert await bot.stop() == 0


# --- Telegram faults --------------------------------------------------------------------------


async def test_telegram_faults_still_end_in_one_transcript_each(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], media: dict[str, Path], speech_ogg: Path,
    recognizer: Recognizer,
) -> None:
    bot = start_bot(ASR_WORKERS="2", TELEGRAM_READ_TIMEOUT_SECONDS=str(BOT_READ_TIMEOUT))
    await wait_ready(telegram, bot)
    expected = engine_text(recognizer, speech_ogg)

    def voice(user_id: int, path: Path = speech_ogg, duration: int = 5) -> int:
        file = telegram.add_file(path.read_bytes())
        return message_id(telegram.send_voice(user_id, user_id, file, duration=duration))

    # Timeouts (answers held past the bot's read timeout) on getFile, a download and
    # sendMessage, on three notes at once: each call is retried after its timeout.
    slow_download = telegram.add_file(speech_ogg.read_bytes())
    slow = [
        telegram.fail_file_download(slow_download.file_id, delay=BOT_READ_TIMEOUT + 2),
        telegram.delay("getFile", BOT_READ_TIMEOUT + 2, times=1),
        telegram.delay("sendMessage", BOT_READ_TIMEOUT + 2, times=1),
    ]
    timeouts = {1501: voice(1501), 1502: voice(1502),
                1503: message_id(telegram.send_voice(1503, 1503, slow_download, duration=5))}

    # While those wait, one note at a time so that each fault meets its own note:
    # "message is not modified" on a progress edit of a long job is taken as done...
    long_note = voice(1510, media["long"], 841)
    await telegram.wait_for(lambda s: replies_to(s, 1510, long_note))
    not_modified = telegram.fail_next("editMessageText", status=400, description=NOT_MODIFIED)
    await telegram.wait_for(lambda s: not_modified.fired, timeout=10)

    # ...flood control (429 with retry_after) and server errors (5xx) on sending and editing...
    for chat, method, status in [
        (1511, "sendMessage", 429), (1512, "editMessageText", 429),
        (1513, "sendMessage", 502), (1514, "editMessageText", 500),
    ]:
        fault = telegram.fail_next(method, status=status, retry_after=1 if status == 429 else None, times=2)
        assert await answer_text(telegram, chat, voice(chat)) == expected, (method, status)
        assert fault.fired == 2

    # ...and the user deleting the voice note and the "Transcribing…" message before the
    # reply (getFile held for 2 s to leave time for it): the transcript comes as a new message.
    telegram.delay("getFile", 2, times=1)
    note = voice(1521)
    [placeholder] = await telegram.wait_for(lambda s: replies_to(s, 1521, note))
    telegram.user_deletes_message(1521, note)
    telegram.user_deletes_message(1521, placeholder.message_id)
    found = await telegram.wait_for(lambda s: [m for m in s.sent_messages(1521) if m.text == expected], timeout=60)
    assert len(found) == 1 and found[0].reply_to_message_id is None

    answer = await wait_answer(telegram, 1510, long_note, timeout=60)
    assert any("here it is as a file" in (m.text or "") for m in answer)

    # The timed-out notes: one transcript each. A timed-out sendMessage may still have been
    # carried out (as on the real API), so one stale placeholder may be left behind.
    for chat, note in timeouts.items():
        await telegram.wait_for(
            lambda s, chat=chat, note=note: any(m.text == expected for m in replies_to(s, chat, note)),
            timeout=2 * BOT_READ_TIMEOUT + 30,
        )
        answers = replies_to(telegram, chat, note)
        assert [m.text for m in answers].count(expected) == 1
        assert len(answers) <= 2
    assert [fault.fired for fault in slow] == [1, 1, 1]

    assert await bot.stop() == 0
    assert "Telegram error" not in bot.log
    assert not re.search(r"job -?\d+ (failed|crashed)", bot.log)
    assert "Traceback" not in bot.log
