"""`split_text`: long transcripts become messages Telegram accepts, broken where a reader would."""

from __future__ import annotations

import pytest

from bot.telegram.delivery import MESSAGE_LIMIT, split_text


def test_short_text_is_one_stripped_message() -> None:
    assert split_text("  Hello there.  ") == ["Hello there."]
    assert split_text("x" * MESSAGE_LIMIT) == ["x" * MESSAGE_LIMIT]
    assert split_text("   ") == []


def test_breaks_after_the_last_sentence_end_that_fits() -> None:
    first = "One sentence here. " * 3 + "And a second one!"  # 74 characters
    text = first + " Then more words follow on and on"
    assert split_text(text, limit=80) == [first, "Then more words follow on and on"]


def test_a_sentence_end_in_the_first_half_is_ignored_for_the_last_space() -> None:
    text = "Short. " + "word " * 30
    parts = split_text(text, limit=60)
    assert parts[0] == ("Short. " + "word " * 10).rstrip()
    assert all(len(part) <= 60 for part in parts)


def test_without_spaces_a_word_is_cut_at_the_limit() -> None:
    assert split_text("a" * 25, limit=10) == ["a" * 10, "a" * 10, "a" * 5]


@pytest.mark.parametrize("limit", [40, 97, MESSAGE_LIMIT])
def test_parts_fit_and_keep_every_word_in_order(limit: int) -> None:
    words = [f"w{i}" + ("." if i % 7 == 6 else "") for i in range(3000)]
    text = " ".join(words)
    parts = split_text(text, limit=limit)
    assert len(parts) > 1
    assert all(0 < len(part) <= limit for part in parts)
    assert " ".join(parts).split() == words
