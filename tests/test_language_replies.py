"""What /language says a chat's choice comes to: detection is claimed only where the model detects."""

from __future__ import annotations

from bot.telegram import replies

WHISPER, EN, DE = "openai/whisper-small", "facebook/wav2vec2-base-960h", "jonatasgrosman/wav2vec2-large-xlsr-53-german"


def test_a_detecting_model_says_so_and_names_where_detected_languages_go() -> None:
    text = replies.language_state("auto", WHISPER, {"en": EN}, detects=True)
    assert text.startswith("Language: detected for each message. Model: openai/whisper-small;")
    assert f"en: {EN}" in text
    assert "detected among en, ru." in replies.language_set("en,ru", WHISPER, {"en": EN}, detects=True)


def test_a_model_that_cannot_detect_is_not_said_to() -> None:
    for choice, asked in (("auto", "auto"), ("en,de", "one of en, de")):
        text = replies.language_set(choice, DE, detects=False)
        assert text == (f"Done. Language: {asked}, but this model does not detect languages: it transcribes every "
                        f"message in the language it was trained on. Model: {DE}.")
        assert "detected" not in text


def test_a_fixed_language_is_stated_whatever_the_model() -> None:
    for detects in (True, False):
        assert replies.language_state("de", DE, detects=detects).startswith(f"Language: de. Model: {DE}.\n")
