"""bot.audio.decode against hostile and broken input: the security issue's threat model.

Corrupt files, playlists that point elsewhere, decompression bombs, lying headers,
slow inputs, tiny resource limits and fuzzed bytes. Whatever comes in, decode_audio
either returns a sane array or raises AudioDecodeError (or a subclass).
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.audio import decode as audio
from bot.audio.decode import SAMPLE_RATE, decode_audio, tool_argv
from bot.errors import AudioDecodeError, AudioTooLongError
from bot.telegram.replies import failure
from tests.conftest import exits_within
from tests.media import ffmpeg, looped, make_silence, make_tone, make_video, probe

THREE_HOURS = 3 * 3600.0


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile")


@pytest.fixture(scope="module")
def voice_note(media_dir: Path) -> Path:
    """A small, valid 3 s Opus voice note (the thing most hostile inputs pretend to be)."""
    return make_tone(media_dir / "voice.ogg", 3.0, "-c:a", "libopus", "-b:a", "24k", rate=48_000)


@pytest.fixture(scope="module")
def three_hour_ogg(media_dir: Path) -> Path:
    """3 h of Opus silence (~4 MB), made by looping a 60 s encode with stream copy (< 1 s, not 50 s)."""
    chunk = make_silence(media_dir / "minute.ogg", 60, "-c:a", "libopus", "-b:a", "6k", rate=8_000)
    return looped(chunk, media_dir / "three-hours.ogg", int(THREE_HOURS // 60))


def flac_claiming(src: Path, dst: Path, total_samples: int) -> Path:
    """Copy a FLAC file, rewriting STREAMINFO's 36-bit total-samples field (0 means "unknown")."""
    data = bytearray(src.read_bytes())
    assert data[:4] == b"fLaC" and data[4] & 0x7F == 0  # STREAMINFO is always the first block
    # STREAMINFO starts at byte 8; bytes 10..17 of it pack rate(20) channels(3) bits(5) total(36).
    (packed,) = struct.unpack_from(">Q", data, 18)
    packed = (packed & ~((1 << 36) - 1)) | total_samples
    struct.pack_into(">Q", data, 18, packed)
    dst.write_bytes(data)
    return dst


@pytest.fixture(scope="module")
def flac_bomb(media_dir: Path) -> Path:
    """Two hours of 8 kHz digital silence in ~20 KB of FLAC (460 MB once decoded to 16 kHz float)."""
    return make_silence(media_dir / "bomb.flac", 7200, "-frame_size", "65535", rate=8_000)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A local TCP server nothing should ever connect to; check with `assert_no_connection`."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server


def assert_no_connection(server: socket.socket) -> None:
    """A completed connect() waits in the backlog even after the client went away."""
    server.setblocking(False)
    with pytest.raises(BlockingIOError):
        server.accept()


def assert_refused(path: Path) -> AudioDecodeError:
    """AudioDecodeError proper (not "too long"), with a user message free of ffmpeg internals."""
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(path, max_seconds=600)
    assert not isinstance(caught.value, AudioTooLongError)
    for leak in ("ffmpeg", "ffprobe", "whitelist", str(path.parent)):
        assert leak not in failure(caught.value)
    return caught.value


# --- broken files ---------------------------------------------------------------------


def test_zero_byte_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.ogg"
    empty.touch()
    assert_refused(empty)


def test_random_bytes_named_ogg(tmp_path: Path) -> None:
    noise = tmp_path / "noise.ogg"
    noise.write_bytes(np.random.default_rng(1234).bytes(50_000))
    assert_refused(noise)


def test_text_named_mp3(tmp_path: Path) -> None:
    text = tmp_path / "lyrics.mp3"
    text.write_text("Never gonna give you up\n" * 200)
    assert_refused(text)


def test_ogg_cut_inside_its_headers(tmp_path: Path, voice_note: Path) -> None:
    cut = tmp_path / "headers-only.ogg"
    cut.write_bytes(voice_note.read_bytes()[:200])
    assert_refused(cut)


def test_truncated_ogg_returns_the_part_that_decodes(tmp_path: Path, voice_note: Path) -> None:
    """Chosen behaviour: an upload cut short still gets the audio it does contain transcribed."""
    full = decode_audio(voice_note, max_seconds=60)
    cut = tmp_path / "truncated.ogg"
    data = voice_note.read_bytes()
    cut.write_bytes(data[: len(data) * 2 // 3])
    part = decode_audio(cut, max_seconds=60)
    assert 0.5 * SAMPLE_RATE < part.size < full.size
    # It is the beginning of the same recording, not garbage (the last Opus frame may differ).
    np.testing.assert_allclose(part[: part.size - 960], full[: part.size - 960], atol=1e-4)


def test_video_without_audio_track(tmp_path: Path) -> None:
    silent_film = make_video(tmp_path / "no-sound.mp4", 1.0, audio=False)
    error = assert_refused(silent_film)
    assert "no audio track" in failure(error)
    with pytest.raises(AudioDecodeError):
        probe(silent_film)


def test_non_finite_and_out_of_range_float_samples_are_scrubbed(tmp_path: Path) -> None:
    """A float WAV can smuggle NaN/inf/1e30 straight through ffmpeg; they must not reach the model."""
    samples = np.full(SAMPLE_RATE, 0.25, dtype="<f4")
    samples[[10, 20, 30, 40]] = [np.nan, np.inf, -1e30, 5.0]
    raw = tmp_path / "evil.f32"
    raw.write_bytes(samples.tobytes())
    wav = tmp_path / "evil.wav"
    ffmpeg("-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", str(raw), "-c:a", "pcm_f32le", str(wav))
    decoded = decode_audio(wav, max_seconds=60)
    assert np.isfinite(decoded).all()
    assert float(np.abs(decoded).max()) <= 1.0
    assert decoded[10] == 0.0 and decoded[20] == 1.0 and decoded[30] == -1.0 and decoded[100] == 0.25


# --- indirection: playlists and concat scripts disguised as voice notes ----------------


def _hls(target: str) -> str:
    return f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:3.0,\n{target}\n#EXT-X-ENDLIST\n"


def _ffconcat(target: str) -> str:
    return f"ffconcat version 1.0\nfile '{target}'\n"


@pytest.mark.parametrize(
    "playlist",
    [
        pytest.param(lambda port: _hls(f"http://127.0.0.1:{port}/x.ts"), id="hls-to-local-http"),
        pytest.param(lambda port: _hls("/etc/passwd"), id="hls-to-etc-passwd"),
        pytest.param(lambda port: _hls("file:///etc/passwd"), id="hls-to-file-url"),
        pytest.param(lambda port: _ffconcat("/etc/passwd"), id="ffconcat-to-etc-passwd"),
        pytest.param(lambda port: _ffconcat(f"http://127.0.0.1:{port}/x.wav"), id="ffconcat-to-http"),
    ],
)
def test_playlists_are_refused_without_opening_anything(
    tmp_path: Path, listener: socket.socket, playlist: Callable[[int], str]
) -> None:
    disguised = tmp_path / "voice.ogg"
    disguised.write_text(playlist(listener.getsockname()[1]))
    assert_refused(disguised)
    assert_no_connection(listener)


def _segment_with_tone(directory: Path) -> Path:
    """A local MPEG-TS segment holding a 1 kHz tone: the 'secret' a playlist tries to exfiltrate."""
    return make_tone(directory / "secret.ts", 3.0, "-c:a", "aac", rate=44_100)


@pytest.mark.parametrize("make_playlist", [_hls, _ffconcat], ids=["hls", "ffconcat"])
def test_playlist_pointing_at_a_local_file_does_not_read_it(tmp_path: Path, make_playlist: Callable[[str], str]) -> None:
    """Same attack against a local file we control: plain ffmpeg would decode it, decode_audio must not."""
    secret = _segment_with_tone(tmp_path)
    disguised = tmp_path / "voice.ogg"
    disguised.write_text(make_playlist(secret.name))
    # Control: the payload is live: ffmpeg without the hardening follows it to the secret audio.
    leaked = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-protocol_whitelist", "file", "-i", str(disguised),
         "-ac", "1", "-ar", str(SAMPLE_RATE), "-f", "f32le", "-"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    assert len(leaked.stdout) > SAMPLE_RATE * 4  # more than a second of the secret tone
    assert_refused(disguised)


# --- too long: honest headers, lying headers, bombs -----------------------------------


def test_three_hour_voice_note_is_refused_before_decoding(
    three_hour_ogg: Path, audio_spawns: list[subprocess.Popen[bytes]]
) -> None:
    """Its Ogg pages tell its length: refused without starting ffmpeg or ffprobe at all."""
    started = time.monotonic()
    with pytest.raises(AudioTooLongError) as caught:
        decode_audio(three_hour_ogg, max_seconds=1800)
    assert time.monotonic() - started < 1  # a full decode takes ~5 s of CPU
    assert audio_spawns == []
    assert caught.value.duration == pytest.approx(THREE_HOURS, abs=1)
    assert caught.value.limit == 1800
    assert "3:00:00" in failure(caught.value)


def test_voice_note_whose_pages_lie_is_cut_off_by_the_spares_output_cap(
    media_dir: Path, three_hour_ogg: Path
) -> None:
    """Its last page claims 2 s, so it goes to the spare ffmpeg whole: the output cap still stops it."""
    data = bytearray(three_hour_ogg.read_bytes())
    last_page = data.rindex(b"OggS")
    struct.pack_into("<q", data, last_page + 6, 2 * 48_000 + 312)  # granule position (CRC left stale)
    liar = media_dir / "liar.ogg"
    liar.write_bytes(data)
    assert audio.opus_duration(liar) == pytest.approx(2.0, abs=0.1)
    started = time.monotonic()
    with audio.AudioDecoder(max_seconds=10) as decoder, pytest.raises(AudioTooLongError) as caught:
        decoder.prepare()
        decoder.decode(liar)
    assert time.monotonic() - started < 5
    assert caught.value.limit == 10 and caught.value.duration > 10


def test_long_non_opus_file_is_refused_by_the_probe(
    media_dir: Path, audio_spawns: list[subprocess.Popen[bytes]]
) -> None:
    """Other containers are measured by ffprobe; the ffmpeg started beside it is killed at once."""
    hour = make_silence(media_dir / "hour.flac", 3600, rate=8_000)
    audio_spawns.clear()
    with pytest.raises(AudioTooLongError) as caught:
        decode_audio(hour, max_seconds=1800)
    assert caught.value.duration == pytest.approx(3600)
    assert sorted(Path(tool_argv(p)[0]).name for p in audio_spawns) == ["ffmpeg", "ffprobe"]
    [ffmpeg] = [p for p in audio_spawns if Path(tool_argv(p)[0]).name == "ffmpeg"]
    assert ffmpeg.returncode == -signal.SIGKILL


def test_honest_flac_bomb_is_refused_by_the_probe(flac_bomb: Path) -> None:
    assert probe(flac_bomb).duration == pytest.approx(7200)
    with pytest.raises(AudioTooLongError):
        decode_audio(flac_bomb, max_seconds=600)


@pytest.mark.parametrize(
    ("claimed_samples", "probed_seconds"),
    [pytest.param(0, 0.0, id="length-unknown"), pytest.param(80_000, 10.0, id="header-says-10s"),
     # long enough to be decoded in two pieces: the last one carries the cap
     pytest.param(480_000, 60.0, id="header-says-60s")],
)
def test_lying_flac_bomb_is_cut_off_by_the_output_cap(
    tmp_path: Path, flac_bomb: Path, claimed_samples: int, probed_seconds: float
) -> None:
    """The probe is fooled, so the decode cap is what stops 2 h (460 MB of float32) at the limit."""
    liar = flac_claiming(flac_bomb, tmp_path / "liar.flac", claimed_samples)
    assert probe(liar).duration == pytest.approx(probed_seconds)
    max_seconds = 90.0
    cap_bytes = max_seconds * SAMPLE_RATE * 4
    tracemalloc.start()
    try:
        started = time.monotonic()
        with pytest.raises(AudioTooLongError) as caught:
            decode_audio(liar, max_seconds=max_seconds, processes=2)
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 10
    assert peak < 2 * cap_bytes + (1 << 20)  # bounded by the cap, not by the 460 MB the file expands to
    assert caught.value.limit == max_seconds


# --- time and memory limits -----------------------------------------------------------


def test_wall_clock_timeout_on_a_real_decode(three_hour_ogg: Path, caplog: pytest.LogCaptureFixture) -> None:
    """max_seconds lets the 3 h file past the probe; decoding it needs ~5 s but only gets 0.5 s."""
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="bot.audio.decode"):
        error = assert_refused_with(three_hour_ogg, max_seconds=4 * 3600, timeout=0.5)
    assert time.monotonic() - started < 3
    assert "too long" in failure(error)
    assert "timed out" in caplog.text


def assert_refused_with(path: Path, **options: float) -> AudioDecodeError:
    with pytest.raises(AudioDecodeError) as caught:
        decode_audio(path, **options)  # type: ignore[arg-type]
    assert not isinstance(caught.value, AudioTooLongError)
    return caught.value


_LIMITS_REPORT = 'echo "as=$(ulimit -v) cpu=$(ulimit -t) fsize=$(ulimit -f) core=$(ulimit -c)" >&2\n'


def _fake_tools(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, **scripts: str) -> None:
    """PATH with only ffmpeg and ffprobe (and prlimit, which starts them): shell scripts where
    `scripts` names one, the real tool otherwise."""
    directory = tmp_path / "bin"
    directory.mkdir()
    if prlimit := shutil.which("prlimit"):
        os.symlink(prlimit, directory / "prlimit")
    for name in ("ffmpeg", "ffprobe"):
        path = directory / name
        if name in scripts:
            path.write_text("#!/bin/sh\n" + scripts[name])
            path.chmod(0o755)
        else:
            os.symlink(shutil.which(name), path)  # type: ignore[arg-type]
    monkeypatch.setenv("PATH", str(directory))


def test_timeout_kills_the_whole_process_group(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """An ffmpeg that hangs and has spawned a child: both are gone when decode_audio returns."""
    wav = make_tone(tmp_path / "a.wav", 0.5)
    _fake_tools(tmp_path, monkeypatch, ffmpeg='/bin/sleep 60 &\necho "child=$!" >&2\nwait\n')
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="bot.audio.decode"):
        assert_refused_with(wav, max_seconds=60, timeout=1.0)
    assert time.monotonic() - started < 3
    child = int(caplog.text.split("child=")[1].split()[0])
    assert exits_within(child, 2)


@pytest.mark.parametrize("via_prlimit", [True, False], ids=["prlimit-exec", "preexec-fn"])
def test_resource_limits_hold_from_the_first_instruction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, via_prlimit: bool
) -> None:
    """The child runs under RLIMIT_AS = memory_mb, RLIMIT_CPU ~ timeout, no file writes, no core
    dumps, from its very first instruction, before it can open the file, even when this process
    is slow to get back to it after starting it (a busy worker): the fake reads its limits at once,
    and any limit this process applied only after exec would come too late."""
    if via_prlimit and shutil.which("prlimit") is None:
        pytest.skip("no prlimit(1) on this machine")
    if not via_prlimit:
        real_which = shutil.which
        monkeypatch.setattr(audio.shutil, "which", lambda name, *a, **k: None if name == "prlimit" else real_which(name, *a, **k))
    real_popen = subprocess.Popen

    def slow_to_return(*args, **kwargs):  # type: ignore[no-untyped-def]
        proc = real_popen(*args, **kwargs)
        time.sleep(0.3)  # the parent is busy elsewhere: the child already runs
        return proc

    monkeypatch.setattr(audio.subprocess, "Popen", slow_to_return)
    wav = make_tone(tmp_path / "a.wav", 0.5)
    _fake_tools(tmp_path, monkeypatch, ffmpeg="exit 1\n", ffprobe=_LIMITS_REPORT + "exit 1\n")
    with caplog.at_level(logging.INFO, logger="bot.audio.decode"):
        assert_refused_with(wav, max_seconds=60, timeout=7.5, memory_mb=300)
    cpu = math.ceil(7.5) + 1
    assert f"as={300 * 1024} cpu={cpu} fsize=0 core=0" in caplog.text  # ulimit -v counts KiB


def test_resource_limits_are_applied_to_the_spare(
    voice_note: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The spare ffmpeg waits under the same limits as one started for a file, from its start."""
    _fake_tools(tmp_path, monkeypatch, ffmpeg=_LIMITS_REPORT + "/bin/cat >/dev/null\nexit 1\n")
    with caplog.at_level(logging.INFO, logger="bot.audio.decode"), \
            audio.AudioDecoder(max_seconds=60, timeout=7.5, memory_mb=300) as decoder:
        decoder.prepare()
        with pytest.raises(AudioDecodeError):
            decoder.decode(voice_note)
    assert f"as={300 * 1024} cpu={math.ceil(7.5) + 1} fsize=0 core=0" in caplog.text


def test_endless_ffprobe_output_is_cut_off(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A probe report past 1 MB (a file crafted with thousands of streams) is refused, not buffered."""
    wav = make_tone(tmp_path / "a.wav", 0.5)
    _fake_tools(tmp_path, monkeypatch, ffprobe="exec /usr/bin/yes '{\"streams\": []}'\n")
    with caplog.at_level(logging.WARNING, logger="bot.audio.decode"):
        assert_refused_with(wav, max_seconds=60, timeout=10)
    assert "ffprobe output" in caplog.text and "exceeded" in caplog.text


def test_too_small_memory_limit_is_a_clean_decode_error(voice_note: Path) -> None:
    """Debian's ffmpeg cannot even map its libraries in 100 MB: a clean AudioDecodeError, nothing worse."""
    assert_refused_with(voice_note, max_seconds=60, memory_mb=100)


def test_ffmpeg_stderr_is_logged_not_shown(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    disguised = tmp_path / "voice.ogg"
    disguised.write_text(_ffconcat("/etc/passwd"))
    with caplog.at_level(logging.INFO, logger="bot.audio.decode"):
        error = assert_refused(disguised)
    assert "not on whitelist" in caplog.text
    assert "whitelist" not in failure(error)


# --- fuzzing --------------------------------------------------------------------------

FUZZ = settings(
    max_examples=30,
    deadline=None,
    database=None,  # keep .hypothesis/ out of the working tree
    suppress_health_check=[HealthCheck.too_slow],
)


def assert_decodes_or_refuses(path: Path, decoder: audio.AudioDecoder | None = None) -> None:
    """The only two outcomes allowed for any input whatsoever (through a spare ffmpeg with `decoder`)."""
    try:
        if decoder is None:
            samples = decode_audio(path, max_seconds=10, timeout=20)
        else:
            decoder.prepare()
            samples = decoder.decode(path)
    except AudioDecodeError:
        return
    assert samples.dtype == np.float32 and samples.ndim == 1 and samples.flags.c_contiguous
    assert 0 < samples.size <= 10 * SAMPLE_RATE
    assert np.isfinite(samples).all() and float(np.abs(samples).max(initial=0)) <= 1.0


@FUZZ
@given(data=st.binary(min_size=0, max_size=4096))
def test_fuzz_random_bytes(media_dir: Path, data: bytes) -> None:
    target = media_dir / "fuzz-random.ogg"
    target.write_bytes(data)
    assert_decodes_or_refuses(target)


@pytest.fixture(scope="module")
def spare_decoder() -> Iterator[audio.AudioDecoder]:
    with audio.AudioDecoder(max_seconds=10, timeout=20) as decoder:
        yield decoder


@FUZZ
@given(
    edits=st.lists(st.tuples(st.floats(0, 1, exclude_max=True), st.integers(0, 255)), max_size=24),
    keep=st.floats(0.05, 1.0),
)
@pytest.mark.parametrize("through_spare", [False, True], ids=["own-ffmpeg", "spare-ffmpeg"])
def test_fuzz_mutated_voice_note(
    media_dir: Path, voice_note: Path, spare_decoder: audio.AudioDecoder, through_spare: bool,
    edits: list[tuple[float, int]], keep: float,
) -> None:
    data = bytearray(voice_note.read_bytes())
    for where, value in edits:
        data[int(where * len(data))] = value
    target = media_dir / "fuzz-mutated.ogg"
    target.write_bytes(bytes(data[: max(1, int(keep * len(data)))]))
    assert_decodes_or_refuses(target, spare_decoder if through_spare else None)
