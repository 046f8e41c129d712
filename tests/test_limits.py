"""Per-user limits, the global queue cap and fairness between users.

`UserLimiter` is checked with a fake clock; the rest runs end to end through the bot
process, because what matters is what users read: a polite "try again in N s", never a
job left hanging, and a single voice note not stuck behind someone's fifty.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from bot.asr.recognizer import Recognizer
from bot.telegram.limits import TokenBucket, UserLimiter
from tests.conftest import BotProcess, engine_text, wait_answer, wait_ready
from tests.fake_telegram import FakeTelegram, SentMessage
from tests.media import looped

RATE_LIMITED = re.compile(r"^You're sending files faster than I can take them\. Please try again in (\d+) s\.$")
BUSY = re.compile(r"^I'm busy right now\. Please try again in (\d+) s\.$")


# --- UserLimiter ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_concurrent_jobs_are_capped_per_user() -> None:
    limiter = UserLimiter(per_minute=100, concurrent=2, clock=Clock())
    assert limiter.try_acquire(1) is None
    assert limiter.try_acquire(1) is None
    assert limiter.try_acquire(1) == 10.0
    assert limiter.try_acquire(2) is None  # other users are not affected
    limiter.release(1)
    assert limiter.try_acquire(1) is None


def test_files_per_minute_is_a_sliding_window_and_refusals_do_not_count() -> None:
    clock = Clock()
    limiter = UserLimiter(per_minute=3, concurrent=100, clock=clock)
    for _ in range(3):
        assert limiter.try_acquire(1) is None
        limiter.release(1)
        clock.now += 10
    assert limiter.try_acquire(1) == pytest.approx(30.0)  # the first one leaves the window at +60 s
    clock.now += 29
    assert limiter.try_acquire(1) == pytest.approx(1.0)
    clock.now += 1
    assert limiter.try_acquire(1) is None


def test_release_never_goes_negative() -> None:
    limiter = UserLimiter(per_minute=10, concurrent=1, clock=Clock())
    limiter.release(7)
    limiter.release(7)
    assert limiter.try_acquire(7) is None
    assert limiter.try_acquire(7) == 10.0


def test_token_bucket_allows_a_burst_then_its_rate() -> None:
    clock = Clock()
    bucket = TokenBucket(rate=2.0, burst=3.0, clock=clock)
    assert [bucket.try_take() for _ in range(4)] == [True, True, True, False]
    clock.now += 0.5
    assert [bucket.try_take() for _ in range(2)] == [True, False]
    clock.now += 100  # idle time refills up to the burst, not beyond
    assert sum(bucket.try_take() for _ in range(10)) == 3


# --- end to end -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_ogg(tmp_path_factory: pytest.TempPathFactory, speech_ogg: Path) -> Path:
    """~14 minutes of speech (~8 s of work for the tiny model): keeps the one worker busy."""
    path = tmp_path_factory.mktemp("limits") / "long.ogg"
    looped(speech_ogg, path, 201)
    return path


def message_id(update: dict) -> int:
    return int(update["message"]["message_id"])


def answers(telegram: FakeTelegram, chat_id: int, note: int) -> list[SentMessage]:
    return [m for m in telegram.sent_messages(chat_id) if m.reply_to_message_id == note]


def finished_at(telegram: FakeTelegram, chat_id: int, note: int, text: str) -> float:
    """When the fake server received the edit that turned this note's placeholder into `text`."""
    [placeholder] = answers(telegram, chat_id, note)
    return min(
        call.at for call in telegram.calls("editMessageText")
        if call.params.get("message_id") == placeholder.message_id and call.params.get("text") == text
    )


@pytest.mark.slow
async def test_user_limits_and_the_queue_cap_answer_politely(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], speech_ogg: Path, long_ogg: Path,
    recognizer: Recognizer, tmp_path: Path,
) -> None:
    bot = start_bot(USER_MAX_CONCURRENT_JOBS="2", USER_JOBS_PER_MINUTE="3", ASR_QUEUE_SIZE="2")
    await wait_ready(telegram, bot)
    expected = engine_text(recognizer, speech_ogg)

    def voice(user: int, path: Path = speech_ogg, duration: int = 5) -> int:
        return message_id(telegram.send_voice(user, user, telegram.add_file(path.read_bytes()), duration=duration))

    # Three at once with two allowed in flight: two transcripts and one "try again".
    burst = [voice(3001) for _ in range(3)]
    texts = [(await wait_answer(telegram, 3001, note))[0].text or "" for note in burst]
    assert texts.count(expected) == 2
    [refusal] = [text for text in texts if text != expected]
    assert (match := RATE_LIMITED.match(refusal)) and match.group(1) == "10"

    # The refused one did not count: a third file this minute is fine, a fourth is not.
    [reply] = await wait_answer(telegram, 3001, voice(3001))
    assert reply.text == expected
    [reply] = await wait_answer(telegram, 3001, voice(3001))
    assert (match := RATE_LIMITED.match(reply.text or "")) and 1 <= int(match.group(1)) <= 60

    # Global queue cap: one worker busy, two waiting, so two of five users are told to come back.
    users = range(3101, 3106)
    notes = {user: voice(user, long_ogg, 841) for user in users}
    busy = await telegram.wait_for(
        lambda s: len(found := [u for u, n in notes.items() if any(BUSY.match(m.text or "") for m in answers(s, u, n))])
        == 2 and found,
        timeout=60,
    )
    for user in busy:
        [reply] = answers(telegram, user, notes[user])
        assert not reply.buttons  # the Cancel button went with the placeholder text
    # The three accepted ones are cancelled by their senders, to end the test early.
    for user in sorted(set(users) - set(busy)):
        [placeholder] = answers(telegram, user, notes[user])
        telegram.press_button(user, user, placeholder.message_id, placeholder.buttons[0][1] or "")
    for user in sorted(set(users) - set(busy)):
        [reply] = await wait_answer(telegram, user, notes[user], timeout=30)
        assert reply.text == "Transcription cancelled."
    assert await bot.stop() == 0

    with sqlite3.connect(tmp_path / "bot.sqlite3") as db:
        rows = db.execute("SELECT user_id, status, error FROM jobs WHERE user_id >= 3101").fetchall()
    assert sorted((s, e) for u, s, e in rows if u in busy) == [("failed", "queue full")] * 2
    assert {s for u, s, e in rows if u not in busy} == {"cancelled"}  # nothing left queued or running


@pytest.mark.slow
async def test_one_users_burst_does_not_delay_another_users_single_note(
    telegram: FakeTelegram, start_bot: Callable[..., BotProcess], speech_ogg: Path, recognizer: Recognizer,
) -> None:
    bot = start_bot(USER_MAX_CONCURRENT_JOBS="12", USER_JOBS_PER_MINUTE="30")
    await wait_ready(telegram, bot)
    expected = engine_text(recognizer, speech_ogg)
    a, b = 4001, 4002

    a_notes = [message_id(telegram.send_voice(a, a, telegram.add_file(speech_ogg.read_bytes()), duration=5))
               for _ in range(12)]
    await telegram.wait_for(lambda s: all(answers(s, a, note) for note in a_notes), timeout=30)
    b_note = message_id(telegram.send_voice(b, b, telegram.add_file(speech_ogg.read_bytes()), duration=5))

    for chat, note in [(b, b_note), *((a, note) for note in a_notes)]:
        [reply] = await wait_answer(telegram, chat, note, timeout=90)
        assert reply.text == expected
    b_done = finished_at(telegram, b, b_note, expected)
    a_done = sorted(finished_at(telegram, a, note, expected) for note in a_notes)
    a_after_b = sum(done > b_done for done in a_done)
    print(f"\nfairness: {a_after_b} of user A's 12 notes finished after user B's single note")
    assert a_after_b >= 5, "B's single note waited behind A's burst"
    assert await bot.stop() == 0
