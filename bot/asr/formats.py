"""Transcript files: plain text, SubRip (.srt) and WebVTT (.vtt) from word times.

Cues are built from a transcription's words (no re-transcription): words are grouped
into cues of a readable length and joined as they are. The words are already
post-processed (`bot.asr.postprocess`), so a format never re-cases them: what a
punctuating model or a punctuation step wrote is what the subtitles show.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bot.asr.types import Word

MAX_CUE_CHARS = 42
MAX_CUE_SECONDS = 6.0
#: A pause this long between words starts a new cue.
CUE_BREAK_SECONDS = 0.8


@dataclass(frozen=True)
class Cue:
    start: float
    end: float
    text: str


def build_cues(words: Sequence[Word]) -> list[Cue]:
    """Group words into subtitle cues, breaking on length, duration and pauses."""
    cues: list[Cue] = []
    group: list[Word] = []

    def flush() -> None:
        if group:
            cues.append(Cue(group[0].start, group[-1].end, " ".join(w.word for w in group)))
            group.clear()

    for word in words:
        if group:
            length = sum(len(w.word) + 1 for w in group) + len(word.word)
            if (
                length > MAX_CUE_CHARS
                or word.end - group[0].start > MAX_CUE_SECONDS
                or word.start - group[-1].end >= CUE_BREAK_SECONDS
            ):
                flush()
        group.append(word)
    flush()
    return cues


def _timestamp(seconds: float, separator: str) -> str:
    millis = int(round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{separator}{millis:03d}"


def to_srt(words: Sequence[Word]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm` times."""
    blocks = [
        f"{index}\n{_timestamp(cue.start, ',')} --> {_timestamp(cue.end, ',')}\n{cue.text}\n"
        for index, cue in enumerate(build_cues(words), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(words: Sequence[Word]) -> str:
    """WebVTT: a header, then cues with `HH:MM:SS.mmm` times."""
    blocks = [
        f"{_timestamp(cue.start, '.')} --> {_timestamp(cue.end, '.')}\n{cue.text}\n" for cue in build_cues(words)
    ]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_txt(text: str) -> str:
    """The transcript as a text file, ending in a newline."""
    return text.strip() + "\n"
