"""Full-text search in a user's transcripts (SQLite FTS5), with raw snippets around the matches.

Snippets carry no markup of any output format: each match sits between `MARK_OPEN` and
`MARK_CLOSE`, and the Telegram side (`bot.telegram.render`) escapes the text around them
and marks the matches its own way.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from bot.storage.db import Database
from bot.storage.transcripts import (
    Page,
    TranscriptSummary,
    check_page,
    owner_filter,
    page_of,
    summary_columns,
    summary_fields,
)

#: Snippet markers around each match: control characters never produced by the ASR model,
#: so a renderer can escape the text around them and then mark the matches its own way.
MARK_OPEN, MARK_CLOSE = "\x02", "\x03"

_MAX_QUERY_TERMS = 16
_SNIPPET_TOKENS = 16
_WORD_CHAR = re.compile(r"\w")
_SUMMARY_COLUMNS_T = summary_columns("t")


@dataclass(frozen=True)
class SearchHit(TranscriptSummary):
    """A search result: `snippet` is the matched text around the hits, raw, each matched
    term between `MARK_OPEN` and `MARK_CLOSE`."""

    snippet: str


class Search:
    """Queries over the `transcripts_fts` index, scoped like the history."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def find(
        self, user_id: int, query: str, *, chat_id: int | None, offset: int, limit: int
    ) -> Page[SearchHit]:
        """The user's transcripts matching `query` (same scoping as `Transcripts.history_page`),
        best match first (bm25, then newest), each with a snippet.

        The query is user text, never FTS5 syntax: see `fts_query`. A query with no
        searchable word gives an empty page. Cost grows with the number of matches, since
        all are ranked: well under a millisecond for a rare word, about 0.1 s for a word
        in 33,000 of one user's transcripts (bench/bench_history.py).
        """
        check_page(offset, limit)
        match = fts_query(query)
        if match is None:
            return Page((), 0, offset, limit)
        where, params = owner_filter(user_id, chat_id, table="t")
        # CROSS JOIN fixes the loop order: the index yields the matches, and each is
        # checked for ownership by primary key. Left to itself the planner may walk the
        # user's 100,000 rows and probe the index once per row: seconds instead of ms.
        join = (
            "FROM transcripts_fts CROSS JOIN transcripts AS t ON t.id = transcripts_fts.rowid"
            f" WHERE transcripts_fts MATCH ? AND {where}"
        )

        count = f"SELECT count(*) {join}"
        rows = await self._db.fetchall(
            f"SELECT ({count}) AS total, {_SUMMARY_COLUMNS_T},"
            " snippet(transcripts_fts, 0, ?, ?, '…', ?) AS snippet"
            f" {join} ORDER BY bm25(transcripts_fts), t.created_at DESC, t.id DESC LIMIT ? OFFSET ?",
            (match, *params, MARK_OPEN, MARK_CLOSE, _SNIPPET_TOKENS, match, *params, limit, offset),
        )
        hits = tuple(SearchHit(**summary_fields(row), snippet=row["snippet"]) for row in rows)
        return await page_of(self._db, hits, rows, count, (match, *params), offset=offset, limit=limit)


def fts_query(text: str) -> str | None:
    """Turn what a user typed into a safe FTS5 query, or None if nothing is searchable.

    Each whitespace-separated term becomes a quoted phrase (inner quotes doubled), so
    FTS5 operators and syntax in user text (`AND`, `NEAR(`, `"`, `-`, `:`) are plain
    words and can never raise a syntax error. Terms are ANDed. A trailing `*` is kept
    as a prefix search (`transcr*`). Terms without a letter or digit are dropped, and
    at most 16 terms are used.
    """
    phrases: list[str] = []
    for term in text.split():
        prefix = term.endswith("*")
        core = term.rstrip("*")
        if not _WORD_CHAR.search(core):
            continue
        phrases.append('"' + core.replace('"', '""') + '"' + ("*" if prefix else ""))
        if len(phrases) == _MAX_QUERY_TERMS:
            break
    return " ".join(phrases) or None
