"""bench.words: the word-level comparison the precision bench reports (no model, no corpus)."""

from __future__ import annotations

import pytest

from bench.words import normalise_words, word_edit_distance, word_errors


def test_normalise_drops_case_and_punctuation_but_keeps_apostrophes() -> None:
    assert normalise_words("He said: 'don't', twice — fine?") == ["HE", "SAID", "DON'T", "TWICE", "FINE"]
    assert normalise_words("snake_case\tand\nnew-lines") == ["SNAKE", "CASE", "AND", "NEW", "LINES"]
    assert normalise_words("  ...  ") == []


@pytest.mark.parametrize(
    ("reference", "hypothesis", "distance"),
    [
        ("A B C", "A B C", 0),
        ("A B C", "A X C", 1),  # one substitution
        ("A B C", "A C", 1),  # one deletion
        ("A C", "A B C", 1),  # one insertion
        ("A B C D", "B C D E", 2),  # shifted: a deletion and an insertion, not four substitutions
        ("", "A B", 2),
        ("A B", "", 2),
        ("KITTEN SAT ON THE MAT", "SITTING SAT ON MAT", 2),
    ],
)
def test_word_edit_distance(reference: str, hypothesis: str, distance: int) -> None:
    assert word_edit_distance(reference.split(), hypothesis.split()) == distance
    assert word_edit_distance(hypothesis.split(), reference.split()) == distance  # symmetric


def test_a_changed_letter_is_one_word_not_a_character_count() -> None:
    assert word_edit_distance(["CATALOGUE"], ["KATALOG"]) == 1


def test_word_errors_pool_edits_over_reference_words() -> None:
    pooled = word_errors([("the cat sat", "THE CAT SAT."), ("on the mat", "on a mat"), ("a b c d", "a b")])
    assert (pooled.edits, pooled.reference_words, pooled.transcripts, pooled.changed) == (3, 10, 3, 2)
    assert pooled.rate == pytest.approx(0.3)
    assert pooled.changed_share == pytest.approx(2 / 3)


def test_word_errors_of_nothing_and_of_empty_references() -> None:
    assert word_errors([]).rate == 0.0
    assert word_errors([]).changed_share == 0.0
    assert word_errors([("", "")]).rate == 0.0
    assert word_errors([("", "EXTRA")]).rate == 1.0
