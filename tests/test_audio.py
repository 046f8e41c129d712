"""bot.audio.decode on well-formed input: every format people send, real speech, the corpus, ffmpeg lookup.

All media is generated at test time (see media.py); the corpus test reads the shared
speech corpus next to the repository and skips when it is absent.
"""

from __future__ import annotations

import csv
import os
import shutil
import signal
import subprocess
import sys
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from bot.audio import decode as audio
from bot.audio.decode import SAMPLE_RATE, check_ffmpeg, decode_audio, tool_argv
from bot.errors import AudioTooLongError, FFmpegMissingError
from tests.conftest import exits_within
from tests.media import convert, ffmpeg, make_silence, make_tone, make_video, media_duration, probe, synth_speech

CORPUS = Path(__file__).resolve().parents[1].parent / "shared" / "corpus"

# Lossy codecs do not give back exactly the samples that went in: MP3 and AAC frames
# are 1152/1024 samples, encoders add priming ("encoder delay") and pad the last frame,
# and not every container records how much to trim (ADTS and AC-3 do not at all).
# At 44.1-48 kHz that is at most ~2 frames, i.e. < 50 ms; 60 ms leaves resampler slack.
CODEC_PADDING_TOLERANCE_S = 0.060
TONE_SECONDS = 3.0
TONE_HZ = 1_000.0
TONE_RMS = 0.5 / np.sqrt(2)  # make_tone's default amplitude is 0.5


def assert_mono_16k(samples: np.ndarray) -> None:
    """The decode_audio contract: 1-D, C-contiguous, writable float32 (so torch.from_numpy takes it)."""
    assert isinstance(samples, np.ndarray)
    assert samples.dtype == np.float32
    assert samples.ndim == 1
    assert samples.flags.c_contiguous
    assert samples.flags.writeable
    assert samples.size > 0
    assert np.isfinite(samples).all()


def assert_duration(samples: np.ndarray, seconds: float, tolerance: float = CODEC_PADDING_TOLERANCE_S) -> None:
    assert abs(samples.size / SAMPLE_RATE - seconds) <= tolerance, samples.size / SAMPLE_RATE


def dominant_hz(samples: np.ndarray) -> float:
    """Frequency of the strongest spectral peak, assuming the samples really are at 16 kHz."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / SAMPLE_RATE)[spectrum.argmax()])


def assert_is_tone(samples: np.ndarray) -> None:
    """A 1 kHz tone at the right pitch proves the sample rate is 16 kHz; its level proves a sane downmix."""
    assert abs(dominant_hz(samples) - TONE_HZ) < 5
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64))))
    assert rms == pytest.approx(TONE_RMS, rel=0.2)


# (file name, make_tone keyword arguments, ffmpeg output options)
AUDIO_FORMATS = [
    pytest.param("voice.ogg", {"rate": 48_000}, ("-c:a", "libopus", "-b:a", "32k"), id="ogg-opus-voice-note"),
    pytest.param("music.mp3", {"rate": 44_100, "channels": 2}, ("-c:a", "libmp3lame", "-b:a", "128k"), id="mp3"),
    pytest.param("memo.m4a", {"rate": 44_100}, ("-c:a", "aac", "-b:a", "96k"), id="m4a-aac"),
    pytest.param("raw.aac", {"rate": 44_100}, ("-c:a", "aac", "-f", "adts"), id="adts-aac"),
    pytest.param("pcm.wav", {"rate": 44_100, "channels": 2}, (), id="wav-44k-stereo"),
    pytest.param("pcm8k.wav", {"rate": 8_000}, ("-c:a", "pcm_u8"), id="wav-8k-u8"),
    pytest.param("lossless.flac", {"rate": 22_050}, (), id="flac-22k"),
    pytest.param("clip.webm", {"rate": 48_000, "channels": 2}, ("-c:a", "libopus"), id="webm-opus"),
    pytest.param("surround.wav", {"rate": 96_000, "channels": 8}, (), id="wav-96k-8ch"),
]


@pytest.mark.parametrize(("name", "tone", "codec"), AUDIO_FORMATS)
def test_audio_formats_decode_to_16k_mono(tmp_path: Path, name: str, tone: dict, codec: tuple[str, ...]) -> None:
    src = make_tone(tmp_path / name, TONE_SECONDS, *codec, **tone)
    samples = decode_audio(src, max_seconds=60)
    assert_mono_16k(samples)
    assert_duration(samples, TONE_SECONDS)
    assert_is_tone(samples)


def test_eight_channel_downmix_is_normalised_not_clipped(tmp_path: Path) -> None:
    """Eight copies of a 0.5 tone must mix to ~0.5, not to a clipped ~2.2 (ffmpeg's plain float downmix)."""
    samples = decode_audio(make_tone(tmp_path / "8ch.wav", 1.0, rate=96_000, channels=8), max_seconds=60)
    assert 0.45 < float(np.abs(samples).max()) < 0.55


@pytest.mark.parametrize("name", ["video-note.mp4", "camera.mov", "screen.mkv"])
def test_audio_track_of_a_video(tmp_path: Path, name: str) -> None:
    samples = decode_audio(make_video(tmp_path / name, 2.0), max_seconds=60)
    assert_mono_16k(samples)
    assert_duration(samples, 2.0)
    assert_is_tone(samples)


def test_first_audio_stream_is_used_and_cover_art_ignored(tmp_path: Path) -> None:
    """An MP3 with an embedded cover picture (a video stream) decodes its audio only."""
    cover = tmp_path / "cover.png"
    make_video(tmp_path / "frame.mp4", 0.1, audio=False)
    convert(tmp_path / "frame.mp4", cover, "-frames:v", "1")
    tone = make_tone(tmp_path / "tone.wav", 2.0, rate=44_100)
    mp3 = tmp_path / "with-cover.mp3"
    ffmpeg("-i", str(tone), "-i", str(cover), "-map", "0:a", "-map", "1:v", "-c:a", "libmp3lame",
           "-c:v", "png", "-disposition:v", "attached_pic", str(mp3))  # fmt: skip
    samples = decode_audio(mp3, max_seconds=60)
    assert_duration(samples, 2.0)
    assert_is_tone(samples)


@pytest.mark.parametrize(
    ("name", "codec"),
    [("silence.wav", ()), ("silence.ogg", ("-c:a", "libopus")), ("silence.flac", ())],
)
def test_silence_is_valid_and_decodes_to_zeros(tmp_path: Path, name: str, codec: tuple[str, ...]) -> None:
    samples = decode_audio(make_silence(tmp_path / name, 2.0, *codec, rate=48_000), max_seconds=60)
    assert_mono_16k(samples)
    assert_duration(samples, 2.0)
    assert float(np.abs(samples).max()) < 1e-4


def test_speech_voice_note_matches_its_source(tmp_path: Path) -> None:
    """espeak-ng speech sent the way Telegram sends voice notes (48 kHz mono Opus in OGG)."""
    wav = synth_speech("Please transcribe this short voice message about the weather tomorrow.", tmp_path / "s.wav")
    ogg = convert(wav, tmp_path / "s.ogg", "-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-ac", "1")
    reference = decode_audio(wav, max_seconds=60)
    voice_note = decode_audio(ogg, max_seconds=60)
    assert_mono_16k(voice_note)
    assert_duration(reference, media_duration(wav), tolerance=1 / SAMPLE_RATE * 2)
    assert_duration(voice_note, reference.size / SAMPLE_RATE)
    # Opus pre-skip is honoured, so the two line up sample for sample and only coding noise differs.
    n = min(reference.size, voice_note.size)
    assert np.corrcoef(reference[:n], voice_note[:n])[0, 1] > 0.9


def test_lossless_formats_decode_identically(tmp_path: Path) -> None:
    """Same speech as WAV and FLAC: same bytes out, so no format-dependent processing sneaks in."""
    wav = synth_speech("one two three four five", tmp_path / "s.wav")
    flac = convert(wav, tmp_path / "s.flac")
    np.testing.assert_array_equal(decode_audio(wav, max_seconds=60), decode_audio(flac, max_seconds=60))


def test_probe_reports_container_metadata(tmp_path: Path) -> None:
    ogg = make_tone(tmp_path / "a.ogg", 2.5, "-c:a", "libopus", rate=48_000)
    info = probe(ogg)
    assert info.format_name == "ogg"
    assert info.duration == pytest.approx(2.5, abs=CODEC_PADDING_TOLERANCE_S)
    assert "mp4" in probe(make_video(tmp_path / "v.mp4", 1.0)).format_name.split(",")


def test_audio_exactly_at_the_limit_is_accepted(tmp_path: Path) -> None:
    wav = make_tone(tmp_path / "two.wav", 2.0)
    assert decode_audio(wav, max_seconds=2.0).size == 2 * SAMPLE_RATE
    with pytest.raises(AudioTooLongError) as caught:
        decode_audio(wav, max_seconds=1.5)
    assert (caught.value.duration, caught.value.limit) == (pytest.approx(2.0), 1.5)


def _corpus_files() -> dict[str, float]:
    """Manifest file name -> duration, for every file a container/codec can be detected in."""
    manifest = CORPUS / "manifest.tsv"
    if not manifest.is_file():
        return {}
    with manifest.open(newline="", encoding="utf-8") as handle:
        rows = csv.DictReader(handle, delimiter="\t")
        # ps_goforward.raw is headerless PCM: nothing can detect its format, by design.
        return {row["file"]: float(row["duration_s"]) for row in rows if not row["file"].endswith(".raw")}


CORPUS_FILES = _corpus_files()


@pytest.fixture(scope="module")
def corpus_decodes() -> dict[str, Future[np.ndarray]]:
    """Decode the whole corpus once, concurrently.

    Each decode is two short ffprobe/ffmpeg runs, mostly process start-up; running them
    side by side keeps ~100 files to a few seconds, and also exercises decode_audio
    from several threads at once, as the bot's executor does.
    """
    with ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        return {name: pool.submit(decode_audio, CORPUS / name, max_seconds=600) for name in CORPUS_FILES}


@pytest.mark.skipif(not CORPUS_FILES, reason=f"speech corpus not found at {CORPUS}")
@pytest.mark.parametrize("file", sorted(CORPUS_FILES) or ["(no corpus)"])
def test_corpus_file_decodes_with_manifest_duration(corpus_decodes: dict[str, Future[np.ndarray]], file: str) -> None:
    samples = corpus_decodes[file].result()
    assert_mono_16k(samples)
    assert float(np.abs(samples).max()) > 0
    # The manifest rounds to 10 ms; lossless files must match that, MP3 gets codec slack.
    tolerance = CODEC_PADDING_TOLERANCE_S if file.endswith(".mp3") else 0.011
    assert_duration(samples, CORPUS_FILES[file], tolerance)


def test_check_ffmpeg_passes_when_installed() -> None:
    check_ffmpeg()


def test_missing_ffmpeg_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = make_tone(tmp_path / "a.wav", 0.5)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(FFmpegMissingError, match="install ffmpeg"):
        check_ffmpeg()
    with pytest.raises(FFmpegMissingError):
        probe(wav)
    with pytest.raises(FFmpegMissingError):
        decode_audio(wav, max_seconds=60)


def test_ffprobe_without_ffmpeg_is_caught_at_start_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wav = make_tone(tmp_path / "a.wav", 0.5)
    only_probe = tmp_path / "bin"
    only_probe.mkdir()
    os.symlink(shutil.which("ffprobe"), only_probe / "ffprobe")  # type: ignore[arg-type]
    monkeypatch.setenv("PATH", str(only_probe))
    with pytest.raises(FFmpegMissingError, match="ffmpeg not found"):
        check_ffmpeg()
    with pytest.raises(FFmpegMissingError):
        decode_audio(wav, max_seconds=60)


def test_binary_vanishing_between_lookup_and_exec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Uninstalled mid-run: FFmpegMissingError, never a bare FileNotFoundError."""
    wav = make_tone(tmp_path / "a.wav", 0.5)
    monkeypatch.setattr(audio.shutil, "which", lambda name: str(tmp_path / "gone" / name))
    with pytest.raises(FFmpegMissingError):
        decode_audio(wav, max_seconds=60)


@pytest.mark.parametrize("name", ["voice note #1 (50%)?.ogg", "-i.ogg", "http:evil.ogg", "ünïcødé 🎤.ogg"])
def test_odd_file_names_are_read_as_plain_files(tmp_path: Path, name: str) -> None:
    """Names are passed as `file:` URLs: never parsed as options, protocols or URL escapes."""
    src = make_tone(tmp_path / "plain.ogg", 1.0, "-c:a", "libopus", rate=48_000)
    odd = src.rename(tmp_path / name)
    assert_duration(decode_audio(odd, max_seconds=60), 1.0)


# --- long files decoded in pieces -----------------------------------------------------


def long_noise(path: Path, *codec: str) -> Path:
    """95 s of pink noise: long enough for two or three pieces."""
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=d=95:c=pink:a=0.3:seed=7", *codec, str(path))
    return path


def long_voice_note(path: Path) -> Path:
    return long_noise(path, "-c:a", "libopus", "-ar", "48000")


def _ffmpeg_argvs(spawned: list[subprocess.Popen[bytes]]) -> list[list[str]]:
    """The argv of every ffmpeg (not ffprobe) among `spawned`."""
    return [tool_argv(proc) for proc in spawned if Path(tool_argv(proc)[0]).name == "ffmpeg"]


# Three pieces seeking to 0, 31 (32 - 1) and 62 (63 - 1) s; for files other than Ogg Opus
# they come after the ffmpeg that was started beside ffprobe (and killed when it answered).
@pytest.mark.parametrize(
    ("name", "codec", "seeks"),
    [("long.ogg", ("-c:a", "libopus", "-b:a", "32k", "-ar", "48000"), ["0", "31", "62"]),
     ("long.flac", ("-ar", "44100"), ["0", "0", "31", "62"]),
     ("long.wav", ("-ar", "22050", "-ac", "2"), ["0", "0", "31", "62"])],
)
def test_long_file_decoded_in_pieces_equals_one_pass(
    tmp_path: Path, audio_spawns: list[subprocess.Popen[bytes]], name: str, codec: tuple[str, ...],
    seeks: list[str],
) -> None:
    """Three ffmpeg processes at once give the samples one process gives, to float rounding."""
    source = long_noise(tmp_path / name, *codec)
    one_pass = decode_audio(source, max_seconds=600, processes=1)
    audio_spawns.clear()
    pieces = decode_audio(source, max_seconds=600, processes=3)
    runs = _ffmpeg_argvs(audio_spawns)
    assert [run[run.index("-ss") + 1] if "-ss" in run else "0" for run in runs] == seeks
    assert pieces.shape == one_pass.shape == (95 * SAMPLE_RATE,)
    np.testing.assert_allclose(pieces, one_pass, rtol=0, atol=1e-4)


@pytest.mark.parametrize("with_spare", [False, True], ids=["own-ffmpegs", "spare-ready"])
def test_damaged_middle_falls_back_to_one_pass(
    tmp_path: Path, audio_spawns: list[subprocess.Popen[bytes]], with_spare: bool
) -> None:
    """Lost pages shorten a piece (its cut is by timestamp), so the file is decoded in one pass after all.

    Pieces joined regardless would repeat audio: one pass closes the gap up and runs on. A
    spare ffmpeg is not given the first piece of a broken page chain, and stays for the next note.
    """
    data = bytearray(long_voice_note(tmp_path / "whole.ogg").read_bytes())
    data[len(data) // 4: len(data) // 4 + 20_000] = bytes(20_000)
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(data)
    one_pass = decode_audio(damaged, max_seconds=600, processes=1)
    assert one_pass.size < 94 * SAMPLE_RATE  # the damage really did lose audio
    audio_spawns.clear()
    with audio.AudioDecoder(max_seconds=600, processes=2) as decoder:
        if with_spare:
            decoder.prepare()
        np.testing.assert_array_equal(decoder.decode(damaged), one_pass)
        if with_spare:
            spare = audio_spawns.pop(0)
            assert _alive(spare)
    assert len(_ffmpeg_argvs(audio_spawns)) == 3  # two pieces, then one pass


def test_formats_without_exact_seeking_decode_in_one_piece(
    tmp_path: Path, audio_spawns: list[subprocess.Popen[bytes]]
) -> None:
    source = make_tone(tmp_path / "long.mp3", 95.0, "-ar", "44100")
    audio_spawns.clear()
    assert_duration(decode_audio(source, max_seconds=600, processes=4), 95.0)
    assert len(_ffmpeg_argvs(audio_spawns)) == 1



# --- AudioDecoder: a spare ffmpeg waiting for the next voice note ---------------------


def _alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None


def test_spare_ffmpeg_decodes_a_voice_note_to_the_same_samples(
    tmp_path: Path, audio_spawns: list[subprocess.Popen[bytes]]
) -> None:
    """The spare takes the note through its stdin, gives exactly decode_audio's samples, and is used up."""
    wav = synth_speech("A voice note for the spare decoder, please.", tmp_path / "s.wav")
    note = convert(wav, tmp_path / "note.ogg", "-c:a", "libopus", "-b:a", "32k", "-ar", "48000", "-ac", "1")
    expected = decode_audio(note, max_seconds=60)
    audio_spawns.clear()
    with audio.AudioDecoder(max_seconds=60) as decoder:
        decoder.prepare()
        decoder.prepare()  # already waiting: no second one
        [spare] = audio_spawns
        assert tool_argv(spare)[tool_argv(spare).index("-i") + 1] == "pipe:0" and "file" not in tool_argv(spare)
        samples = decoder.decode(note)
        assert len(audio_spawns) == 1  # the note went to the spare, no other ffmpeg started
        assert spare.returncode == 0
        np.testing.assert_array_equal(samples, expected)
        assert_mono_16k(samples)
        samples = decoder.decode(note)  # no spare prepared: an ffmpeg of its own reads the file
        np.testing.assert_array_equal(samples, expected)
        assert len(audio_spawns) == 2 and tool_argv(audio_spawns[1])[-1] == "pipe:1"
        assert any(arg.startswith("file:") for arg in tool_argv(audio_spawns[1]))


def test_spare_is_kept_for_the_next_voice_note_when_a_file_is_not_one(
    tmp_path: Path, audio_spawns: list[subprocess.Popen[bytes]]
) -> None:
    tone = make_tone(tmp_path / "tone.m4a", 2.0, "-c:a", "aac", rate=44_100)
    note = make_tone(tmp_path / "tone.ogg", 2.0, "-c:a", "libopus", rate=48_000)
    audio_spawns.clear()
    with audio.AudioDecoder(max_seconds=60) as decoder:
        decoder.prepare()
        [spare] = audio_spawns
        assert_is_tone(decoder.decode(tone))  # ffprobe and an ffmpeg of its own
        assert _alive(spare)
        assert [Path(tool_argv(p)[0]).name for p in audio_spawns] == ["ffmpeg", "ffmpeg", "ffprobe"]
        assert_is_tone(decoder.decode(note))
        assert spare.returncode == 0 and len(audio_spawns) == 3


def test_spare_exits_with_its_owner_even_on_sigkill(tmp_path: Path) -> None:
    """A worker killed outright closes the spare's stdin; the spare sees EOF and exits, never orphaned for long."""
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import os, signal, sys; from bot.audio.decode import AudioDecoder\n"
         "d = AudioDecoder(max_seconds=60); d.prepare(); print(d._spare.pid, flush=True)\n"
         "os.kill(os.getpid(), signal.SIGKILL)"],
        stdout=subprocess.PIPE, cwd=Path(__file__).resolve().parents[1], text=True,
    )
    spare_pid = int(owner.stdout.readline())  # type: ignore[union-attr]
    owner.wait(10)
    owner.stdout.close()  # type: ignore[union-attr]
    assert owner.returncode == -signal.SIGKILL
    assert exits_within(spare_pid, 5)


def test_spare_takes_a_longer_first_piece_of_a_long_voice_note(
    tmp_path: Path, audio_spawns: list[subprocess.Popen[bytes]]
) -> None:
    """95 s on two CPUs: the spare (started already) decodes 0-68 s, a new ffmpeg 67-95 s; same samples."""
    source = long_voice_note(tmp_path / "long.ogg")
    one_pass = decode_audio(source, max_seconds=600, processes=1)
    audio_spawns.clear()
    with audio.AudioDecoder(max_seconds=600, processes=2) as decoder:
        decoder.prepare()
        pieces = decoder.decode(source)
    spare, second = _ffmpeg_argvs(audio_spawns)
    assert "pipe:0" in spare and second[second.index("-ss") + 1] == str(68 - 1)
    assert pieces.shape == one_pass.shape == (95 * SAMPLE_RATE,)
    np.testing.assert_allclose(pieces, one_pass, rtol=0, atol=1e-4)


def test_frame_dropped_in_the_spares_piece_falls_back_to_one_pass(
    tmp_path: Path, audio_spawns: list[subprocess.Popen[bytes]]
) -> None:
    """A packet the decoder rejects inside intact pages: the spare's piece comes back short of
    what its pages promise, so the pieces are not joined (they would repeat 20 ms)."""
    data = bytearray(long_voice_note(tmp_path / "whole.ogg").read_bytes())
    page = data.index(b"OggS", len(data) // 4)  # a page ~24 s in: inside the spare's piece
    body = page + 27 + data[page + 26]
    data[body : body + 2] = b"\xff\x00"  # first packet: TOC code 3 with zero frames, invalid
    broken = tmp_path / "broken.ogg"
    broken.write_bytes(data)
    one_pass = decode_audio(broken, max_seconds=600, processes=1)
    assert one_pass.size < 95 * SAMPLE_RATE  # the decoder really dropped that packet's audio
    audio_spawns.clear()
    with audio.AudioDecoder(max_seconds=600, processes=2) as decoder:
        decoder.prepare()
        np.testing.assert_array_equal(decoder.decode(broken), one_pass)
    [spare, _, one_more] = _ffmpeg_argvs(audio_spawns)
    assert "pipe:0" in spare and "-ss" not in one_more  # the spare's piece, the other, then one pass


def test_a_short_note_under_a_long_cap_costs_only_its_own_length(tmp_path: Path) -> None:
    """Output is read into an array as long as the cap; pages never written stay untouched."""
    import psutil

    note = make_tone(tmp_path / "note.ogg", 2.0, "-c:a", "libopus", rate=48_000)
    process = psutil.Process()
    before = process.memory_info().rss
    samples = decode_audio(note, max_seconds=10 * 3600)  # a 2.3 GB cap
    assert_duration(samples, 2.0)
    assert process.memory_info().rss - before < 64 * 2**20
