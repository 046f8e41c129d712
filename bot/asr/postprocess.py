"""Turning CTC output into text people read."""

from __future__ import annotations

import re

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
