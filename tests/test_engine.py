"""The engine against its references, on the same random weights.

- Audio shorter than one chunk: our transcript equals the seed tutorial's method
  (librosa at 16 kHz, processor, one forward pass, argmax, decode).
- Long audio: our chunked transcript equals transformers' own ASR pipeline with the
  same chunk and stride lengths.
Inputs are 16 kHz WAV so that librosa and ffmpeg read identical samples (neither
resamples); the comparison is then about the model path alone.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from transformers import pipeline

from bench.seed_method import seed_transcribe
from bot.asr.ctc.recognizer import CTCRecognizer
from bot.asr.formats import build_cues, to_srt, to_vtt
from bot.asr.loading import load_model
from bot.asr.postprocess import sentence_case, strip_special_tokens
from bot.asr.recognizer import Recognizer
from bot.asr.types import TextOptions, Transcription
from bot.audio.decode import decode_audio
from bot.errors import JobCancelledError, ModelLoadError
from tests.conftest import CORPUS
from tests.media import convert, looped, synth_speech

CORPUS_16K = ["jfk.wav", "ldc93s1.wav", "arctic_aew_a0001.wav", "ls_1272-128104-0000_pv.wav", "ps_cards_001.wav"]


@pytest.fixture(scope="module")
def speech_wav(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("engine")
    raw = synth_speech("she sells sea shells by the sea shore every single morning", directory / "raw.wav")
    return convert(raw, directory / "speech16k.wav", "-ar", "16000", "-ac", "1")


@pytest.fixture(scope="module")
def long_wav(speech_wav: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """About a minute of speech: many chunks at the lengths used below."""
    path = tmp_path_factory.mktemp("long") / "long.wav"
    looped(speech_wav, path, 13, "-c:a", "pcm_s16le")
    return path


Make = Callable[..., Recognizer]


def decode(path: Path) -> np.ndarray:
    return decode_audio(path, max_seconds=3600)


def transcribe(recognizer: Recognizer, audio: np.ndarray, **options: Any) -> Transcription:
    """`audio` through `recognizer` with the default text options, or those given."""
    return recognizer.transcribe(audio, TextOptions(model=recognizer.model_name, **options))


def test_short_audio_equals_the_seed_method(make_recognizer: Make, tiny_model: Path, speech_wav: Path) -> None:
    ours = transcribe(make_recognizer(chunk_seconds=30, stride_seconds=5), decode(speech_wav))
    assert ours.raw_text == seed_transcribe(speech_wav, tiny_model)
    assert ours.raw_text, "the random model must say something for the comparison to mean anything"


@pytest.mark.parametrize("name", CORPUS_16K)
def test_real_speech_equals_the_seed_method(make_recognizer: Make, tiny_model: Path, name: str) -> None:
    path = CORPUS / name
    if not path.exists():
        pytest.skip("../shared/corpus is not available")
    ours = transcribe(make_recognizer(chunk_seconds=60, stride_seconds=5), decode(path))
    assert ours.raw_text == seed_transcribe(path, tiny_model)


@pytest.mark.parametrize(("chunk", "stride"), [(4.0, 1.0), (5.0, 0.8), (10.0, 2.5)])
def test_long_audio_equals_the_transformers_pipeline(
    make_recognizer: Make, long_wav: Path, chunk: float, stride: float
) -> None:
    recognizer = make_recognizer(chunk_seconds=chunk, stride_seconds=stride)
    assert isinstance(recognizer, CTCRecognizer)
    audio = decode(long_wav)
    asr = pipeline(
        "automatic-speech-recognition",
        model=recognizer.model,
        tokenizer=recognizer.tokenizer,
        feature_extractor=recognizer.feature_extractor,
        device="cpu",
    )
    reference = asr(audio.copy(), chunk_length_s=chunk, stride_length_s=stride)["text"]
    ours = transcribe(recognizer, audio)
    assert len(audio) > 4 * chunk * 16_000
    assert ours.raw_text == reference


def test_batched_chunks_equal_unbatched(make_recognizer: Make, long_wav: Path) -> None:
    audio = decode(long_wav)
    a = transcribe(make_recognizer(chunk_seconds=4, stride_seconds=1, batch_size=1), audio)
    b = transcribe(make_recognizer(chunk_seconds=4, stride_seconds=1, batch_size=4), audio)
    assert a.raw_text == b.raw_text and a.words == b.words
    assert b.options.batch_size == 4


def test_result_echoes_options_and_has_word_times(make_recognizer: Make, long_wav: Path) -> None:
    recognizer = make_recognizer(chunk_seconds=4, stride_seconds=1)
    audio = decode(long_wav)
    result = transcribe(recognizer, audio, language="en")
    assert result.duration == pytest.approx(len(audio) / 16_000)
    assert result.options.chunk_seconds == 4 and result.options.stride_seconds == 1
    assert result.options.compute_type == "float32" and result.model == recognizer.model_name
    assert result.options.decoder == "greedy" and result.options.hotwords == ()
    assert result.options.language == result.language == "en"
    assert result.options.postprocess == ("sentence_case",), "the resolved default chain, not None"
    assert result.processing_seconds > 0 and result.real_time_factor > 0
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= result.duration + 0.02 for w in result.words)
    assert result.text == sentence_case(result.raw_text)
    assert " ".join(w.word for w in result.words) == result.text, "the words are post-processed like the text"


def test_no_postprocessing_keeps_the_model_spelling(recognizer: Recognizer, long_wav: Path) -> None:
    result = transcribe(recognizer, decode(long_wav), postprocess=())
    assert result.options.postprocess == () and result.language is None
    assert result.text == strip_special_tokens(result.raw_text) and result.text.isupper()
    assert " ".join(w.word for w in result.words) == result.text
    assert result.text.lower() == transcribe(recognizer, decode(long_wav)).text.lower()


def test_progress_and_cancel_between_chunks(make_recognizer: Make, long_wav: Path) -> None:
    recognizer = make_recognizer(chunk_seconds=4, stride_seconds=1, progress_interval=0)
    audio = decode(long_wav)
    seen = []
    result = recognizer.transcribe(audio, TextOptions(model=recognizer.model_name), on_progress=seen.append)
    assert seen and seen[-1].fraction == pytest.approx(1.0, abs=0.01)
    assert [p.done_seconds for p in seen] == sorted(p.done_seconds for p in seen)
    assert seen[-1].partial_text == result.text, "progress text goes through the same post-processing"
    raw = []
    recognizer.transcribe(audio, TextOptions(model=recognizer.model_name, postprocess=()), on_progress=raw.append)
    assert raw[-1].partial_text == strip_special_tokens(result.raw_text)
    calls = iter(range(100))
    with pytest.raises(JobCancelledError):
        recognizer.transcribe(audio, TextOptions(model=recognizer.model_name), should_stop=lambda: next(calls) >= 2)
    assert next(calls) == 3, "stopped at the third chunk, not at the end"


def test_silence_is_an_empty_transcript_not_an_error(recognizer: Recognizer) -> None:
    result = transcribe(recognizer, np.zeros(16_000 * 3, dtype=np.float32))
    assert result.duration == 3.0
    # A random model may still emit symbols on silence; whatever it says is a well-formed result.
    assert result.text == sentence_case(result.raw_text)
    assert all(0 <= w.start <= w.end <= 3.02 for w in result.words)
    empty = transcribe(recognizer, np.zeros(0, dtype=np.float32))
    assert empty.text == empty.raw_text == "" and empty.words == () and empty.duration == 0


def test_subtitles_from_word_times(recognizer: Recognizer, long_wav: Path) -> None:
    result = transcribe(recognizer, decode(long_wav))
    srt, vtt = to_srt(result.words), to_vtt(result.words)
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    assert vtt.startswith("WEBVTT\n\n00:00:0")
    assert len(srt.split("\n\n")) > 3
    assert " ".join(cue.text for cue in build_cues(result.words)) == result.text


def test_model_loading_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="ASR_MODEL="):
        load_model(str(tmp_path))  # an empty directory
    # A hub id goes through from_pretrained's download path (offline here, see conftest).
    with pytest.raises(ModelLoadError, match="ASR_MODEL='facebook/wav2vec2-base-960h'"):
        load_model("facebook/wav2vec2-base-960h")


def test_loading_uses_from_pretrained_on_a_local_directory(tiny_model: Path) -> None:
    loaded = load_model(str(tiny_model))
    assert type(loaded.model).__name__ == "Wav2Vec2ForCTC" and loaded.family == "ctc"
    assert loaded.processor.tokenizer.get_vocab()["|"] == 4
    assert os.path.samefile(loaded.name, tiny_model)
