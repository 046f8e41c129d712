"""The recognizer seam: the family from the checkpoint's config, the factory, decoders and options.

Real checkpoints saved with save_pretrained (the tiny CTC model, bare configs of other
families); the only stand-ins are decoders and tokenizers, the seams under test.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2CTCTokenizer, Wav2Vec2Processor, WhisperConfig

from bot.asr.ctc import decoders
from bot.asr.ctc.decoders import GreedyDecoder
from bot.asr.ctc.recognizer import CTCRecognizer, emits_bare_capitals
from bot.asr.loading import SharedModel, checkpoint_family, load_model
from bot.asr.postprocess import strip_special_tokens
from bot.asr.recognizer import Recognizer, RecognizerConfig, build_recognizer, load_recognizer
from bot.asr.types import TextOptions, Transcription
from bot.audio.decode import decode_audio
from bot.errors import ModelLoadError
from tests.model_factory import EXACT_COMPUTE_TYPE, VOCAB_960H

Make = Callable[..., Recognizer]


@pytest.fixture(scope="module")
def speech(speech_ogg: Path) -> np.ndarray:
    return decode_audio(speech_ogg, max_seconds=60)


def transcribe(recognizer: Recognizer, audio: np.ndarray, **options: Any) -> Transcription:
    return recognizer.transcribe(audio, TextOptions(model=recognizer.model_name, **options))


# ----------------------------------------------------------------------------------------
# The family comes from the config, never from the name
# ----------------------------------------------------------------------------------------


def test_a_ctc_checkpoint_loads_whatever_its_directory_is_called(tiny_model: Path, tmp_path: Path) -> None:
    misnamed = shutil.copytree(tiny_model, tmp_path / "openai-whisper-tiny")
    loaded = load_model(str(misnamed))
    assert loaded.family == "ctc" and loaded.attention == "sdpa"
    assert isinstance(build_recognizer(loaded, RecognizerConfig(device="cpu")), CTCRecognizer)


@pytest.mark.parametrize(
    ("config", "kind"),
    [
        (WhisperConfig(architectures=["WhisperForAudioClassification"]), "WhisperForAudioClassification"),
        (Wav2Vec2Config(architectures=["Wav2Vec2ForPreTraining"]), "Wav2Vec2ForPreTraining"),  # no CTC head
    ],
)
def test_another_family_is_refused_before_any_weights_load(config: Any, kind: str, tmp_path: Path) -> None:
    directory = tmp_path / "wav2vec2-base-960h-ctc"  # the name says CTC; the config does not
    config.save_pretrained(directory)
    with pytest.raises(ModelLoadError) as refused:
        load_model(str(directory))
    assert str(refused.value) == (
        f"ASR_MODEL={str(directory)!r} is a {kind} checkpoint; "
        "this bot runs: CTC (a ...ForCTC head, such as Wav2Vec2ForCTC); Whisper (WhisperForConditionalGeneration)"
    )


@pytest.mark.parametrize("config", [WhisperConfig(architectures=["WhisperForConditionalGeneration"]),
                                    WhisperConfig()])  # saved with or without its architectures
def test_a_whisper_config_is_the_whisper_family_whatever_its_name(config: Any, tmp_path: Path) -> None:
    directory = tmp_path / "wav2vec2-base-960h-ctc"
    config.save_pretrained(directory)
    assert checkpoint_family(str(directory)) == "whisper"


def test_the_factory_refuses_a_family_without_a_recognizer(tiny_model: Path) -> None:
    loaded = dataclasses.replace(load_model(str(tiny_model)), family="seq2seq")
    with pytest.raises(ModelLoadError, match="no recognizer runs the 'seq2seq' model family"):
        build_recognizer(loaded, RecognizerConfig(device="cpu"))


def test_shared_weights_rebuild_the_same_recognizer(tiny_model: Path, speech: np.ndarray) -> None:
    loaded = load_model(str(tiny_model), attention="eager")
    shared = SharedModel.from_loaded(loaded)
    rebuilt = shared.rebuild()
    assert (rebuilt.name, rebuilt.family, rebuilt.attention) == (loaded.name, "ctc", "eager")
    config = RecognizerConfig(device="cpu", compute_type=EXACT_COMPUTE_TYPE, chunk_seconds=2, stride_seconds=0.5)
    direct = transcribe(build_recognizer(load_model(str(tiny_model), attention="eager"), config), speech)
    again = transcribe(build_recognizer(rebuilt, config), speech)
    assert direct.raw_text and (again.raw_text, again.words) == (direct.raw_text, direct.words)


# ----------------------------------------------------------------------------------------
# Options: checked before the audio runs, echoed in the result
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"decoder": "beam"}, "unknown decoder 'beam'; the CTC decoders are: greedy"),
        ({"hotwords": ("Kubernetes",)}, "the greedy decoder cannot favour hotwords"),
        ({"postprocess": ("punctuate",)}, "unknown post-processing step 'punctuate'"),
        ({"model": "facebook/wav2vec2-base-960h"}, "not 'facebook/wav2vec2-base-960h'"),
    ],
)
def test_options_it_cannot_honour_fail_before_any_audio_runs(
    recognizer: Recognizer, speech: np.ndarray, options: dict[str, Any], message: str
) -> None:
    chunks_started: list[bool] = []
    request = TextOptions(**{"model": recognizer.model_name, **options})
    with pytest.raises(ValueError, match=message):
        recognizer.transcribe(speech, request, should_stop=lambda: chunks_started.append(True) or False)
    assert chunks_started == []


def test_the_result_echoes_every_text_option(recognizer: Recognizer, speech: np.ndarray) -> None:
    result = transcribe(recognizer, speech, language="en", decoder="greedy", postprocess=("sentence_case",))
    echoed = result.options
    assert (echoed.language, echoed.decoder, echoed.hotwords, echoed.postprocess) == (
        "en", "greedy", (), ("sentence_case",)
    )
    assert result.language == "en" and result.model == recognizer.model_name
    assert transcribe(recognizer, speech).language is None
    assert transcribe(recognizer, speech, postprocess=()).options.postprocess == ()


# ----------------------------------------------------------------------------------------
# Decoders: the recognizer hands logits to the one a request names
# ----------------------------------------------------------------------------------------


class LogSoftmaxArgmax(GreedyDecoder):
    """A decoder that keeps whole log-probability rows, as a beam search would, and then decodes their
    best path: the same text as greedy if the recognizer hands it every chunk's logits, cropped alike."""

    seen: list[tuple[int, ...]] = []

    def reduce(self, logits: torch.Tensor) -> np.ndarray:
        self.seen.append(tuple(logits.shape))
        return logits.float().log_softmax(dim=-1).cpu().numpy()

    def decode(self, frames: Any) -> decoders.DecodedText:
        return super().decode([rows.argmax(axis=-1) for rows in frames])

    def partial_text(self, frames: Any) -> str:
        return super().partial_text([rows.argmax(axis=-1) for rows in frames])


def test_a_decoder_module_gets_the_logits_and_is_chosen_by_name(
    make_recognizer: Make, speech: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(decoders.DECODERS, "log-softmax", LogSoftmaxArgmax)
    recognizer = make_recognizer(chunk_seconds=2, stride_seconds=0.5, batch_size=2, progress_interval=0)
    progress: list[str] = []
    plugged = recognizer.transcribe(speech, TextOptions(model=recognizer.model_name, decoder="log-softmax"),
                                    on_progress=lambda p: progress.append(p.partial_text))
    greedy = transcribe(recognizer, speech)
    assert plugged.options.decoder == "log-softmax" and greedy.options.decoder == "greedy"
    assert greedy.raw_text and (plugged.raw_text, plugged.text, plugged.words) == (
        greedy.raw_text, greedy.text, greedy.words
    )
    assert progress[-1] == greedy.text
    vocabulary = len(VOCAB_960H)
    assert LogSoftmaxArgmax.seen and all(len(shape) == 3 and shape[-1] == vocabulary
                                         for shape in LogSoftmaxArgmax.seen)
    assert max(shape[0] for shape in LogSoftmaxArgmax.seen) == 2, "batched chunks reach the decoder together"


# ----------------------------------------------------------------------------------------
# The default post-processing follows what the model can spell
# ----------------------------------------------------------------------------------------


def lower_case_processor(processor: Any, directory: Path) -> Any:
    """The tiny model's processor with a lower-case vocabulary (same ids): a model that cases itself."""
    vocab = directory / "vocab.json"
    vocab.write_text(json.dumps({token if token.startswith("<") else token.lower(): index
                                 for token, index in VOCAB_960H.items()}))
    tokenizer = Wav2Vec2CTCTokenizer(str(vocab), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|")
    return Wav2Vec2Processor(feature_extractor=processor.feature_extractor, tokenizer=tokenizer)


def test_sentence_case_is_the_default_only_for_a_model_that_spells_capitals(
    recognizer: Recognizer, tiny_model: Path, speech: np.ndarray, tmp_path: Path
) -> None:
    assert isinstance(recognizer, CTCRecognizer)
    assert emits_bare_capitals(recognizer.tokenizer) and recognizer.default_postprocess == ("sentence_case",)
    loaded = load_model(str(tiny_model))
    cased = dataclasses.replace(loaded, processor=lower_case_processor(loaded.processor, tmp_path))
    itself = build_recognizer(cased, RecognizerConfig(device="cpu", compute_type=EXACT_COMPUTE_TYPE, chunk_seconds=4,
                                                      stride_seconds=1))
    assert isinstance(itself, CTCRecognizer) and not emits_bare_capitals(itself.tokenizer)
    result = transcribe(itself, speech)
    assert result.options.postprocess == () and result.raw_text.islower()
    assert result.raw_text == transcribe(recognizer, speech).raw_text.lower()
    assert result.text == strip_special_tokens(result.raw_text), "nothing re-cases what the model wrote"
    assert " ".join(w.word for w in result.words) == result.text


def test_a_model_loaded_in_its_compute_type_equals_one_converted_after_loading(
    tiny_model: Path, speech: np.ndarray,
) -> None:
    """`load_recognizer` loads bfloat16 weights in one pass; they are the same numbers as a float32
    load converted afterwards (both round to nearest), so the transcript is the same."""
    config = RecognizerConfig(device="cpu", compute_type="bfloat16", chunk_seconds=4, stride_seconds=1)
    direct = load_recognizer(str(tiny_model), config)
    converted = build_recognizer(load_model(str(tiny_model)), config)
    assert isinstance(direct, CTCRecognizer) and isinstance(converted, CTCRecognizer)
    assert all(p.dtype == torch.bfloat16 for p in direct.model.wav2vec2.encoder.layer_norm.parameters())
    first, second = transcribe(direct, speech), transcribe(converted, speech)
    assert first.options.compute_type == "bfloat16" and first.raw_text
    assert (first.raw_text, first.words) == (second.raw_text, second.words)
