"""A Ray Serve application with a model table and a punctuation model: every model served, routed as locally.

One extra application on the shared cluster (tests/ray_cluster.py): a tiny random Whisper as `*`
that detects English on any audio, the tiny wav2vec2 as `en`, and a tiny punctuation model. Its
answers are compared with the local engine's (`bot.execution.engine`) on the same file, built from
the same settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from bot.asr import postprocess
from bot.asr.types import TextOptions, Transcription
from bot.audio.decode import decode_audio
from bot.execution.config import EngineConfig
from bot.execution.engine import Engine
from bot.settings import load_settings
from tests.punctuation_factory import build_punctuation_model
from tests.ray_cluster import TEST_SETTINGS, RayServe
from tests.whisper_factory import build_random_whisper_model

pytest.importorskip("ray")

ENDPOINT = "/v1/audio/transcriptions"
LABELS = ("Lower_O", "Upper_O", "Lower_,", "Upper_,", "Lower_.", "Upper_.")


@pytest.fixture(scope="module")
def models(tiny_model: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The application's settings: ASR_MODELS (`en` on the CTC model, `*` on a Whisper that hears English)
    and PUNCTUATION_MODEL."""
    whisper = build_random_whisper_model(tmp_path_factory.mktemp("ray-whisper"), favour_language="en", max_length=16)
    punctuation = build_punctuation_model(tmp_path_factory.mktemp("ray-punctuation"), LABELS)
    return {"asr_models": f"en:{tiny_model},*:{whisper}", "punctuation_model": str(punctuation)}


@pytest.fixture(scope="module")
def routed_server(ray_serve: RayServe, models: dict[str, str]) -> Iterator[str]:
    url = ray_serve.deploy("routed", **models)
    try:
        yield url
    finally:
        ray_serve.delete("routed")


@pytest.fixture(scope="module")
def local_engine(ray_serve: RayServe, models: dict[str, str]) -> Iterator[Engine]:
    """The engine a local worker runs with the application's settings.

    An engine registers its "punctuate" step for its whole process, as a worker's should; here that
    process is the test session's, so the step registry is this module's own copy."""
    settings = load_settings(**{"asr_model": str(ray_serve.model), **TEST_SETTINGS, **models})
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(postprocess, "STEPS", dict(postprocess.STEPS))
        yield Engine.load(EngineConfig.from_settings(settings))


def transcribe(url: str, audio: bytes, **fields: Any) -> Transcription:
    response = httpx.post(url + ENDPOINT, files={"file": ("note.ogg", audio)},
                          data={"response_format": "verbose_json", **fields}, timeout=120)
    assert response.status_code == 200, response.text
    return Transcription.from_dict(response.json()["x_voicebot"])


def test_every_model_is_served_and_routed_as_by_the_local_engine(
    routed_server: str, local_engine: Engine, tiny_model: Path, speech_ogg: Path
) -> None:
    whisper, ctc = local_engine.models
    listed = httpx.get(routed_server + "/v1/models", timeout=30).json()
    assert [model["id"] for model in listed["data"]] == [whisper, ctc] and ctc == str(tiny_model)
    assert [model["x_voicebot"]["detects_language"] for model in listed["data"]] == [True, False]
    assert local_engine.language_detectors == {whisper}

    samples = decode_audio(speech_ogg, max_seconds=60)
    audio = speech_ogg.read_bytes()
    for fields, options in [
        ({}, TextOptions(model=whisper)),  # no model: `*`, which detects English and sends it on to `en`
        ({"model": whisper}, TextOptions(model=whisper)),
        ({"model": ctc, "language": "en"}, TextOptions(model=ctc, language="en")),
    ]:
        expected = local_engine.transcribe(samples, options)
        served = transcribe(routed_server, audio, **fields)
        assert (served.model, served.language) == (expected.model, expected.language) == (ctc, "en")
        assert served.options.postprocess == expected.options.postprocess == ("punctuate",)
        assert (served.text, served.raw_text, served.words) == (expected.text, expected.raw_text, expected.words)
        assert served.text != served.raw_text and served.text

    refused = httpx.post(routed_server + ENDPOINT, files={"file": ("note.ogg", audio)},
                         data={"model": "whisper-1"}, timeout=60)
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "model_not_found"
    assert repr(whisper) in refused.json()["error"]["message"] and repr(ctc) in refused.json()["error"]["message"]
