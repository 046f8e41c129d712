"""Decoding a 10-minute OGG/Opus voice note to 16 kHz float32 with `bot.audio.decode_audio`.

Runs in this process: decoding happens in ffmpeg (a subprocess per call), so there is
no model state to isolate. The first call warms the page cache and is not counted.
"""

from __future__ import annotations

import time

from bench.common import Options, Row, Section, default_settings, median, voice_note

TARGET_SECONDS = 0.5
LENGTH_SECONDS = 600


def run(opts: Options) -> Section:
    from bot.audio import decode_audio

    path = voice_note(LENGTH_SECONDS)
    n = opts.reps(7, 3)
    settings = default_settings()

    def once() -> float:
        started = time.perf_counter()
        audio = decode_audio(path, max_seconds=settings.max_audio_seconds,
                             timeout=settings.ffmpeg_timeout_seconds, memory_mb=settings.ffmpeg_memory_mb)
        elapsed = time.perf_counter() - started
        if abs(len(audio) / 16000 - LENGTH_SECONDS) > 1.0:
            raise RuntimeError(f"decoded {len(audio) / 16000:.1f} s from a {LENGTH_SECONDS} s file")
        return elapsed

    once()
    times = [once() for _ in range(n)]
    seconds = median(times)
    return Section(
        rows=[Row("decode", "decode_audio 10 min OGG/Opus → 16 kHz f32", f"{seconds:.3f} s", n,
                  f"≤ {TARGET_SECONDS} s", seconds <= TARGET_SECONDS)],
        data={"seconds": times, "median": seconds, "audio_seconds": LENGTH_SECONDS},
    )
