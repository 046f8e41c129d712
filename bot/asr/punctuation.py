"""Punctuation and casing for CTC transcripts: a token-classification model labels every word.

CTC models such as wav2vec2-base-960h emit bare capitals without a mark. With
`PUNCTUATION_MODEL` set, the worker loads a token-classification checkpoint
(`AutoTokenizer` + `AutoModelForTokenClassification`) and its "punctuate" post-processing
step replaces "sentence_case" in the CTC default chain. Each word gets the label of its
first sub-word token; the label says which mark follows the word and, in the combined
scheme, how the word is cased. The same labels are applied to the text and to the timed
words, so subtitles, /history and /search read like the message.

Label schemes, read from the checkpoint's `config.id2label` (one scheme per model; any
other label is refused at start-up, naming it):

- punctuation only: `O` or `0` (no mark) and the marks `, . ? ! : ; - '`
  (oliverguhr/fullstop-punctuation-multilang-large, kredor/punctuate-all). Casing then
  follows the marks: the first word and every word after `.`, `?` or `!` get a capital,
  and so does the pronoun "I".
- case and punctuation combined, `<case>_<mark>`: case `Upper` or `Lower` (or `U`/`L`),
  mark as above or `O`/`0`, for example `Upper_.` or `Lower_O`.
- case and punctuation combined as two characters, `<mark><case>`: mark as above or `O`,
  case `U` (capitalise) or `O` (as is), for example `.U` or `OO`
  (felflare/bert-restore-punctuation).

Long transcripts run in overlapping windows of words (`windows`): each word is labelled
by the one window where it sits furthest from an edge, so every word gets context on
both sides and exactly one label.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from bot.asr.postprocess import strip_special_tokens
from bot.asr.types import TimedText, Word
from bot.errors import ModelLoadError

log = logging.getLogger(__name__)

#: The marks a label may put after a word.
MARKS = frozenset({",", ".", "?", "!", ":", ";", "-", "'"})
_NO_MARK = frozenset({"O", "0"})
_SENTENCE_END = frozenset({".", "?", "!"})
_CASES = {"upper": True, "u": True, "lower": False, "l": False}

#: Words per window, and words shared by neighbouring windows: well under 512 sub-word tokens.
WINDOW_WORDS = 150
OVERLAP_WORDS = 30
#: Windows run through the model together.
BATCH_WINDOWS = 8


@dataclass(frozen=True)
class Label:
    """What one label does to its word: the mark after it, and its case (None: the scheme has no case)."""

    mark: str = ""
    capitalise: bool | None = None


def parse_label(label: str) -> Label:
    """One label of a supported scheme (see the module); ValueError for anything else."""
    if label in _NO_MARK:
        return Label()
    if label in MARKS:
        return Label(mark=label)
    case, underscore, mark = label.partition("_")
    if underscore and case.lower() in _CASES and (mark in MARKS or mark in _NO_MARK):
        return Label(mark="" if mark in _NO_MARK else mark, capitalise=_CASES[case.lower()])
    if len(label) == 2 and (label[0] in MARKS or label[0] == "O") and label[1] in ("U", "O"):
        return Label(mark="" if label[0] == "O" else label[0], capitalise=label[1] == "U")
    raise ValueError(f"label {label!r} is neither a mark (O , . ? ! : ; - '), <Upper|Lower>_<mark> nor <mark><U|O>")


def parse_scheme(id2label: Mapping[int, str]) -> dict[int, Label]:
    """The labels of a model by class id; ValueError when one is not of a supported scheme, or the
    model mixes labels with and without case."""
    labels = {int(index): parse_label(str(name)) for index, name in id2label.items()}
    cased = {label.capitalise is not None for label in labels.values() if label != Label()}
    if len(cased) > 1:
        raise ValueError(f"labels {sorted(id2label.values())} mix labels with and without case")
    if not any(label.mark for label in labels.values()):
        raise ValueError(f"labels {sorted(id2label.values())} put no punctuation mark anywhere")
    return labels


@dataclass(frozen=True)
class Window:
    """Words `[start, stop)` run together; the labels of `[keep_from, keep_to)` are kept."""

    start: int
    stop: int
    keep_from: int
    keep_to: int


def windows(count: int, size: int = WINDOW_WORDS, overlap: int = OVERLAP_WORDS) -> list[Window]:
    """Overlapping windows over `count` words whose kept ranges cover every word exactly once.

    Neighbouring windows share `overlap` words; the shared words are split at the middle,
    each half kept by the window it lies deeper in.
    """
    if size <= 0 or not 0 <= overlap < size:
        raise ValueError(f"window of {size} words cannot overlap by {overlap}")
    step = size - overlap
    result: list[Window] = []
    start = 0
    while True:
        stop = min(start + size, count)
        keep_from = result[-1].keep_to if result else 0
        last = stop >= count
        keep_to = count if last else stop - overlap // 2
        result.append(Window(start, stop, keep_from, keep_to))
        if last:
            return result
        start += step


def apply_labels(words: Sequence[str], labels: Sequence[Label]) -> list[str]:
    """The words with their labels' marks and case; without case labels, capitals follow the marks."""
    result: list[str] = []
    sentence_start = True
    for word, label in zip(words, labels, strict=True):
        if label.capitalise is None:
            capital = sentence_start or word == "i" or word.startswith("i'")
        else:
            capital = label.capitalise
        text = word[:1].upper() + word[1:] if capital else word
        result.append(text + label.mark)
        sentence_start = label.mark in _SENTENCE_END
    return result


class Punctuator:
    """A loaded token-classification model, its tokenizer and its label scheme.

    Built in the parent and handed to every worker with its weights in shared memory, so
    N workers cost one copy.
    """

    def __init__(self, name: str, tokenizer: Any, model: Any, labels: Mapping[int, Label]) -> None:
        self.name = name
        self.tokenizer = tokenizer
        self.model = model
        self.labels = dict(labels)
        self.max_tokens = min(int(getattr(tokenizer, "model_max_length", 512) or 512),
                              int(getattr(model.config, "max_position_embeddings", 512) or 512))

    def share_memory(self) -> Punctuator:
        self.model.share_memory()
        return self

    def label_words(self, words: Sequence[str]) -> list[Label]:
        """One label per word, the words run in overlapping windows (`windows`)."""
        import torch

        labels = [Label()] * len(words)
        spans = windows(len(words))
        for first in range(0, len(spans), BATCH_WINDOWS):
            batch = spans[first:first + BATCH_WINDOWS]
            encoded = self.tokenizer(
                [list(words[span.start:span.stop]) for span in batch], is_split_into_words=True,
                truncation=True, max_length=self.max_tokens, padding=True, return_tensors="pt",
            )
            with torch.inference_mode():
                predicted = self.model(**encoded).logits.argmax(-1).tolist()
            for row, span in enumerate(batch):
                seen: set[int] = set()
                for token, word in enumerate(encoded.word_ids(row)):
                    if word is None or word in seen:
                        continue
                    seen.add(word)
                    index = span.start + word
                    if span.keep_from <= index < span.keep_to:
                        labels[index] = self.labels[predicted[row][token]]
        return labels

    def __call__(self, timed: TimedText) -> TimedText:
        """The "punctuate" post-processing step: the same labels on the text and its words."""
        tokens = strip_special_tokens(timed.text).lower().split()
        if not tokens:
            return TimedText("", ())
        punctuated = apply_labels(tokens, self.label_words(tokens))
        words: tuple[Word, ...] = ()
        if len(timed.words) == len(tokens):
            words = tuple(replace(word, word=text) for word, text in zip(timed.words, punctuated, strict=True))
        elif timed.words:  # words that do not match the text one to one: cased like it, no marks
            log.warning("punctuation: %d words for %d in the text; words left unpunctuated",
                        len(timed.words), len(tokens))
            words = tuple(replace(word, word=word.word.lower()) for word in timed.words)
        return TimedText(" ".join(punctuated), words)


def load_punctuator(name_or_path: str) -> Punctuator:
    """`from_pretrained` of the tokenizer and the token-classification model; a `ModelLoadError`
    naming PUNCTUATION_MODEL for a checkpoint that can't load or has labels of no supported scheme."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForTokenClassification.from_pretrained(name_or_path)
    except Exception as exc:  # any loader failure is the same start-up error
        message = f"PUNCTUATION_MODEL={name_or_path!r} could not be loaded as a token-classification model: "
        raise ModelLoadError((message + f"{type(exc).__name__}: {exc}").splitlines()[0]) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"PUNCTUATION_MODEL={name_or_path!r} has no fast tokenizer (needed to label whole words)")
    try:
        labels = parse_scheme(model.config.id2label)
    except ValueError as exc:
        raise ModelLoadError(f"PUNCTUATION_MODEL={name_or_path!r}: {exc}") from exc
    model.eval()
    log.info("loaded punctuation model %s (%s, %.1fM parameters)", name_or_path, type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return Punctuator(name_or_path, tokenizer, model, labels)


def with_punctuation(chain: tuple[str, ...]) -> tuple[str, ...]:
    """A default chain with "punctuate" in place of "sentence_case" (a chain without it stays as it is)."""
    return tuple("punctuate" if step == "sentence_case" else step for step in chain)
