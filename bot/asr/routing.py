"""Which model transcribes a chat's audio, and in which language: pure functions, no I/O.

Operators name their models once, per language (`ASR_MODELS=en:facebook/wav2vec2-base-960h,*:openai/whisper-small`;
`*` is every other language and the model that detects). A chat chooses a language with
`/language` (`LanguageChoice`). `route` maps the two to the model key and the language
options of each request:

- a fixed language runs on that language's own model, or on `*`;
- `auto` runs on `*`, which detects;
- a restricted set (`en,ru`: detect, but only among these) runs on `*` with the set,
  unless every language of the set has the same model, which then runs it.

Routing happens before the audio is run, on the chat's choice alone. A language that
`*` detects is not sent on to that language's own model: that would transcribe the
audio twice, and the detecting model already gave its text in that language. A chat
that wants a language's own model fixes the language (`/language en`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.asr.languages import is_language

#: The table key of the model for every language without its own, and for detection.
ANY = "*"

ModelTable = Mapping[str, str]


class UnknownLanguageError(ValueError):
    """A language code that is not one of Whisper's."""

    def __init__(self, code: str) -> None:
        super().__init__(f"unknown language code {code!r}")
        self.code = code


@dataclass(frozen=True)
class LanguageChoice:
    """A chat's `/language`: one fixed `language`, detection `among` some languages, or neither (auto)."""

    language: str | None = None
    among: tuple[str, ...] = ()

    @property
    def is_auto(self) -> bool:
        return self.language is None and not self.among

    def __str__(self) -> str:
        """How it is written, stored and shown: `de`, `en,ru` or `auto`."""
        return self.language or ",".join(self.among) or "auto"


AUTO = LanguageChoice()


def parse_choice(text: str | None) -> LanguageChoice:
    """`de`, `en,ru` (spaces allowed), `auto`, or None/empty (auto) as a choice.

    Codes are Whisper's (case-insensitive); a set of one is that language fixed. The
    first code that is not a language raises `UnknownLanguageError`.
    """
    cleaned = (text or "").strip().lower()
    if cleaned in ("", "auto"):
        return AUTO
    codes: list[str] = []
    for part in cleaned.replace(" ", ",").split(","):
        if not part:
            continue
        if not is_language(part):
            raise UnknownLanguageError(part)
        if part not in codes:
            codes.append(part)
    if not codes:
        return AUTO
    if len(codes) == 1:
        return LanguageChoice(language=codes[0])
    return LanguageChoice(among=tuple(codes))


def parse_models(spec: str, default: str) -> dict[str, str]:
    """`ASR_MODELS` as a table: language code (or `*`) -> model; `*` is `default` unless named.

    An empty spec is `default` for everything. Raises ValueError naming the bad entry.
    """
    table: dict[str, str] = {}
    for entry in (part.strip() for part in spec.split(",")):
        if not entry:
            continue
        key, separator, model = (piece.strip() for piece in entry.partition(":"))
        key = key.lower()
        if not separator or not key or not model:
            raise ValueError(f"{entry!r} is not language:model (for example en:facebook/wav2vec2-base-960h)")
        if key != ANY and not is_language(key):
            raise ValueError(f"{key!r} in {entry!r} is not a Whisper language code or *")
        if key in table:
            raise ValueError(f"{key!r} is named twice")
        table[key] = model
    table.setdefault(ANY, default)
    return table


def models_to_load(table: ModelTable) -> tuple[str, ...]:
    """Every distinct model of the table, `*` first: each is loaded once."""
    return tuple(dict.fromkeys([table[ANY], *table.values()]))


@dataclass(frozen=True)
class Route:
    """What a request of the chat asks for: the model key and its language options."""

    model: str
    language: str | None
    languages: tuple[str, ...]


def route(choice: LanguageChoice, table: ModelTable) -> Route:
    """The model and language options for a chat's choice (see the module's rules)."""
    fallback = table[ANY]
    if choice.language is not None:
        return Route(table.get(choice.language, fallback), choice.language, ())
    if choice.among:
        models = {table.get(language, fallback) for language in choice.among}
        return Route(models.pop() if len(models) == 1 else fallback, None, choice.among)
    return Route(fallback, None, ())
