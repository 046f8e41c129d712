"""Post-processing (pure): named steps in order, each on the text and the words alike."""

from __future__ import annotations

import pytest

from bot.asr import postprocess
from bot.asr.postprocess import postprocessor, sentence_case, sentence_case_words, strip_special_tokens
from bot.asr.types import TimedText, Word


def timed(text: str) -> TimedText:
    """`text` with one word per token, half a second each."""
    return TimedText(text, tuple(Word(w, i * 0.5, i * 0.5 + 0.4) for i, w in enumerate(text.split())))


def test_sentence_case_for_people() -> None:
    assert sentence_case("HELLO I'M HERE AND I THINK IT WORKS") == "Hello I'm here and I think it works"
    assert sentence_case("<unk>THE IDEA<s>") == "The idea"
    assert sentence_case("") == ""


def test_special_tokens_are_dropped_and_spaces_squeezed() -> None:
    assert strip_special_tokens("<s> HELLO  <unk> THERE </s>") == "HELLO THERE"


def test_sentence_case_of_words_reads_like_the_text() -> None:
    words = sentence_case_words(timed("WELL I'LL SAY I DID").words)
    assert [w.word for w in words] == ["Well", "I'll", "say", "I", "did"]
    assert [(w.start, w.end) for w in words] == [(i * 0.5, i * 0.5 + 0.4) for i in range(5)], "times untouched"
    assert sentence_case_words(()) == ()


@pytest.mark.parametrize("text", ["HELLO I'M HERE", "'TIS I", "I", "AN IDEA IN IOWA"])
def test_the_step_cases_text_and_words_alike(text: str) -> None:
    result = postprocessor(["sentence_case"])(timed(text))
    assert result.text == sentence_case(text)
    assert " ".join(w.word for w in result.words) == result.text


def test_no_steps_leave_text_and_words_as_decoded() -> None:
    original = timed("HELLO THERE")
    assert postprocessor(())(original) == original


def test_steps_run_in_the_order_named(monkeypatch: pytest.MonkeyPatch) -> None:
    def exclaim(value: TimedText) -> TimedText:
        words = value.words[:-1] + (Word(value.words[-1].word + "!", value.words[-1].start, value.words[-1].end),)
        return TimedText(value.text + "!", words)

    def shout(value: TimedText) -> TimedText:
        return TimedText(value.text.upper(), tuple(Word(w.word.upper(), w.start, w.end) for w in value.words))

    monkeypatch.setitem(postprocess.STEPS, "exclaim", exclaim)
    monkeypatch.setitem(postprocess.STEPS, "shout", shout)
    cased_then_marked = postprocessor(["sentence_case", "exclaim"])(timed("HELLO THERE"))
    assert cased_then_marked.text == "Hello there!" and cased_then_marked.words[-1].word == "there!"
    assert postprocessor(["sentence_case", "shout"])(timed("HELLO")).text == "HELLO"
    assert postprocessor(["shout", "sentence_case"])(timed("hello")).text == "Hello"


def test_an_unknown_step_is_refused_by_name() -> None:
    with pytest.raises(ValueError, match="unknown post-processing step 'punctuate'; the steps are: sentence_case"):
        postprocessor(["sentence_case", "punctuate"])
