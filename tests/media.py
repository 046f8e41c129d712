"""Test media generated on the fly with the real ffmpeg and espeak-ng.

Nothing here is committed audio: every helper writes into a path the test chooses
(normally under `tmp_path`) and returns that path. The output format follows the file
extension unless ffmpeg arguments say otherwise, so `make_tone(tmp_path / "a.mp3", 2)`
is an MP3. Extra `ffmpeg_args` are output options, e.g. `"-c:a", "libopus", "-b:a", "24k"`.

Import in tests as `from tests.media import ...`.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

from bot.audio import decode

__all__ = [
    "convert",
    "ffmpeg",
    "looped",
    "make_silence",
    "make_tone",
    "make_video",
    "media_duration",
    "probe",
    "synth_speech",
]


def ffmpeg(*args: str, timeout: float = 120.0) -> None:
    """Run the real ffmpeg quietly with `args`, overwriting outputs; raise with its stderr on failure."""
    argv = ["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args]
    done = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed:\n{done.stderr.decode(errors='replace')}")


def make_tone(
    path: Path,
    seconds: float,
    *ffmpeg_args: str,
    rate: int = 16_000,
    channels: int = 1,
    frequency: float = 1_000.0,
    amplitude: float = 0.5,
) -> Path:
    """A sine tone of `frequency` Hz, `seconds` long, at `rate` Hz with `channels` identical channels."""
    wave = "|".join([f"{amplitude}*sin({frequency}*2*PI*t)"] * channels)
    ffmpeg("-f", "lavfi", "-i", f"aevalsrc={wave}:s={rate}:d={seconds}", *ffmpeg_args, str(path))
    return path


def make_silence(
    path: Path, seconds: float, *ffmpeg_args: str, rate: int = 16_000, channels: int = 1
) -> Path:
    """Digital silence (all-zero samples), `seconds` long; compresses to almost nothing in FLAC/Opus."""
    layout = "mono" if channels == 1 else f"{channels}c"
    source = f"anullsrc=r={rate}:cl={layout}"
    ffmpeg("-f", "lavfi", "-i", source, "-t", str(seconds), *ffmpeg_args, str(path))
    return path


def make_video(path: Path, seconds: float, *ffmpeg_args: str, audio: bool = True) -> Path:
    """A small test-pattern video (H.264), with a 1 kHz tone as its sound track unless `audio=False`.

    The container follows the extension (.mp4, .mov, .mkv, ...). The audio codec is AAC
    unless `ffmpeg_args` choose another.
    """
    inputs = ["-f", "lavfi", "-i", f"testsrc=size=64x64:rate=10:duration={seconds}"]
    if audio:
        inputs += ["-f", "lavfi", "-i", f"aevalsrc=0.5*sin(1000*2*PI*t):s=44100:d={seconds}", "-c:a", "aac"]
    ffmpeg(*inputs, "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", *ffmpeg_args, str(path))
    return path


def convert(src: Path, dst: Path, *ffmpeg_args: str) -> Path:
    """Re-encode `src` into `dst` (format from its extension, options from `ffmpeg_args`)."""
    ffmpeg("-i", str(src), *ffmpeg_args, str(dst))
    return dst


def looped(src: Path, dst: Path, times: int, *ffmpeg_args: str) -> Path:
    """`src` played `times` times back to back into `dst`: a long note of real speech from a short one.

    Streams are copied unless `ffmpeg_args` ask for a codec, e.g. `"-c:a", "libopus", "-b:a", "16k"`
    (a long voice note as Telegram would send it: Opus at a low bitrate).
    """
    ffmpeg("-stream_loop", str(times - 1), "-i", str(src), *(ffmpeg_args or ("-c", "copy")), str(dst))
    return dst


def synth_speech(text: str, path: Path, *, voice: str = "en-us", words_per_minute: int = 160) -> Path:
    """Speak `text` into a WAV file (22.05 kHz mono) with espeak-ng; convert() it for other formats."""
    espeak = shutil.which("espeak-ng")
    if espeak is None:
        raise RuntimeError("espeak-ng is not installed (make system-deps installs it)")
    subprocess.run(
        [espeak, "-v", voice, "-s", str(words_per_minute), "-w", str(path), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def media_duration(path: Path) -> float:
    """Duration in seconds as ffprobe reports it from the container (independent of bot.audio.decode)."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        capture_output=True,
        check=True,
        timeout=60,
        text=True,
    )
    return float(done.stdout.strip())


def probe(path: Path) -> decode.AudioInfo:
    """What the decoder's own hardened ffprobe run reads from `path`'s container (its length, its format)."""
    return decode._probe(path, deadline=time.monotonic() + 30, memory_mb=1024)
