"""The key of the transcript cache: everything that decides a transcript's text, as one stored string."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from bot.asr.types import TextOptions


@dataclass(frozen=True)
class CacheKey:
    """What a transcript's text was (or would be) made with: the request's text options, and the
    engine's settings that change the text without being a request's to choose.

    A re-sent file is answered from the cache only when its key equals the stored one, so
    two keys must be equal only when the text would be the same. The engine part is what
    the operator sets for every request: `punctuation_model` (PUNCTUATION_MODEL, None when
    off), so a file sent before punctuation was turned on is transcribed again, punctuated.
    It is named even for models it leaves alone (Whisper punctuates itself): the bot does not
    know a model's family, and a needless miss costs one transcription where a wrong hit
    would keep the wrong text for good. Settings that only move the text at chunk seams or in
    float rounding (chunk and stride lengths, compute type, CPU kernels) are left out, so
    tuning them keeps the cache.
    """

    options: TextOptions
    #: The token-classification checkpoint that punctuates CTC transcripts, None when punctuation is off.
    punctuation_model: str | None

    def encode(self) -> str:
        """The stored form (`transcripts.text_options_key`): every field, as sorted compact JSON, so
        equal keys are equal strings and the lookup is one indexed comparison."""
        fields = {**asdict(self.options), "punctuation_model": self.punctuation_model}
        return json.dumps(fields, sort_keys=True, separators=(",", ":"))
