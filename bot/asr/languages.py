"""The language codes a chat may choose (`/language`): Whisper's 100, in Whisper's own order.

Kept as a static tuple so the Telegram side checks a code without importing transformers;
`tests/test_routing.py` checks it against transformers' Whisper tokenizer table.
"""

from __future__ import annotations

WHISPER_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id", "hi",
    "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg", "lt", "la",
    "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy",
    "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be",
    "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)

_KNOWN = frozenset(WHISPER_LANGUAGES)


def is_language(code: str) -> bool:
    """Whether `code` is one of Whisper's language codes (lower case, as Whisper writes them)."""
    return code in _KNOWN
