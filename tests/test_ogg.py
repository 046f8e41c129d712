"""Reading an Ogg Opus file's duration from its pages (bot.audio.ogg), against ffprobe."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.audio.ogg import opus_duration, pages_through
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


def _pages(data: bytes) -> list[tuple[int, int]]:
    """(end offset, granule position) of every page, walked by the page sizes in the headers."""
    pages, offset = [], 0
    while offset < len(data):
        segments = data[offset + 26]
        size = 27 + segments + sum(data[offset + 27 : offset + 27 + segments])
        pages.append((offset + size, int.from_bytes(data[offset + 6 : offset + 14], "little", signed=True)))
        offset += size
    return pages


def test_pages_through_ends_at_the_page_that_completes_the_moment(tmp_path: Path) -> None:
    path = opus_file(tmp_path / "note.ogg", 40.0, "-ar", "48000")
    data = path.read_bytes()
    body = 27 + data[26]  # OpusHead, after the first page's header and segment table
    pre_skip = int.from_bytes(data[body + 10 : body + 12], "little")
    pages = _pages(data)
    for seconds in (0.5, 12.0, 31.0, 40.0):
        end, held = pages_through(path, seconds)  # type: ignore[misc]
        [(first_end, granule)] = [page for page in pages if page[1] >= pre_skip + seconds * 48_000][:1]
        assert end == first_end and held == (granule - pre_skip) / 48_000 >= seconds
        # the page before it did not reach that moment yet
        assert all(g < pre_skip + seconds * 48_000 for e, g in pages if e < end)
    assert pages_through(path, 40.1) is None  # the file ends first


def test_pages_through_refuses_a_broken_chain(tmp_path: Path) -> None:
    data = bytearray(opus_file(tmp_path / "note.ogg", 40.0, "-ar", "48000").read_bytes())
    ends = [end for end, _ in _pages(bytes(data))]
    damaged = tmp_path / "damaged.ogg"
    damaged.write_bytes(data[: ends[10]] + data[ends[11] :])  # one page lost
    assert pages_through(damaged, 5.0) is not None  # before the loss: intact
    assert pages_through(damaged, 30.0) is None
    data[ends[20] : ends[20] + 4] = b"XXXX"  # a page that is not one
    garbled = tmp_path / "garbled.ogg"
    garbled.write_bytes(data)
    assert pages_through(garbled, 30.0) is None
    chained = tmp_path / "chained.ogg"
    links = (opus_file(tmp_path / name, 3.0).read_bytes() for name in ("a.ogg", "b.ogg"))
    chained.write_bytes(b"".join(links))
    assert pages_through(chained, 4.0) is None  # another stream's pages
    assert pages_through(tmp_path / "missing.ogg", 1.0) is None
