"""Load: 200 voice notes from 50 users within a few seconds, through the real bot process.

Ten heavy users send 16 notes each and forty users send one. Every note must end with
exactly one answer (its transcript, or a refusal that says so) and the bot's memory must
stay bounded. Latencies are reported, not asserted (they depend on the machine; fairness
itself is asserted in test_limits): the figures are printed and written to `load.json` in
the test's tmp dir, so they survive without `-s`.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import psutil
import pytest

from bot.asr.recognizer import Recognizer
from tests.conftest import BotProcess, engine_text, final_replies, wait_ready
from tests.fake_telegram import FakeTelegram, SentMessage

pytestmark = pytest.mark.slow

HEAVY_USERS, HEAVY_NOTES, SINGLE_USERS = 10, 16, 40
ARRIVAL_SECONDS = 3.0
REFUSAL = re.compile(r"(try again in \d+ s|too big|too long)")
#: The bot process may grow by this much under load (queued jobs, buffers); more is a leak.
RSS_GROWTH_LIMIT_MB = 300


def _rss_mb(process: psutil.Process) -> tuple[float, float]:
    """Resident memory of the bot process, and of it with its workers, in MB."""
    main = process.memory_info().rss
    children = 0
    for child in process.children(recursive=True):
        try:
            children += child.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return main / 2**20, (main + children) / 2**20


async def _sample_rss(process: psutil.Process, samples: list[tuple[float, float]], stop: asyncio.Event) -> None:
    while not stop.is_set():
        try:
            samples.append(_rss_mb(process))
        except psutil.NoSuchProcess:
            return
        try:
            await asyncio.wait_for(stop.wait(), 0.5)
        except TimeoutError:
            pass


def _percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


async def test_two_hundred_notes_from_fifty_users(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], speech_ogg: Path, recognizer: Recognizer,
    tmp_path: Path,
) -> None:
    bot = start_bot(ASR_WORKERS="2", USER_MAX_CONCURRENT_JOBS=str(HEAVY_NOTES), USER_JOBS_PER_MINUTE="20")
    await wait_ready(telegram, bot)
    expected = engine_text(recognizer, speech_ogg)
    data = speech_ogg.read_bytes()
    process = psutil.Process(bot.process.pid)
    baseline_main, baseline_total = _rss_mb(process)

    senders = [5000 + u for u in range(HEAVY_USERS) for _ in range(HEAVY_NOTES)]
    senders += [6000 + u for u in range(SINGLE_USERS)]
    random.Random(1).shuffle(senders)
    files = [telegram.add_file(data) for _ in senders]  # distinct files: no answer from the cache

    samples: list[tuple[float, float]] = []
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_rss(process, samples, stop))
    sent_at: dict[tuple[int, int], float] = {}
    started = time.monotonic()
    for user, file in zip(senders, files, strict=True):
        update = telegram.send_voice(user, user, file, duration=5)
        sent_at[(user, update["message"]["message_id"])] = time.monotonic()
        await asyncio.sleep(ARRIVAL_SECONDS / len(senders))

    pending = set(sent_at)
    finals: dict[tuple[int, int], list[SentMessage]] = {}
    while pending and time.monotonic() - started < 170:
        await asyncio.sleep(1.0)
        for chat, note in list(pending):
            done = final_replies(telegram, chat, note)
            if done:
                finals[(chat, note)] = done
                pending.discard((chat, note))
    elapsed = time.monotonic() - started
    stop.set()
    await sampler
    assert not pending, f"{len(pending)} notes never answered: {sorted(pending)[:10]}"
    await asyncio.sleep(2.0)  # a duplicate answer would show up in this time

    # Exactly one answer each: the transcript or a refusal with a reason.
    transcribed = refused = 0
    for chat, note in sent_at:
        replies = [m for m in telegram.sent_messages(chat) if m.reply_to_message_id == note]
        assert len(replies) == 1, (chat, note, [m.text for m in replies])
        text = replies[0].text or ""
        if text == expected:
            transcribed += 1
        else:
            assert REFUSAL.search(text), text
            refused += 1

    # Latency of the single-note users: from sending to the edit that delivered the text.
    delivered = {
        (call.params.get("chat_id"), call.params.get("message_id")): call.at
        for call in telegram.calls("editMessageText") if call.params.get("text") == expected
    }
    def latencies(single: bool) -> list[float]:
        return [
            delivered[(chat, replies[0].message_id)] - sent_at[(chat, note)]
            for (chat, note), replies in finals.items()
            if (chat >= 6000) == single and replies[0].text == expected
        ]

    singles, heavy = latencies(True), latencies(False)
    max_main = max(main for main, _ in samples)
    max_total = max(total for _, total in samples)
    figures = {
        "notes": len(sent_at), "users": HEAVY_USERS + SINGLE_USERS, "transcribed": transcribed, "refused": refused,
        "wall_seconds": round(elapsed, 1),
        "single_user_latency_p50_s": round(statistics.median(singles), 2),
        "single_user_latency_p95_s": round(_percentile(singles, 0.95), 2),
        "heavy_user_latency_p50_s": round(statistics.median(heavy), 2) if heavy else None,
        "rss_main_baseline_mb": round(baseline_main), "rss_main_max_mb": round(max_main),
        "rss_with_workers_baseline_mb": round(baseline_total), "rss_with_workers_max_mb": round(max_total),
    }
    (tmp_path / "load.json").write_text(json.dumps(figures, indent=2))
    print("\nload test:", json.dumps(figures))

    assert transcribed + refused == len(sent_at) and transcribed >= len(sent_at) // 2
    assert max_main - baseline_main < RSS_GROWTH_LIMIT_MB
    assert len(singles) == SINGLE_USERS
    assert await bot.stop() == 0
