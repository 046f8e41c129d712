"""Which language a Whisper model hears: its first decoder step's language-token logits.

Whisper predicts a language token right after <|startoftranscript|>; the most likely one is
the language (as `WhisperForConditionalGeneration.detect_language` does). Restricted
detection takes the most likely among the languages a chat said it speaks, so a Russian
speaker with an accent is not transcribed as Bulgarian when the chat said "en,ru".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch


def language_ids(generation_config: Any) -> dict[str, int]:
    """Language code -> token id, from the checkpoint's generation config (`lang_to_id`: "<|en|>" -> id)."""
    table = getattr(generation_config, "lang_to_id", None) or {}
    return {token.strip("<|>"): int(index) for token, index in table.items()}


def check_languages(known: Mapping[str, int], codes: Sequence[str]) -> None:
    """A ValueError naming the first code the model does not know."""
    for code in codes:
        if code not in known:
            raise ValueError(f"this model does not know the language {code!r}; it knows: {', '.join(sorted(known))}")


def detect_language(model: Any, features: torch.Tensor, known: Mapping[str, int],
                    among: Sequence[str] = ()) -> str:
    """The most likely language of one 30 s window of log-mel `features` (1 x mels x 3000), among `among` if given."""
    candidates = list(among) or list(known)
    ids = torch.tensor([known[code] for code in candidates])
    start = torch.full((1, 1), model.generation_config.decoder_start_token_id, dtype=torch.long, device=model.device)
    with torch.inference_mode():
        logits = model(input_features=features, decoder_input_ids=start, use_cache=False).logits[0, -1]
    return candidates[int(logits[ids.to(logits.device)].argmax())]
