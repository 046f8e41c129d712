"""Full-text search on real SQLite files: ranking, matching rules, raw snippets, hostile queries."""

from __future__ import annotations

import pytest

from bot.storage import MARK_CLOSE, MARK_OPEN, Storage
from bot.storage.search import fts_query
from bot.telegram.render import snippet_html
from tests.storage_support import ALICE, FakeClock, add


async def test_search_ranks_repeated_terms_higher(storage: Storage) -> None:
    once = await add(storage, "the pelican flew over the harbour today", message_id=1)
    twice = await add(storage, "the pelican saw another pelican near today", message_id=2)
    await add(storage, "nothing relevant in this one at all", message_id=3)
    page = await storage.search.find(ALICE, "Pelican", chat_id=None, offset=0, limit=10)
    assert [hit.id for hit in page.items] == [twice, once] and page.total == 2
    assert page.items[0].snippet.count(f"{MARK_OPEN}pelican{MARK_CLOSE}") == 2


async def test_search_matching_rules(storage: Storage) -> None:
    await add(storage, "Meet at the café tomorrow morning", message_id=1)
    await add(storage, "transcription works", message_id=2)

    async def total(query: str) -> int:
        return (await storage.search.find(ALICE, query, chat_id=None, offset=0, limit=5)).total

    assert await total("cafe") == 1
    assert await total("cafe tomorrow") == 1
    assert await total("cafe works") == 0
    assert await total("transcr") == 0
    assert await total("transcr*") == 1


async def test_snippets_are_raw_text_with_match_markers(storage: Storage) -> None:
    await add(storage, "if a < b & c > d then the otter <b>wins</b>", message_id=1)
    (hit,) = (await storage.search.find(ALICE, "otter", chat_id=None, offset=0, limit=5)).items
    assert hit.snippet == f"if a < b & c > d then the {MARK_OPEN}otter{MARK_CLOSE} <b>wins</b>"
    assert snippet_html(hit.snippet) == "if a &lt; b &amp; c &gt; d then the <b>otter</b> &lt;b&gt;wins&lt;/b&gt;"
    assert hit.text == "if a < b & c > d then the otter <b>wins</b>"


@pytest.mark.parametrize(
    "query",
    ['"foo', "AND OR", "*", "NEAR(a b)", "a:b", "-foo", "foo)", "''", '"', "^x", "NOT", "(", "", "   ", "🙂"],
)
async def test_hostile_queries_do_not_raise(storage: Storage, query: str) -> None:
    await add(storage, "foo and or near a b x not", message_id=1)
    page = await storage.search.find(ALICE, query, chat_id=None, offset=0, limit=5)
    assert page.total == len(page.items) <= 1


async def test_search_pages(storage: Storage, clock: FakeClock) -> None:
    for i in range(12):
        await add(storage, f"heron {i}", message_id=i)
        clock.advance(1)
    first = await storage.search.find(ALICE, "heron", chat_id=None, offset=0, limit=5)
    rest = await storage.search.find(ALICE, "heron", chat_id=None, offset=5, limit=10)
    assert first.total == rest.total == 12 and first.has_more and not rest.has_more
    assert len({hit.id for hit in first.items + rest.items}) == 12
    beyond = await storage.search.find(ALICE, "heron", chat_id=None, offset=20, limit=5)
    assert (beyond.items, beyond.total) == ((), 12)
    with pytest.raises(ValueError):
        await storage.search.find(ALICE, "heron", chat_id=None, offset=0, limit=0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("hello world", '"hello" "world"'),
        ('say "hi', '"say" """hi"'),
        ("AND OR NOT", '"AND" "OR" "NOT"'),
        ("trans* x", '"trans"* "x"'),
        ("* - :: ()", None),
        ("", None),
    ],
)
def test_fts_query_quotes_every_term(text: str, expected: str | None) -> None:
    assert fts_query(text) == expected


def test_fts_query_caps_the_number_of_terms() -> None:
    query = fts_query(" ".join(f"w{i}" for i in range(100)))
    assert query is not None and query.count('"') == 32
