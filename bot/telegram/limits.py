"""Limits: per user (files per minute, jobs at once), so nobody can crowd out others, and a
token bucket for optional Telegram calls, so they never crowd out the ones that matter."""

from __future__ import annotations

import time
from collections import defaultdict, deque
from collections.abc import Callable


class UserLimiter:
    """Sliding one-minute window of accepted files, plus a count of unfinished jobs per user."""

    def __init__(self, *, per_minute: int, concurrent: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_minute = per_minute
        self.concurrent = concurrent
        self._clock = clock
        self._recent: dict[int, deque[float]] = defaultdict(deque)
        self._active: dict[int, int] = defaultdict(int)

    def try_acquire(self, user_id: int) -> float | None:
        """Take a slot for a new job; returns None when allowed, else seconds to wait."""
        now = self._clock()
        recent = self._recent[user_id]
        while recent and now - recent[0] >= 60.0:
            recent.popleft()
        if len(recent) >= self.per_minute:
            return 60.0 - (now - recent[0])
        if self._active[user_id] >= self.concurrent:
            return 10.0
        recent.append(now)
        self._active[user_id] += 1
        return None

    def release(self, user_id: int) -> None:
        """A job of this user finished (in any way)."""
        self._active[user_id] = max(0, self._active[user_id] - 1)
        if not self._active[user_id]:
            del self._active[user_id]


class TokenBucket:
    """`rate` tokens a second, holding at most `burst`; taking one never waits.

    For calls that may be skipped (progress edits, chat actions): under load they are
    dropped here instead of queueing in front of transcripts at Telegram's rate limit.
    """

    def __init__(self, *, rate: float, burst: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = burst
        self._updated = clock()

    def try_take(self) -> bool:
        """Take a token if one is available."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True
