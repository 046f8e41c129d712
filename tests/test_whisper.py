"""Whisper checkpoints through the production code path: a tiny random Whisper with the real vocabulary.

The models are saved with save_pretrained (tests/whisper_factory.py) and loaded by
`bot.asr.loading`. Random weights emit random text, so the tests check what does not depend
on the weights: which language is detected (the factory favours one), that a fixed language
and a prompt reach the decoder, windows over long audio, word times, cancel between windows.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import WhisperForConditionalGeneration

from bot.asr.loading import LoadedModel, SharedModel, load_model
from bot.asr.recognizer import RecognizerConfig, build_recognizer
from bot.asr.types import TextOptions, Transcription
from bot.asr.whisper.recognizer import BLOCK_SECONDS, Fallback, WhisperRecognizer
from bot.audio.decode import decode_audio
from bot.errors import JobCancelledError
from bot.execution.base import TranscriptionRequest
from bot.execution.config import EngineConfig
from bot.execution.local.pool import ProcessPoolBackend
from bot.execution.scheduler import Scheduler
from bot.settings import Settings
from tests.conftest import REPO
from tests.whisper_factory import (
    FIRST_LANGUAGE,
    SOT,
    START_OF_PREV,
    TRANSCRIBE,
    WHISPER_LANGUAGES,
    build_random_whisper_model,
)

FAVOURED = "de"


@pytest.fixture(scope="session")
def whisper_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Whisper that detects German on any audio (its other languages in random order)."""
    return build_random_whisper_model(tmp_path_factory.mktemp("whisper-favoured"), favour_language=FAVOURED,
                                      max_length=48)


@pytest.fixture(scope="session")
def neutral_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Whisper with nothing favoured."""
    return build_random_whisper_model(tmp_path_factory.mktemp("whisper-neutral"), seed=1, max_length=48)


def decoding_once(loaded: LoadedModel) -> WhisperRecognizer:
    """A recognizer that decodes each window once: random text fails every fallback check, so the
    default would decode it six times over (that path has its own test; the pool and CLI tests run it)."""
    config = RecognizerConfig(device="cpu", compute_type="float32", progress_interval=0)
    return WhisperRecognizer(loaded, config, fallback=Fallback(temperatures=(0.0,)))


@pytest.fixture(scope="session")
def whisper(whisper_model: Path) -> WhisperRecognizer:
    return decoding_once(load_model(str(whisper_model)))


@pytest.fixture(scope="module")
def speech(speech_ogg: Path) -> np.ndarray:
    return decode_audio(speech_ogg, max_seconds=60)


def transcribe(recognizer: WhisperRecognizer, audio: np.ndarray, **options: Any) -> Transcription:
    return recognizer.transcribe(audio, TextOptions(model=recognizer.model_name, **options))


def decoder_prompts(recognizer: WhisperRecognizer) -> tuple[list[list[int]], Callable[[], None]]:
    """The decoder's input ids at the first step of every generation (prompt and forced tokens), and a remover."""
    seen: list[list[int]] = []

    def record(_module: Any, _args: Any, kwargs: dict[str, Any]) -> None:
        ids = kwargs.get("input_ids")
        if ids is not None and ids.shape[-1] > 1:  # a first step: later steps feed one token
            seen.append(ids[0].tolist())

    handle = recognizer.model.model.decoder.register_forward_pre_hook(record, with_kwargs=True)
    return seen, handle.remove


def test_a_whisper_checkpoint_loads_by_its_config_whatever_its_name(whisper_model: Path, tmp_path: Path) -> None:
    misnamed = shutil.copytree(whisper_model, tmp_path / "wav2vec2-base-960h")
    loaded = load_model(str(misnamed))
    assert loaded.family == "whisper" and isinstance(loaded.model, WhisperForConditionalGeneration)
    assert loaded.model.generation_config.alignment_heads and len(loaded.processor.tokenizer) == 51865
    assert isinstance(build_recognizer(loaded, RecognizerConfig(device="cpu")), WhisperRecognizer)


def test_a_window_that_fails_the_checks_is_decoded_again_at_higher_temperatures(
    whisper: WhisperRecognizer, whisper_model: Path, speech: np.ndarray
) -> None:
    """Random weights give a mean log-probability near -log(51865), far below the threshold: by
    default each window is decoded again at the next temperatures, which `whisper` turns off."""
    default = build_recognizer(load_model(str(whisper_model)), RecognizerConfig(device="cpu"))
    assert isinstance(default, WhisperRecognizer) and default.fallback == Fallback()
    first_steps = {}
    for name, recognizer in {"default": default, "once": whisper}.items():
        seen, remove = decoder_prompts(recognizer)
        try:
            transcribe(recognizer, speech, language="en")
        finally:
            remove()
        first_steps[name] = len(seen)
    assert first_steps["default"] > first_steps["once"] > 0


def test_detection_finds_the_language_and_the_result_says_it(whisper: WhisperRecognizer, speech: np.ndarray,
                                                              neutral_model: Path) -> None:
    result = transcribe(whisper, speech)
    assert result.language == FAVOURED and result.options.language is None
    assert result.model == whisper.model_name and result.options.postprocess == ()
    assert result.options.chunk_seconds == 30.0 and result.duration == pytest.approx(len(speech) / 16_000)
    assert transcribe(decoding_once(load_model(str(neutral_model))), speech).language in WHISPER_LANGUAGES


def test_restricted_detection_takes_the_best_of_the_allowed_languages(
    whisper: WhisperRecognizer, speech: np.ndarray
) -> None:
    allowed = ("fr", "es", "ru", "uk")
    result = transcribe(whisper, speech, languages=allowed)
    # The reference: transformers' own detection over a generation config that knows only these languages.
    features = whisper.feature_extractor(speech, sampling_rate=16_000, return_tensors="pt")["input_features"]
    config = whisper.model.generation_config
    restricted = type(config).from_dict({**config.to_dict(),
                                         "lang_to_id": {f"<|{c}|>": config.lang_to_id[f"<|{c}|>"] for c in allowed}})
    expected = int(whisper.model.detect_language(features, generation_config=restricted)[0])
    assert result.language == WHISPER_LANGUAGES[expected - FIRST_LANGUAGE] and result.language in allowed
    assert transcribe(whisper, speech, languages=("en", FAVOURED)).language == FAVOURED


def test_a_fixed_language_and_hotwords_reach_the_decoder(whisper: WhisperRecognizer, speech: np.ndarray) -> None:
    seen, remove = decoder_prompts(whisper)
    try:
        result = transcribe(whisper, speech[: 16_000 * 3], language="fr", hotwords=("Kubernetes",))
    finally:
        remove()
    assert result.language == result.options.language == "fr" and result.options.hotwords == ("Kubernetes",)
    prompt = whisper.tokenizer.get_prompt_ids(" Kubernetes").tolist()
    french = FIRST_LANGUAGE + WHISPER_LANGUAGES.index("fr")
    assert seen and seen[0] == [*prompt, SOT, french, TRANSCRIBE], "no detection: the first run is the transcript"
    assert prompt[0] == START_OF_PREV


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"language": "xx"}, "does not know the language 'xx'"),
        ({"languages": ("en", "klingon")}, "does not know the language 'klingon'"),
        ({"decoder": "ctc-beam"}, "unknown decoder 'ctc-beam'; the Whisper decoders are: greedy, beam"),
        ({"postprocess": ("punctuate",)}, "unknown post-processing step 'punctuate'"),
        ({"model": "openai/whisper-small"}, "not 'openai/whisper-small'"),
    ],
)
def test_options_it_cannot_honour_fail_before_any_audio_runs(
    whisper: WhisperRecognizer, speech: np.ndarray, options: dict[str, Any], message: str
) -> None:
    polled: list[bool] = []
    with pytest.raises(ValueError, match=message):
        whisper.transcribe(speech, TextOptions(**{"model": whisper.model_name, **options}),
                           should_stop=lambda: polled.append(True) or False)
    assert polled == []


def test_beam_search_and_sentence_case_on_request(whisper: WhisperRecognizer, speech: np.ndarray) -> None:
    result = transcribe(whisper, speech[: 16_000 * 3], decoder="beam", postprocess=("sentence_case",))
    assert result.options.decoder == "beam" and result.options.postprocess == ("sentence_case",)
    assert result.text == result.text[:1].upper() + result.text[1:]


def test_long_audio_is_transcribed_window_after_window_to_its_end(
    whisper: WhisperRecognizer, speech: np.ndarray
) -> None:
    repeats = int(BLOCK_SECONDS * 1.3 * 16_000 / len(speech)) + 1  # over one block: two generate calls
    audio = np.tile(speech, repeats)
    duration = len(audio) / 16_000
    progress: list[float] = []
    result = whisper.transcribe(audio, TextOptions(model=whisper.model_name),
                                on_progress=lambda p: progress.append(p.done_seconds))
    assert result.duration == pytest.approx(duration)
    assert len(progress) >= duration / 30, "one report per 30 s window at least"
    assert progress == sorted(progress) and progress[-1] > BLOCK_SECONDS
    starts = [word.start for word in result.words]
    assert starts == sorted(starts), "word times run forward, across windows and blocks"
    assert all(0 <= word.start <= word.end <= duration for word in result.words)
    assert max(starts) > BLOCK_SECONDS, "nothing is truncated at 30 s or at a block's end"
    assert " ".join(word.word for word in result.words).split() == result.text.split()


def test_the_encoder_keeps_no_attention_maps_while_word_times_still_come(
    whisper: WhisperRecognizer, speech: np.ndarray
) -> None:
    """generate asks every module for attentions (word times need the decoder's cross-attentions);
    the encoder's own maps, kept per window, would cost layers x heads x 1500 x 1500 floats each."""
    features, _ = whisper._features(speech)
    with torch.inference_mode():
        encoded = whisper.model.get_encoder()(features, output_attentions=True)
    assert encoded.attentions is None
    result = transcribe(whisper, speech, language="en")
    assert result.words and all(word.end >= word.start for word in result.words)


def test_cancel_stops_between_windows(whisper: WhisperRecognizer, speech: np.ndarray) -> None:
    audio = np.tile(speech, int(100 * 16_000 / len(speech)) + 1)
    polls: list[int] = []

    def stop_at_the_third_window() -> bool:
        polls.append(1)
        return len(polls) == 3

    with pytest.raises(JobCancelledError, match="between windows"):
        whisper.transcribe(audio, TextOptions(model=whisper.model_name, language="en"),
                           should_stop=stop_at_the_third_window)
    assert len(polls) == 3


def test_shared_weights_carry_the_generation_config(whisper_model: Path, speech: np.ndarray) -> None:
    loaded = load_model(str(whisper_model))
    shared = SharedModel.from_loaded(loaded)
    rebuilt = shared.rebuild()
    assert rebuilt.family == "whisper"
    for name, tensor in rebuilt.model.state_dict().items():
        assert tensor.data_ptr() == shared.state[name].data_ptr(), name
    assert rebuilt.model.generation_config.lang_to_id == loaded.model.generation_config.lang_to_id
    assert decoding_once(rebuilt).transcribe(speech, TextOptions(model=str(whisper_model))).language == FAVOURED


@pytest.mark.slow
async def test_the_local_worker_pool_runs_a_whisper_model(whisper_model: Path, speech_ogg: Path) -> None:
    settings = Settings(_env_file=None, asr_model=str(whisper_model), asr_threads_per_worker=1)  # type: ignore[call-arg]
    pool = Scheduler(ProcessPoolBackend(EngineConfig.from_settings(settings), workers=1))
    await pool.start()
    try:
        assert pool.language_detectors == {str(whisper_model)}  # as its worker reported when ready
        result = await pool.transcribe(TranscriptionRequest(audio=speech_ogg,
                                                            options=TextOptions(model=str(whisper_model))))
    finally:
        await pool.shutdown()
    assert result.model == str(whisper_model) and result.language == FAVOURED
    assert result.words and all(0 <= w.start <= w.end <= result.duration for w in result.words)


@pytest.mark.slow
def test_the_cli_transcribes_with_a_whisper_model(whisper_model: Path, speech_ogg: Path) -> None:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("ASR_", "TELEGRAM_"))}
    done = subprocess.run([sys.executable, "-m", "bot", "transcribe", "--json", str(speech_ogg)], cwd=REPO,
                          env={**environment, "ASR_MODEL": str(whisper_model)}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["model"] == str(whisper_model) and result["language"] == FAVOURED
    assert result["words"] and result["options"]["chunk_seconds"] == 30.0
    assert "Traceback" not in done.stderr

