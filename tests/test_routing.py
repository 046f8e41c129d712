"""Model routing and chat language choices: the pure functions of `bot.asr.routing`."""

from __future__ import annotations

import pytest
from transformers.models.whisper.tokenization_whisper import LANGUAGES

from bot.asr.languages import WHISPER_LANGUAGES, is_language
from bot.asr.routing import (
    ANY,
    AUTO,
    LanguageChoice,
    Route,
    UnknownLanguageError,
    detection_may_reroute,
    models_to_load,
    own_models_after_detection,
    parse_choice,
    parse_models,
    request_detects,
    route,
    route_detected,
)
from bot.settings import Settings

EN = "facebook/wav2vec2-base-960h"
WHISPER = "openai/whisper-small"
TABLE = parse_models(f"en:{EN},*:{WHISPER}", default="unused")


def test_the_language_list_is_whispers() -> None:
    assert WHISPER_LANGUAGES == tuple(LANGUAGES)
    assert is_language("yue") and not is_language("xx") and not is_language("EN")


@pytest.mark.parametrize(("text", "choice"), [
    (None, AUTO), ("", AUTO), ("auto", AUTO), (" AUTO ", AUTO),
    ("de", LanguageChoice(language="de")), ("DE", LanguageChoice(language="de")),
    ("en,ru", LanguageChoice(among=("en", "ru"))), ("en, ru", LanguageChoice(among=("en", "ru"))),
    ("en ru en", LanguageChoice(among=("en", "ru"))), ("en,", LanguageChoice(language="en")),
    ("ru,ru", LanguageChoice(language="ru")), (",", AUTO),
])
def test_parse_choice(text: str | None, choice: LanguageChoice) -> None:
    assert parse_choice(text) == choice
    assert parse_choice(str(choice)) == choice  # what is stored reads back the same


def test_choices_are_written_as_users_type_them() -> None:
    assert [str(parse_choice(text)) for text in ("auto", "de", "en, ru")] == ["auto", "de", "en,ru"]


@pytest.mark.parametrize(("text", "code"), [("xx", "xx"), ("en,klingon", "klingon"), ("english", "english")])
def test_unknown_codes_name_the_first_bad_one(text: str, code: str) -> None:
    with pytest.raises(UnknownLanguageError) as caught:
        parse_choice(text)
    assert caught.value.code == code


def test_parse_models() -> None:
    assert TABLE == {"en": EN, "*": WHISPER}
    assert parse_models("", default=EN) == {"*": EN}
    assert parse_models(" DE : some/german-ctc , ", default=EN) == {"de": "some/german-ctc", "*": EN}
    assert parse_models("en:/models/a dir", default=EN)["en"] == "/models/a dir"


@pytest.mark.parametrize(("spec", "message"), [
    ("en", "not language:model"), ("en:", "not language:model"), (":x", "not language:model"),
    ("xx:model", "not a Whisper language code"), ("en:a,en:b", "named twice"),
])
def test_parse_models_refuses_bad_tables(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_models(spec, default=EN)


def test_settings_refuse_a_bad_table_and_default_to_asr_model() -> None:
    with pytest.raises(ValueError, match="named twice"):
        Settings(asr_models="en:a,en:b")
    assert Settings(asr_model="m").model_table() == {"*": "m"}
    assert Settings(asr_model="m", asr_models="fr:f").model_table() == {"fr": "f", "*": "m"}


def test_models_to_load_are_distinct_and_start_with_the_detecting_one() -> None:
    assert models_to_load({"en": EN, "de": EN, "*": WHISPER}) == (WHISPER, EN)
    assert models_to_load({"*": EN, "en": EN}) == (EN,)


def test_a_fixed_language_runs_on_its_own_model_or_the_fallback() -> None:
    assert route(parse_choice("en"), TABLE) == Route(EN, "en", ())
    assert route(parse_choice("de"), TABLE) == Route(WHISPER, "de", ())


def test_auto_runs_on_the_detecting_model() -> None:
    assert route(AUTO, TABLE) == Route(WHISPER, None, ())
    assert route(AUTO, {"*": EN}) == Route(EN, None, ())


def test_a_restricted_set_detects_unless_one_model_covers_it() -> None:
    assert route(parse_choice("en,ru"), TABLE) == Route(WHISPER, None, ("en", "ru"))
    assert route(parse_choice("de,fr"), TABLE) == Route(WHISPER, None, ("de", "fr"))
    shared = {"en": EN, "de": EN, "*": WHISPER}
    assert route(parse_choice("en,de"), shared) == Route(EN, None, ("en", "de"))


def test_a_detected_language_with_its_own_model_goes_there_with_the_language_fixed() -> None:
    assert route_detected(route(AUTO, TABLE), "en", TABLE) == Route(EN, "en", ())
    assert route_detected(route(parse_choice("en,ru"), TABLE), "en", TABLE) == Route(EN, "en", ())


def test_a_detected_language_without_its_own_model_stays_on_the_detecting_model() -> None:
    assert route_detected(route(AUTO, TABLE), "de", TABLE) == Route(WHISPER, "de", ())
    assert route_detected(route(parse_choice("en,ru"), TABLE), "ru", TABLE) == Route(WHISPER, "ru", ())
    assert route_detected(Route(WHISPER, None, ()), "en", {"*": WHISPER}) == Route(WHISPER, "en", ())


def test_a_fixed_language_is_never_rerouted() -> None:
    for planned in (route(parse_choice("de"), TABLE), route(parse_choice("en"), TABLE)):
        assert route_detected(planned, "en", TABLE) == planned
        assert not detection_may_reroute(planned, TABLE, ["en", "de"])


def test_detection_runs_first_only_when_a_language_it_may_find_has_another_model() -> None:
    known = ["en", "de", "ru"]
    assert detection_may_reroute(route(AUTO, TABLE), TABLE, known)
    assert detection_may_reroute(route(parse_choice("en,ru"), TABLE), TABLE, known)
    assert not detection_may_reroute(route(parse_choice("de,ru"), TABLE), TABLE, known)  # neither has its own
    assert not detection_may_reroute(route(AUTO, TABLE), TABLE, ["de", "ru"])  # the model cannot find en
    assert not detection_may_reroute(route(AUTO, {"*": WHISPER}), {"*": WHISPER}, known)
    assert not detection_may_reroute(route(AUTO, {"en": WHISPER, "*": WHISPER}), {"en": WHISPER, "*": WHISPER}, known)
    shared = {"en": EN, "de": EN, "*": WHISPER}
    assert not detection_may_reroute(route(parse_choice("en,de"), shared), shared, known)  # already on EN


def test_the_languages_a_detecting_chat_is_sent_on_to_are_those_with_their_own_model() -> None:
    assert own_models_after_detection(route(AUTO, TABLE), TABLE) == {
        language: model for language, model in TABLE.items() if language != ANY and model != TABLE[ANY]}
    assert own_models_after_detection(route(parse_choice("en,ru"), TABLE), TABLE) == {"en": TABLE["en"]}
    assert own_models_after_detection(route(AUTO, TABLE), TABLE, known=["de"]) == {}
    assert own_models_after_detection(route(parse_choice("de"), TABLE), TABLE) == {}


def test_a_request_detects_only_without_a_fixed_language_and_on_a_model_that_can() -> None:
    detectors = frozenset({WHISPER})
    assert request_detects(route(AUTO, TABLE), detectors)
    assert request_detects(route(parse_choice("en,ru"), TABLE), detectors)
    assert not request_detects(route(parse_choice("de"), TABLE), detectors)  # fixed: nothing to detect
    ctc_only = parse_models(f"en:{EN},*:facebook/wav2vec2-large-xlsr-53-german", default="unused")
    assert not request_detects(route(AUTO, ctc_only), detectors)
    assert not request_detects(route(AUTO, TABLE), frozenset())
    shared = {"en": EN, "ru": EN, "*": WHISPER}
    assert not request_detects(route(parse_choice("en,ru"), shared), detectors)  # both on EN, which cannot
