"""Punctuation and casing of CTC text: label schemes, windows, and a real (tiny, random) model
loaded through `load_punctuator`'s `from_pretrained` path."""

from __future__ import annotations

from pathlib import Path

import pytest
from transformers import AutoTokenizer

from bot.asr import postprocess
from bot.asr.punctuation import (
    Label,
    Punctuator,
    apply_labels,
    load_punctuator,
    parse_label,
    parse_scheme,
    windows,
    with_punctuation,
)
from bot.asr.types import TimedText, Word
from bot.errors import ModelLoadError
from tests.punctuation_factory import SENTENCES, build_punctuation_model, expected_label

COMBINED = ("Lower_O", "Upper_O", "Lower_,", "Upper_,", "Lower_.", "Upper_.", "Lower_?", "Upper_?")
MARKS_ONLY = ("0", ".", ",", "?", "-", ":")


def timed(text: str) -> TimedText:
    """A CTC-style decoded text (bare capitals) and its words, 0.5 s each."""
    words = tuple(Word(word, index / 2, index / 2 + 0.4) for index, word in enumerate(text.split()))
    return TimedText(text, words)


@pytest.fixture(scope="module")
def combined_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_punctuation_model(tmp_path_factory.mktemp("punct-combined"), COMBINED)


@pytest.fixture(scope="module")
def combined(combined_model: Path) -> Punctuator:
    return load_punctuator(str(combined_model))


def test_labels_of_each_scheme() -> None:
    assert parse_label("O") == parse_label("0") == Label()
    assert parse_label(",") == Label(mark=",")
    assert parse_label("Upper_.") == Label(mark=".", capitalise=True)
    assert parse_label("Lower_O") == Label(mark="", capitalise=False)
    assert parse_label(".U") == Label(mark=".", capitalise=True)
    assert parse_label("'O") == Label(mark="'", capitalise=False)
    assert parse_label("OO") == Label(mark="", capitalise=False)
    for bad in ("B-PER", "Title_.", "Upper_x", "comma", ""):
        with pytest.raises(ValueError, match="neither a mark"):
            parse_label(bad)


def test_scheme_must_punctuate_and_not_mix_cased_and_uncased_labels() -> None:
    assert parse_scheme({0: "O", 1: ","})[1] == Label(mark=",")
    with pytest.raises(ValueError, match="mix"):
        parse_scheme({0: "O", 1: ",", 2: "Upper_."})
    with pytest.raises(ValueError, match="no punctuation"):
        parse_scheme({0: "Lower_O", 1: "Upper_O"})


def test_apply_labels_cases_after_sentence_ends_when_the_scheme_has_no_case() -> None:
    words = ["hello", "i'm", "here", "are", "you", "i", "am"]
    labels = [Label(), Label(), Label(mark="."), Label(), Label(mark="?"), Label(), Label(mark=".")]
    assert " ".join(apply_labels(words, labels)) == "Hello I'm here. Are you? I am."
    cased = [Label(capitalise=False), Label(mark=",", capitalise=True)]
    assert apply_labels(["hello", "paris"], cased) == ["hello", "Paris,"]


@pytest.mark.parametrize(("count", "size", "overlap"), [(0, 10, 2), (1, 10, 2), (10, 10, 2), (11, 10, 2),
                                                        (95, 10, 3), (1000, 150, 30), (7, 3, 0), (50, 4, 3)])
def test_windows_keep_every_word_once_and_overlap(count: int, size: int, overlap: int) -> None:
    spans = windows(count, size, overlap)
    kept = [index for span in spans for index in range(span.keep_from, span.keep_to)]
    assert kept == list(range(count))
    for span in spans:
        assert span.stop - span.start <= size and span.start <= span.keep_from <= span.keep_to <= span.stop
    for before, after in zip(spans, spans[1:], strict=False):
        assert before.stop - after.start == overlap  # neighbours share exactly `overlap` words
        assert after.keep_from > after.start or overlap < 2  # a kept word has context before it


def test_windows_refuse_an_overlap_as_wide_as_the_window() -> None:
    with pytest.raises(ValueError):
        windows(10, 5, 5)


def test_model_labels_reach_the_text_and_the_words(combined: Punctuator, combined_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(combined_model)
    source = timed("HELLO I AM HERE AND THIS IS A TEST")
    result = combined(source)
    words = source.text.lower().split()
    expected = apply_labels(words, [parse_label(expected_label(tokenizer, word, COMBINED)) for word in words])
    assert result.text == " ".join(expected)
    assert [word.word for word in result.words] == expected
    assert [(w.start, w.end) for w in result.words] == [(w.start, w.end) for w in source.words]
    assert any(mark in result.text for mark in ",.?"), result.text  # the rule does punctuate these words


def test_long_text_runs_in_windows_with_every_word_labelled_once(combined: Punctuator, combined_model: Path) -> None:
    tokenizer = AutoTokenizer.from_pretrained(combined_model)
    words = " ".join(SENTENCES * 20).split()  # 1160 words: 9 windows of 150
    assert len(windows(len(words))) > 5
    result = combined(timed(" ".join(words).upper()))
    expected = apply_labels(words, [parse_label(expected_label(tokenizer, word, COMBINED)) for word in words])
    assert [word.word for word in result.words] == expected
    assert result.text.split() == expected


def test_marks_only_model_and_the_postprocess_chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    directory = build_punctuation_model(tmp_path / "marks", MARKS_ONLY)
    punctuator = load_punctuator(str(directory))
    tokenizer = AutoTokenizer.from_pretrained(directory)
    monkeypatch.setitem(postprocess.STEPS, "punctuate", punctuator)  # what a worker's `register` does
    chain = postprocess.postprocessor(with_punctuation(("sentence_case",)))
    source = timed("WHERE ARE YOU GOING TODAY WITH YOUR FRIENDS <unk>")
    result = chain(source)
    words = source.text.lower().replace("<unk>", "").split()
    expected = apply_labels(words, [parse_label(expected_label(tokenizer, word, MARKS_ONLY)) for word in words])
    assert result.text == " ".join(expected)
    assert result.text[0] == "W"
    # the <unk> word does not match the text one to one: the words stay unmarked, lower-cased
    assert [w.word for w in result.words] == [w.lower() for w in source.text.split()]
    assert chain(TimedText("", ())) == TimedText("", ())


def test_with_punctuation_replaces_only_sentence_case() -> None:
    assert with_punctuation(("sentence_case",)) == ("punctuate",)
    assert with_punctuation(()) == ()


def test_unknown_scheme_and_wrong_checkpoint_are_refused_by_name(tmp_path: Path, tiny_model: Path) -> None:
    ner = build_punctuation_model(tmp_path / "ner", ("O", "B-PER", "I-PER"))
    with pytest.raises(ModelLoadError, match=r"PUNCTUATION_MODEL=.*'B-PER'"):
        load_punctuator(str(ner))
    with pytest.raises(ModelLoadError, match="PUNCTUATION_MODEL=.*could not be loaded"):
        load_punctuator(str(tiny_model))  # a wav2vec2 CTC checkpoint
