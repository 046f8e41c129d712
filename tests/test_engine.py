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
from pathlib import Path

import numpy as np
import pytest
from transformers import pipeline

from bench.seed_method import seed_transcribe
from bot.asr.ctc.recognizer import SpeechRecognizer
from bot.asr.ctc.loading import load_ctc_model
from bot.asr.postprocess import sentence_case
from bot.audio.decode import decode_audio
from bot.errors import ModelLoadError
from bot.asr.formats import to_srt, to_vtt
from tests.conftest import CORPUS
from tests.media import convert, ffmpeg, synth_speech

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
    ffmpeg("-stream_loop", "12", "-i", str(speech_wav), "-c:a", "pcm_s16le", str(path))
    return path


def decode(path: Path) -> np.ndarray:
    return decode_audio(path, max_seconds=3600)


def test_short_audio_equals_the_seed_method(recognizer: SpeechRecognizer, tiny_model: Path, speech_wav: Path) -> None:
    ours = recognizer.transcribe(decode(speech_wav), chunk_seconds=30, stride_seconds=5)
    assert ours.raw_text == seed_transcribe(speech_wav, tiny_model)
    assert ours.raw_text, "the random model must say something for the comparison to mean anything"


@pytest.mark.parametrize("name", CORPUS_16K)
def test_real_speech_equals_the_seed_method(
    recognizer: SpeechRecognizer, tiny_model: Path, name: str
) -> None:
    path = CORPUS / name
    if not path.exists():
        pytest.skip("../shared/corpus is not available")
    ours = recognizer.transcribe(decode(path), chunk_seconds=60, stride_seconds=5)
    assert ours.raw_text == seed_transcribe(path, tiny_model)


@pytest.mark.parametrize(("chunk", "stride"), [(4.0, 1.0), (5.0, 0.8), (10.0, 2.5)])
def test_long_audio_equals_the_transformers_pipeline(
    recognizer: SpeechRecognizer, long_wav: Path, chunk: float, stride: float
) -> None:
    audio = decode(long_wav)
    asr = pipeline(
        "automatic-speech-recognition",
        model=recognizer.model,
        tokenizer=recognizer.tokenizer,
        feature_extractor=recognizer.feature_extractor,
        device="cpu",
    )
    reference = asr(audio.copy(), chunk_length_s=chunk, stride_length_s=stride)["text"]
    ours = recognizer.transcribe(audio, chunk_seconds=chunk, stride_seconds=stride)
    assert len(audio) > 4 * chunk * 16_000
    assert ours.raw_text == reference


def test_batched_chunks_equal_unbatched(tiny_model: Path, long_wav: Path) -> None:
    audio = decode(long_wav)
    single = SpeechRecognizer(load_ctc_model(str(tiny_model)), device="cpu", batch_size=1)
    batched = SpeechRecognizer(load_ctc_model(str(tiny_model)), device="cpu", batch_size=4)
    a = single.transcribe(audio, chunk_seconds=4, stride_seconds=1)
    b = batched.transcribe(audio, chunk_seconds=4, stride_seconds=1)
    assert a.raw_text == b.raw_text and a.words == b.words
    assert b.options.batch_size == 4


def test_result_echoes_options_and_has_word_times(recognizer: SpeechRecognizer, long_wav: Path) -> None:
    audio = decode(long_wav)
    result = recognizer.transcribe(audio, chunk_seconds=4, stride_seconds=1)
    assert result.duration == pytest.approx(len(audio) / 16_000)
    assert result.options.chunk_seconds == 4 and result.options.stride_seconds == 1
    assert result.options.compute_type == "float32" and result.model == recognizer.model_name
    assert result.processing_seconds > 0 and result.real_time_factor > 0
    starts = [w.start for w in result.words]
    assert starts == sorted(starts)
    assert all(0 <= w.start <= w.end <= result.duration + 0.02 for w in result.words)
    assert " ".join(w.word for w in result.words) == sentence_case(result.raw_text).upper().replace("I'", "I'")
    assert result.text == sentence_case(result.raw_text)


def test_progress_and_cancel_between_chunks(recognizer: SpeechRecognizer, long_wav: Path) -> None:
    from bot.errors import JobCancelledError

    audio = decode(long_wav)
    seen = []
    recognizer.transcribe(audio, chunk_seconds=4, stride_seconds=1, on_progress=seen.append, progress_interval=0)
    assert seen and seen[-1].fraction == pytest.approx(1.0, abs=0.01)
    assert [p.done_seconds for p in seen] == sorted(p.done_seconds for p in seen)
    calls = iter(range(100))
    with pytest.raises(JobCancelledError):
        recognizer.transcribe(audio, chunk_seconds=4, stride_seconds=1, should_stop=lambda: next(calls) >= 2)


def test_silence_is_an_empty_transcript_not_an_error(recognizer: SpeechRecognizer) -> None:
    result = recognizer.transcribe(np.zeros(16_000 * 3, dtype=np.float32), chunk_seconds=20, stride_seconds=2.5)
    assert result.duration == 3.0
    # A random model may still emit symbols on silence; the point is that nothing fails.
    assert isinstance(result.text, str)
    empty = recognizer.transcribe(np.zeros(0, dtype=np.float32), chunk_seconds=20, stride_seconds=2.5)
    assert empty.text == "" and empty.words == ()


def test_sentence_case_for_people() -> None:
    assert sentence_case("HELLO I'M HERE AND I THINK IT WORKS") == "Hello I'm here and I think it works"
    assert sentence_case("<unk>THE IDEA<s>") == "The idea"
    assert sentence_case("") == ""


def test_subtitles_from_word_times(recognizer: SpeechRecognizer, long_wav: Path) -> None:
    words = recognizer.transcribe(decode(long_wav), chunk_seconds=4, stride_seconds=1).words
    srt, vtt = to_srt(words), to_vtt(words)
    assert srt.startswith("1\n00:00:0") and " --> " in srt
    assert vtt.startswith("WEBVTT\n\n00:00:0")
    assert len(srt.split("\n\n")) > 3


def test_model_loading_errors_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="ASR_MODEL="):
        load_ctc_model(str(tmp_path))  # an empty directory
    # A hub id goes through from_pretrained's download path (offline here, see conftest).
    with pytest.raises(ModelLoadError, match="ASR_MODEL='facebook/wav2vec2-base-960h'"):
        load_ctc_model("facebook/wav2vec2-base-960h")


def test_loading_uses_from_pretrained_on_a_local_directory(tiny_model: Path) -> None:
    loaded = load_ctc_model(str(tiny_model))
    assert type(loaded.model).__name__ == "Wav2Vec2ForCTC"
    assert loaded.processor.tokenizer.get_vocab()["|"] == 4
    assert os.path.samefile(loaded.name, tiny_model)
