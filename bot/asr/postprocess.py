"""Text post-processing: an ordered chain of named steps, each applied to the text and its words.

A recognizer decodes the model's output, then runs the chain its options name
(`TextOptions.postprocess`, or the recognizer's own default when that is None). Every step
maps a `TimedText` to a `TimedText`, so the words that subtitles are built from always read
like the text: a later step (restored punctuation, say) is never undone by a format.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import replace

from bot.asr.types import TimedText, Word

Step = Callable[[TimedText], TimedText]

_SPECIAL = re.compile(r"<[^<>\s]*>")
_SPACES = re.compile(r"\s+")
_PRONOUN_I = re.compile(r"\bi\b(?='|\s|$)")


def strip_special_tokens(text: str) -> str:
    """Drop tokens such as `<unk>` or `<s>` that a CTC model may emit, and squeeze spaces."""
    return _SPACES.sub(" ", _SPECIAL.sub("", text)).strip()


def sentence_case(text: str) -> str:
    """`HELLO I'M HERE` -> `Hello I'm here`.

    English CTC models such as wav2vec2-base-960h emit upper case without punctuation;
    sentence case reads far better in a chat. The pronoun "I" keeps its capital.
    """
    cleaned = strip_special_tokens(text).lower()
    if not cleaned:
        return ""
    cleaned = _PRONOUN_I.sub("I", cleaned)
    return cleaned[0].upper() + cleaned[1:]


def sentence_case_words(words: Sequence[Word]) -> tuple[Word, ...]:
    """The words of `sentence_case`'s text, one by one: lower case, "I" kept, the first capitalised."""
    cased = [replace(word, word=_PRONOUN_I.sub("I", word.word.lower())) for word in words]
    if cased:
        first = cased[0].word
        cased[0] = replace(cased[0], word=first[:1].upper() + first[1:])
    return tuple(cased)


def _sentence_case_step(timed: TimedText) -> TimedText:
    return TimedText(sentence_case(timed.text), sentence_case_words(timed.words))


#: Every step by the name that options and stored results use.
STEPS: dict[str, Step] = {"sentence_case": _sentence_case_step}


def register(name: str, step: Step) -> None:
    """Add a step backed by a loaded model ("punctuate"): a worker registers it once it holds the model."""
    STEPS[name] = step


def postprocessor(names: Sequence[str]) -> Step:
    """The chain of the steps `names`, applied in that order (none: the text as decoded).

    Names are checked here, before any audio is run, so a wrong option fails at once.
    """
    unknown = [name for name in names if name not in STEPS]
    if unknown:
        raise ValueError(f"unknown post-processing step {unknown[0]!r}; the steps are: {', '.join(STEPS)}")
    steps = [STEPS[name] for name in names]

    def run(timed: TimedText) -> TimedText:
        for step in steps:
            timed = step(timed)
        return timed

    return run
