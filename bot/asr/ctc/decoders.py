"""CTC decoders: from a model's logits to text and timed words.

The recognizer hands every forward pass's logits to the decoder the request names
(`TextOptions.decoder`), keeps what the decoder's `reduce` returns for the frames each
chunk contributes, and asks the decoder for the text of all of them once at the end.
A decoder keeps only what it needs: the greedy one reduces on the model's device to one
id per frame (as cheap as an argmax can be); a beam-search decoder would keep
log-probabilities. Adding one is a class here and an entry in `DECODERS`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import torch

from bot.asr.postprocess import strip_special_tokens
from bot.asr.types import TimedText, Word


@dataclass(frozen=True)
class DecodedText:
    """A decoder's result: the text exactly as the tokenizer spells it, and that text and its
    words without special tokens, which is what post-processing starts from."""

    raw_text: str
    timed: TimedText


class CTCDecoder(Protocol):
    """What the CTC recognizer needs from a decoder."""

    def __init__(self, tokenizer: Any, *, seconds_per_frame: float, hotwords: tuple[str, ...]) -> None: ...

    def reduce(self, logits: torch.Tensor) -> np.ndarray:
        """What this decoder keeps of one forward pass's (batch, frames, vocabulary) logits,
        on the CPU with frames on axis 1, so the recognizer can crop each chunk's frames."""
        ...

    def decode(self, frames: Sequence[np.ndarray]) -> DecodedText:
        """The text and timed words of every chunk's kept frames (`reduce`'s rows, cropped), in order."""
        ...

    def partial_text(self, frames: Sequence[np.ndarray]) -> str:
        """The text of the chunks so far, without special tokens: for progress reports, so it may be cheaper."""
        ...


class GreedyDecoder:
    """Best path decoding: the most likely symbol of each frame, repeats and blanks removed
    by the tokenizer, words timed by their first and last frame."""

    def __init__(self, tokenizer: Any, *, seconds_per_frame: float, hotwords: tuple[str, ...] = ()) -> None:
        if hotwords:
            raise ValueError("the greedy decoder cannot favour hotwords: it keeps only the best symbol of each frame")
        self.tokenizer = tokenizer
        self.seconds_per_frame = seconds_per_frame

    def reduce(self, logits: torch.Tensor) -> np.ndarray:
        return logits.argmax(dim=-1).cpu().numpy()

    def decode(self, frames: Sequence[np.ndarray]) -> DecodedText:
        ids = np.concatenate(frames) if frames else np.zeros(0, dtype=np.int64)
        if ids.size == 0:
            return DecodedText("", TimedText("", ()))
        decoded = self.tokenizer.decode(ids.tolist(), output_word_offsets=True)
        words = tuple(
            Word(
                word=word,
                start=round(float(item["start_offset"]) * self.seconds_per_frame, 3),
                end=round(float(item["end_offset"]) * self.seconds_per_frame, 3),
            )
            for item in decoded.word_offsets
            if (word := strip_special_tokens(item["word"]))
        )
        return DecodedText(decoded.text, TimedText(strip_special_tokens(decoded.text), words))

    def partial_text(self, frames: Sequence[np.ndarray]) -> str:
        return strip_special_tokens(self.tokenizer.decode(np.concatenate(frames).tolist())) if frames else ""


#: Every decoder by the name requests use (`TextOptions.decoder`).
DECODERS: Mapping[str, type[CTCDecoder]] = {"greedy": GreedyDecoder}


def make_decoder(name: str, tokenizer: Any, *, seconds_per_frame: float, hotwords: tuple[str, ...] = ()) -> CTCDecoder:
    """The decoder called `name`; an unknown name or an option it cannot honour is a ValueError."""
    decoder = DECODERS.get(name)
    if decoder is None:
        raise ValueError(f"unknown decoder {name!r}; the CTC decoders are: {', '.join(DECODERS)}")
    return decoder(tokenizer, seconds_per_frame=seconds_per_frame, hotwords=hotwords)
