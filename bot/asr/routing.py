"""Which model transcribes a chat's audio, and in which language: pure functions, no I/O.

Operators name their models once, per language (`ASR_MODELS=en:facebook/wav2vec2-base-960h,*:openai/whisper-small`;
`*` is every other language and the model that detects). A chat chooses a language with
`/language` (`LanguageChoice`). `route` maps the two to the model key and the language
options of each request:

- a fixed language runs on that language's own model, or on `*`;
- `auto` runs on `*`, which detects;
- a restricted set (`en,ru`: detect, but only among these) runs on `*` with the set,
  unless every language of the set has the same model, which then runs it.

Then the detected language routes too (`route_detected`): a request that detects on a
model that can (Whisper) while the table has another model for a language it may detect
(`detection_may_reroute`) is run in two steps by the worker (`bot.execution.engine`):
one decoder step on the first 30 s window finds the language, then the request runs with
that language fixed, on the language's own model when the table has one (English notes
of an `auto` chat on `en:`'s model), else on the model that detected it. Otherwise
nothing runs twice: the model detects while it transcribes.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
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


def request_detects(planned: Route, detectors: Collection[str]) -> bool:
    """Whether a request planned so detects its language: it fixes none and its model can (`detectors`:
    the models that detect, such as Whisper). Any other model transcribes it as it is (a CTC model in
    the one language it was trained on), and nothing is sent on to another model."""
    return planned.language is None and planned.model in detectors


def own_models_after_detection(planned: Route, table: ModelTable,
                               known: Collection[str] | None = None) -> dict[str, str]:
    """The languages a detecting request is sent on to once detected, each with its model: the languages
    it may detect (its `languages`, else every one the detecting model `known`s; None: any) that have a
    model of their own in the table other than `planned.model`. Empty for a fixed language."""
    if planned.language is not None:
        return {}
    candidates = planned.languages or known
    return {language: model for language, model in table.items()
            if language != ANY and model != planned.model and (candidates is None or language in candidates)}


def detection_may_reroute(planned: Route, table: ModelTable, known: Collection[str]) -> bool:
    """Whether detecting first can send the request to another model (`own_models_after_detection`)."""
    return bool(own_models_after_detection(planned, table, known))


def route_detected(planned: Route, detected: str, table: ModelTable) -> Route:
    """Where a request runs once its model detected the language `detected`.

    A fixed language stays as it is. Otherwise the language is fixed to the detected one,
    on that language's own model when the table has one, else on the planned model (which
    then does not detect a second time).
    """
    if planned.language is not None:
        return planned
    return Route(table.get(detected, planned.model), detected, ())
