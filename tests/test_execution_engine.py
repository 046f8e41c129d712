"""The engine every worker runs (`bot.execution.engine`): the request's model, routing by the detected language,
the punctuation step, and the same text whether it loads its models itself or gets them shared.

A tiny random Whisper is `*` and the tiny wav2vec2 the model of one language. Random weights
detect some language: the tests first ask the Whisper which, then build the table around it, so
either branch (a language with its own model, a language without) is taken on purpose. The
Whisper decodes without temperature fallback (sampling would make its random text differ from
run to run) and with few tokens per window, so each of its transcripts costs seconds, not minutes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from bot.asr import postprocess
from bot.asr.loading import SharedModel, load_model
from bot.asr.punctuation import load_punctuator
from bot.asr.recognizer import LanguageDetector, Recognizer, RecognizerConfig, build_recognizer
from bot.asr.routing import ANY
from bot.asr.types import TextOptions, Transcription
from bot.asr.whisper.recognizer import Fallback, WhisperRecognizer
from bot.audio.decode import decode_audio
from bot.errors import VoiceBotError
from bot.execution.config import DecodeLimits, EngineConfig
from bot.execution.engine import Engine
from tests.model_factory import EXACT_COMPUTE_TYPE
from tests.punctuation_factory import build_punctuation_model
from tests.whisper_factory import build_random_whisper_model

LABELS = ("Lower_O", "Upper_O", "Lower_,", "Upper_,", "Lower_.", "Upper_.")
SETTINGS = RecognizerConfig(device="cpu", compute_type=EXACT_COMPUTE_TYPE, chunk_seconds=4.0, stride_seconds=1.0,
                            progress_interval=0.0)


@pytest.fixture(scope="module")
def whisper_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_random_whisper_model(tmp_path_factory.mktemp("engine-whisper"), seed=3, max_length=16))


@pytest.fixture(scope="module")
def punctuation_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    return str(build_punctuation_model(tmp_path_factory.mktemp("engine-punctuation"), LABELS))


@pytest.fixture(scope="module")
def recognizers(whisper_path: str, tiny_model: Path) -> dict[str, Recognizer]:
    """Built once for the module, never given a punctuator (an engine with one changes their default chain)."""
    whisper = WhisperRecognizer(load_model(whisper_path), dataclasses.replace(SETTINGS, compute_type="float32"),
                                fallback=Fallback(temperatures=(0.0,)))
    return {whisper_path: whisper, str(tiny_model): build_recognizer(load_model(str(tiny_model)), SETTINGS)}


@pytest.fixture(scope="module")
def audio(speech_ogg: Path) -> np.ndarray:
    return decode_audio(speech_ogg, max_seconds=60)


@pytest.fixture(scope="module")
def whispered(recognizers: dict[str, Recognizer], whisper_path: str, audio: np.ndarray) -> Transcription:
    """The random Whisper's transcript of the speech, detecting the language as it transcribes."""
    return recognizers[whisper_path].transcribe(audio, TextOptions(model=whisper_path))


@pytest.fixture(scope="module")
def detected(whispered: Transcription) -> str:
    """The language the random Whisper hears in the speech."""
    assert whispered.language is not None
    return whispered.language


def other_than(language: str) -> str:
    return "fr" if language != "fr" else "de"


def run(engine: Engine, audio: np.ndarray, model: str, **options: object) -> Transcription:
    return engine.transcribe(audio, TextOptions(model=model, **options))  # type: ignore[arg-type]


def test_only_whisper_detects_and_its_detection_is_transcribe_s(
    recognizers: dict[str, Recognizer], whisper_path: str, tiny_model: Path, audio: np.ndarray, detected: str
) -> None:
    whisper = recognizers[whisper_path]
    assert isinstance(whisper, LanguageDetector) and not isinstance(recognizers[str(tiny_model)], LanguageDetector)
    assert whisper.detect_language(audio) == detected
    assert whisper.detect_language(audio, (other_than(detected), "ja")) in (other_than(detected), "ja")
    with pytest.raises(ValueError, match="does not know the language 'xx'"):
        whisper.detect_language(audio, ("en", "xx"))


def test_the_request_s_model_runs_and_an_unknown_one_is_refused(
    recognizers: dict[str, Recognizer], whisper_path: str, tiny_model: Path, audio: np.ndarray
) -> None:
    ctc = str(tiny_model)
    engine = Engine(recognizers, {"en": ctc, ANY: whisper_path})
    assert engine.models == (whisper_path, ctc)
    result = run(engine, audio, ctc, language="en")
    expected = recognizers[ctc].transcribe(audio, TextOptions(model=ctc, language="en"))
    assert (result.model, result.text, result.words, result.language) == (ctc, expected.text, expected.words, "en")
    with pytest.raises(VoiceBotError, match="not 'openai/whisper-large-v3'") as caught:
        run(engine, audio, "openai/whisper-large-v3")
    assert repr(ctc) in str(caught.value) and repr(whisper_path) in str(caught.value)


def test_a_detected_language_with_its_own_model_runs_there(
    recognizers: dict[str, Recognizer], whisper_path: str, tiny_model: Path, audio: np.ndarray, detected: str
) -> None:
    ctc = str(tiny_model)
    table = {detected: ctc, ANY: whisper_path}
    result = run(Engine(recognizers, table), audio, whisper_path)
    expected = recognizers[ctc].transcribe(audio, TextOptions(model=ctc, language=detected))
    assert result.model == table[result.language] == ctc
    assert (result.text, result.words, result.options.language) == (expected.text, expected.words, detected)
    assert result.text


def test_a_detected_language_without_its_own_model_stays_on_the_detecting_model(
    recognizers: dict[str, Recognizer], whisper_path: str, tiny_model: Path, audio: np.ndarray, detected: str,
    whispered: Transcription,
) -> None:
    result = run(Engine(recognizers, {other_than(detected): str(tiny_model), ANY: whisper_path}), audio, whisper_path)
    assert (result.model, result.language, result.options.language) == (whisper_path, detected, detected)
    # the text the Whisper writes when it detects as it transcribes
    assert (result.text, result.words) == (whispered.text, whispered.words) and result.text


def test_restricted_detection_routes_among_the_chat_s_languages(
    recognizers: dict[str, Recognizer], whisper_path: str, tiny_model: Path, audio: np.ndarray, detected: str
) -> None:
    ctc = str(tiny_model)
    among = (other_than(detected), "ja")  # the chat said these: detection picks one of them, both have a model
    table = {among[0]: ctc, among[1]: ctc, ANY: whisper_path}
    result = run(Engine(recognizers, table), audio, whisper_path, languages=among)
    assert result.language in among and result.model == table[result.language] == ctc
    assert result.options.language == result.language and result.text


def test_without_another_model_to_send_it_to_nothing_is_detected_first(
    recognizers: dict[str, Recognizer], whisper_path: str, tiny_model: Path, audio: np.ndarray, detected: str
) -> None:
    ctc = str(tiny_model)
    cases = [
        ({ANY: whisper_path, "en": whisper_path}, whisper_path, detected),  # one model for everything
        ({detected: whisper_path, ANY: ctc}, ctc, None),  # a CTC model cannot detect
    ]
    for table, model, language in cases:
        result = run(Engine(recognizers, table), audio, model)
        # the request ran as asked: its language not fixed by an earlier detection
        assert (result.model, result.options.language, result.language) == (model, None, language)


def test_punctuation_applies_to_the_routed_ctc_model_only(
    whisper_path: str, tiny_model: Path, punctuation_path: str, audio: np.ndarray, detected: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An engine registers its "punctuate" step for its whole process, as a worker's should; here that
    # process is the test session's, so the registry is this test's own copy.
    monkeypatch.setattr(postprocess, "STEPS", dict(postprocess.STEPS))
    ctc = str(tiny_model)
    config = EngineConfig(model=whisper_path, attention="sdpa", threads=1, recognizer=SETTINGS,
                          limits=DecodeLimits(max_seconds=60, timeout=30, memory_mb=512), models=(whisper_path, ctc),
                          punctuation_model=punctuation_path, table=((detected, ctc), (ANY, whisper_path)))
    engine = Engine.load(config)
    routed = run(engine, audio, whisper_path)
    assert routed.model == ctc and routed.options.postprocess == ("punctuate",)
    assert routed.text != routed.raw_text and [word.word for word in routed.words] == routed.text.split()
    whisper = engine.recognizer(whisper_path)
    assert isinstance(whisper, WhisperRecognizer) and whisper.default_postprocess == ()  # it punctuates itself

    # the same engine from weights a parent shares, as a local worker builds it
    shared = [SharedModel.from_loaded(load_model(name)) for name in config.models]
    from_shared = Engine.from_shared(config, shared, load_punctuator(punctuation_path))
    again = run(from_shared, audio, whisper_path)
    assert (again.model, again.text, again.words, again.language) == (ctc, routed.text, routed.words, detected)
