"""Reading an Ogg Opus file's duration from its pages (bot.ogg), against ffprobe."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.ogg import opus_duration
from tests.media import convert, ffmpeg, make_tone, media_duration

NOISE = "anoisesrc=c=pink:a=0.3:seed=3:d={seconds}"


def opus_file(path: Path, seconds: float, *args: str) -> Path:
    ffmpeg("-f", "lavfi", "-i", NOISE.format(seconds=seconds), "-c:a", "libopus", *args, str(path))
    return path


@pytest.mark.parametrize(
    ("seconds", "args"),
    [(1.0, ("-ar", "48000")), (7.34, ("-ar", "16000", "-b:a", "16k")), (65.0, ("-ar", "48000", "-ac", "2")),
     (12.5, ("-ar", "48000", "-application", "voip", "-frame_duration", "60"))],
)
def test_voice_note_duration_matches_ffprobe(tmp_path: Path, seconds: float, args: tuple[str, ...]) -> None:
    path = opus_file(tmp_path / "note.ogg", seconds, *args)
    assert opus_duration(path) == pytest.approx(seconds, abs=0.001)
    assert opus_duration(path) == pytest.approx(media_duration(path), abs=0.01)


def test_truncated_voice_note_gives_the_length_that_is_there(tmp_path: Path) -> None:
    whole = opus_file(tmp_path / "whole.ogg", 40.0).read_bytes()
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(whole[: len(whole) // 2])
    assert opus_duration(cut) == pytest.approx(20.0, abs=1.5)


def test_chained_streams_are_left_to_ffprobe(tmp_path: Path) -> None:
    """Two voice notes back to back in one file (a chained Ogg): the last page is another stream's."""
    first = opus_file(tmp_path / "a.ogg", 3.0).read_bytes()
    second = opus_file(tmp_path / "b.ogg", 2.0).read_bytes()
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(first + second)
    assert opus_duration(chained) is None


@pytest.mark.parametrize(
    "make",
    [
        pytest.param(lambda d: make_tone(d / "v.ogg", 2.0, "-c:a", "libvorbis"), id="vorbis"),
        pytest.param(lambda d: make_tone(d / "f.flac", 2.0), id="flac"),
        pytest.param(lambda d: make_tone(d / "w.wav", 2.0), id="wav"),
        pytest.param(lambda d: convert(make_tone(d / "w.wav", 2.0), d / "m.mka", "-c:a", "libopus"),
                     id="opus-in-matroska"),
    ],
)
def test_other_files_are_left_to_ffprobe(tmp_path: Path, make) -> None:  # type: ignore[no-untyped-def]
    assert opus_duration(make(tmp_path)) is None


@pytest.mark.parametrize(
    "content",
    [b"", b"OggS", b"OggS\x00\x02" + bytes(200), bytes(range(256)) * 300],
    ids=["empty", "capture-pattern-only", "empty-first-page", "random"],
)
def test_malformed_files_are_left_to_ffprobe(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "x.ogg"
    path.write_bytes(content)
    assert opus_duration(path) is None


def test_header_only_and_missing_files(tmp_path: Path) -> None:
    whole = opus_file(tmp_path / "whole.ogg", 2.0).read_bytes()
    head = tmp_path / "head.ogg"
    head.write_bytes(whole[:60])  # inside the OpusHead page: no audio page, no length
    assert opus_duration(head) is None
    assert opus_duration(tmp_path / "missing.ogg") is None
