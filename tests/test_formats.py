"""Transcript files (pure): cues from a transcription's words, as they are, in .txt/.srt/.vtt."""

from __future__ import annotations

from bot.asr.formats import CUE_BREAK_SECONDS, MAX_CUE_CHARS, MAX_CUE_SECONDS, Cue, build_cues, to_srt, to_txt, to_vtt
from bot.asr.types import Word


def evenly(*words: str, start: float = 0.0, step: float = 0.5) -> list[Word]:
    """Words one after another, `step` seconds apart, each lasting most of its step."""
    return [Word(w, round(start + i * step, 3), round(start + i * step + step * 0.8, 3)) for i, w in enumerate(words)]


def test_punctuated_words_keep_their_punctuation_and_case() -> None:
    """What a punctuating model or a punctuation step wrote is never re-cased by a format."""
    words = evenly("Hello,", "world.", "NASA", "says:", "it's", "iPhone", "time!")
    [cue] = build_cues(words)
    assert cue == Cue(0.0, 3.4, "Hello, world. NASA says: it's iPhone time!")
    assert "Hello, world. NASA says: it's iPhone time!" in to_srt(words)
    assert "Hello, world. NASA says: it's iPhone time!" in to_vtt(words)


def test_a_later_cue_starts_as_its_words_do() -> None:
    first = evenly("So", "we", "went")
    second = evenly("and", "then", "NASA", "called.", start=first[-1].end + CUE_BREAK_SECONDS)
    assert [cue.text for cue in build_cues(first + second)] == ["So we went", "and then NASA called."]


def test_cues_break_on_length_duration_and_pauses() -> None:
    long_words = evenly(*(["abcdefghi"] * 10), step=0.1)
    assert all(len(cue.text) <= MAX_CUE_CHARS for cue in build_cues(long_words))
    assert len(build_cues(long_words)) > 1
    slow = evenly(*(["a"] * 20), step=0.5)
    assert all(cue.end - cue.start <= MAX_CUE_SECONDS for cue in build_cues(slow))
    assert len(build_cues(slow)) > 1
    paused = [Word("one", 0.0, 0.3), Word("two", 0.3 + CUE_BREAK_SECONDS, 1.5)]
    assert [cue.text for cue in build_cues(paused)] == ["one", "two"]
    assert [cue.text for cue in build_cues(paused[:1] + [Word("two", 0.4, 0.6)])] == ["one two"]
    assert build_cues([]) == []


def test_srt_and_vtt_layout_and_timestamps() -> None:
    words = [Word("First", 1.5, 2.0), Word("second", 3725.25, 3726.0)]
    assert to_srt(words) == (
        "1\n00:00:01,500 --> 00:00:02,000\nFirst\n\n"
        "2\n01:02:05,250 --> 01:02:06,000\nsecond\n"
    )
    assert to_vtt(words) == (
        "WEBVTT\n\n"
        "00:00:01.500 --> 00:00:02.000\nFirst\n\n"
        "01:02:05.250 --> 01:02:06.000\nsecond\n"
    )
    assert to_srt([]) == "" and to_vtt([]) == "WEBVTT\n\n"


def test_txt_is_the_text_with_one_final_newline() -> None:
    assert to_txt("  Hello, world.\n\n") == "Hello, world.\n"
    assert to_txt("") == "\n"
