"""Word-level comparison of transcripts: normalisation, word edit distance, pooled word error rate.

Pure Python (no numpy, no torch), so the precision bench and its unit test share one
definition. Transcripts are compared as words, not characters: one flipped frame that
turns "CAT" into "CAP" is one changed word, whatever its character positions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Everything that is not a letter, a digit or an apostrophe separates words.
_SEPARATORS = re.compile(r"[^\w']+|_")


def normalise_words(text: str) -> list[str]:
    """`text` as upper-case words, punctuation dropped: the corpus references (mixed case and
    punctuation) and the model's upper-case output then compare like for like."""
    words = (word.strip("'") for word in _SEPARATORS.split(text.upper()))
    return [word for word in words if word]


def word_edit_distance(reference: Sequence[str], hypothesis: Sequence[str]) -> int:
    """Levenshtein distance between two word sequences: substitutions, insertions and deletions, one each."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(min(previous[j] + 1,  # the reference word deleted
                               current[j - 1] + 1,  # the hypothesis word inserted
                               previous[j - 1] + (ref_word != hyp_word)))  # kept or substituted
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class WordErrors:
    """Edits pooled over several transcripts, against their references' word count."""

    edits: int
    reference_words: int
    transcripts: int
    changed: int

    @property
    def rate(self) -> float:
        """Pooled word error rate: all edits over all reference words (0 when nothing was compared)."""
        return self.edits / self.reference_words if self.reference_words else float(self.edits > 0)

    @property
    def changed_share(self) -> float:
        """Share of transcripts whose words differ from their reference at all."""
        return self.changed / self.transcripts if self.transcripts else 0.0


def word_errors(pairs: Iterable[tuple[str, str]]) -> WordErrors:
    """Pool (reference, hypothesis) texts: their word edits, reference words and how many differ."""
    edits = words = count = changed = 0
    for reference, hypothesis in pairs:
        ref, hyp = normalise_words(reference), normalise_words(hypothesis)
        distance = word_edit_distance(ref, hyp)
        edits += distance
        words += len(ref)
        count += 1
        changed += distance > 0
    return WordErrors(edits=edits, reference_words=words, transcripts=count, changed=changed)
