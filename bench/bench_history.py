"""How fast /history and /search answer for a heavy user.

Builds a throw-away database with 100,000 transcripts for one user (spread over their
private chat and two groups) plus others' transcripts, then times `Transcripts.history_page`
and `Search.find` through the real API. Each figure is the median of at least 20
runs: single calls take from a fraction of a millisecond to tens of them, and one
timing of that is mostly noise.

    .venv/bin/python -m bench.bench_history

`run()` returns the figures for other scripts. The target is a /history page in under
50 ms. Search has no fixed target: ranking costs grow with the number of matches (a
word in a third of 100,000 transcripts is the worst case timed here).
"""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

from bot.asr.types import TextOptions, TranscriptionOptions
from bot.storage import Storage

HEAVY_USER = 1_000_001
GROUPS = (-100_001, -100_002)
TARGET_MS = 50.0
COMMON_WORD = "meeting"  # in about a third of the heavy user's transcripts
RARE_WORD = "zeppelin"  # in about one in a thousand

_VOCABULARY_SIZE = 3000
_MODEL = "facebook/wav2vec2-base-960h"
_OPTIONS_JSON = json.dumps(
    asdict(TranscriptionOptions(chunk_seconds=20.0, stride_seconds=2.5)), sort_keys=True
)
_TEXT_OPTIONS_KEY = TextOptions(model=_MODEL).cache_key()


def _vocabulary(rng: random.Random) -> list[str]:
    letters = "abcdefghijklmnopqrstuvwxyz"
    return ["".join(rng.choices(letters, k=rng.randint(2, 9))) for _ in range(_VOCABULARY_SIZE)]


def _rows(n_heavy: int, n_others: int, start: float, rng: random.Random) -> Iterator[tuple[Any, ...]]:
    """Transcript rows, oldest first, shaped like real ones (word timings and all)."""
    vocabulary = _vocabulary(rng)
    total = n_heavy + n_others
    for i in range(total):
        # Spread the others' rows evenly through time, exactly n_others of them.
        heavy = (i + 1) * n_others // total == i * n_others // total
        user_id = HEAVY_USER if heavy else 2_000_000 + rng.randrange(500)
        chat_id = rng.choice((HEAVY_USER, HEAVY_USER, *GROUPS) if heavy else (user_id, *GROUPS))
        words = rng.choices(vocabulary, k=rng.randint(8, 60))
        if rng.random() < 0.33:
            words[rng.randrange(len(words))] = COMMON_WORD
        if rng.random() < 0.001:
            words[rng.randrange(len(words))] = RARE_WORD
        text = " ".join(words)
        # The storage's [[word, start, end], ...] format, written directly: building
        # Word objects for four million words would double the build time.
        timed = ",".join(f'["{w}",{j * 0.4:.2f},{j * 0.4 + 0.3:.2f}]' for j, w in enumerate(words))
        duration = round(len(words) * 0.4 + 0.5, 2)
        yield (
            user_id,
            chat_id,
            i + 1,
            None,
            f"file-{i}",
            duration,
            text.capitalize(),
            text.upper(),
            f"[{timed}]",
            _MODEL,
            _OPTIONS_JSON,
            _TEXT_OPTIONS_KEY,
            duration * 0.05,
            start + i * 30.0,
        )


def _bulk_insert(path: Path, n_heavy: int, n_others: int) -> None:
    """One executemany in one transaction on a plain connection: the schema's triggers
    still fill the search index, and it takes seconds instead of 120,000 transactions."""
    rng = random.Random(42)
    conn = sqlite3.connect(path)
    try:
        users = [(HEAVY_USER, 0.0)] + [(2_000_000 + k, 0.0) for k in range(500)]
        with conn:
            conn.executemany("INSERT INTO users (id, created_at) VALUES (?, ?)", users)
            # Titled groups, as the bot stores them: pages look the titles up.
            conn.executemany("INSERT INTO chats (id, type, title) VALUES (?, 'supergroup', ?)",
                             [(chat_id, f"Group {-chat_id}") for chat_id in GROUPS])
            conn.executemany(
                "INSERT INTO transcripts (user_id, chat_id, message_id, forward_origin, file_unique_id,"
                " duration, text, raw_text, words, model, options, text_options_key, processing_seconds,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _rows(n_heavy, n_others, time.time() - (n_heavy + n_others) * 30.0, rng),
            )
        conn.execute("PRAGMA optimize")
    finally:
        conn.close()


async def _median_ms(call: Callable[[], Awaitable[Any]], runs: int) -> float:
    await call()  # warm the page cache and statement cache
    timings = []
    for _ in range(runs):
        began = time.perf_counter()
        await call()
        timings.append((time.perf_counter() - began) * 1000.0)
    return statistics.median(timings)


async def _measure(path: Path, n_heavy: int, runs: int, page_size: int) -> dict[str, float]:
    async with Storage.open(path) as storage:
        first = await storage.transcripts.history_page(HEAVY_USER, chat_id=None, offset=0, limit=page_size)
        group = await storage.transcripts.history_page(HEAVY_USER, chat_id=GROUPS[0], offset=0, limit=page_size)
        common = await storage.search.find(HEAVY_USER, COMMON_WORD, chat_id=None, offset=0, limit=page_size)
        if first.total != n_heavy or len(first.items) != page_size:
            raise RuntimeError(f"bench database has {first.total} transcripts for the user, not {n_heavy}")
        deep_offset = first.total - page_size
        group_deep_offset = max(0, group.total - page_size)
        cases: dict[str, Callable[[], Awaitable[Any]]] = {
            "history_first_page_ms": lambda: storage.transcripts.history_page(
                HEAVY_USER, chat_id=None, offset=0, limit=page_size
            ),
            "history_deep_page_ms": lambda: storage.transcripts.history_page(
                HEAVY_USER, chat_id=None, offset=deep_offset, limit=page_size
            ),
            "history_group_page_ms": lambda: storage.transcripts.history_page(
                HEAVY_USER, chat_id=GROUPS[0], offset=0, limit=page_size
            ),
            "history_group_deep_page_ms": lambda: storage.transcripts.history_page(
                HEAVY_USER, chat_id=GROUPS[0], offset=group_deep_offset, limit=page_size
            ),
            "search_rare_word_ms": lambda: storage.search.find(
                HEAVY_USER, RARE_WORD, chat_id=None, offset=0, limit=page_size
            ),
            "search_common_word_ms": lambda: storage.search.find(
                HEAVY_USER, COMMON_WORD, chat_id=None, offset=0, limit=page_size
            ),
            "search_common_word_group_ms": lambda: storage.search.find(
                HEAVY_USER, COMMON_WORD, chat_id=GROUPS[0], offset=0, limit=page_size
            ),
        }
        figures = {name: await _median_ms(call, runs) for name, call in cases.items()}
        figures["search_common_word_matches"] = float(common.total)
        return figures


async def _run(n_transcripts: int, n_others: int, runs: int, page_size: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="voicebot-bench-") as tmp:
        path = Path(tmp) / "bench.sqlite3"
        async with Storage.open(path):
            pass  # creates the schema
        began = time.perf_counter()
        _bulk_insert(path, n_transcripts, n_others)
        build_seconds = time.perf_counter() - began
        figures = await _measure(path, n_transcripts, runs, page_size)
        return {
            "transcripts_heavy_user": float(n_transcripts),
            "transcripts_total": float(n_transcripts + n_others),
            "database_mb": round(_file_mb(path), 1),
            "build_seconds": round(build_seconds, 2),
            "runs": float(runs),
            **{name: round(value, 3) for name, value in figures.items()},
        }


def _file_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.iterdir()) / 1e6


def run(
    n_transcripts: int = 100_000, *, n_others: int = 20_000, runs: int = 30, page_size: int = 10
) -> dict[str, float]:
    """Build the database, time each query `runs` times, return the medians in ms.

    Synchronous (it runs its own event loop): call it from plain code, not from a coroutine.
    """
    if runs < 20:
        raise ValueError("use at least 20 runs: a median of fewer is noise")
    return asyncio.run(_run(n_transcripts, n_others, runs, page_size))


def _print_table(figures: dict[str, float]) -> None:
    print(
        f"{int(figures['transcripts_heavy_user']):,} transcripts for one user"
        f" ({int(figures['transcripts_total']):,} in all, {figures['database_mb']} MB,"
        f" built in {figures['build_seconds']} s); median of {int(figures['runs'])} runs"
    )
    print(f"{'query':<30} {'median ms':>10}")
    for name, value in figures.items():
        if name.endswith("_ms"):
            # The target is for /history; search cost grows with the number of matches.
            verdict = ("ok" if value < TARGET_MS else "SLOW") if name.startswith("history") else ""
            print(f"{name.removesuffix('_ms'):<30} {value:>10.2f}  {verdict}")
    print(
        f"history target: under {TARGET_MS:.0f} ms. '{COMMON_WORD}' matches"
        f" {int(figures['search_common_word_matches']):,} of the user's transcripts."
    )


def main() -> None:
    """Print the table (entry point of `python -m bench.bench_history`)."""
    _print_table(run())


if __name__ == "__main__":
    main()
