"""Decoding a 10-minute OGG/Opus voice note to 16 kHz float32 with `bot.audio.decode`.

Runs in this process: decoding happens in ffmpeg (subprocesses), so there is no model
state to isolate. The first call warms the page cache and is not counted. The target
figure is the decode a model worker does: its `AudioDecoder` has had a spare ffmpeg
started while idle (`IDLE_SECONDS` before each timed call, untimed), which takes the
first, longer piece while one more ffmpeg per further CPU starts for the rest. Below it,
what bounds it: `decode_audio` starting every ffmpeg itself, the same with one ffmpeg,
ffmpeg's Opus decoder alone on the whole file (writing nothing), and the cost of merely
starting an ffmpeg process.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from typing import Any

from bench.common import IDLE_SECONDS, Options, Row, Section, default_settings, median, voice_note

TARGET_SECONDS = 0.5
LENGTH_SECONDS = 600


def run(opts: Options) -> Section:
    from bot.audio.decode import AudioDecoder, decode_audio

    path = voice_note(LENGTH_SECONDS)
    n = opts.reps(7, 3)
    settings = default_settings()
    limits = {"max_seconds": settings.max_audio_seconds, "timeout": settings.ffmpeg_timeout_seconds,
              "memory_mb": settings.ffmpeg_memory_mb}
    worker_decoder = AudioDecoder(**limits)

    def check(audio: Any) -> None:
        if abs(len(audio) / 16000 - LENGTH_SECONDS) > 1.0:
            raise RuntimeError(f"decoded {len(audio) / 16000:.1f} s from a {LENGTH_SECONDS} s file")

    def decode(processes: int | None) -> None:
        check(decode_audio(path, **limits, processes=processes))

    def idle() -> None:
        worker_decoder.prepare()
        time.sleep(IDLE_SECONDS)

    def ffmpeg(*args: str) -> None:
        subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", *args], check=True, capture_output=True)

    def timed(call: Callable[[], None], before: Callable[[], None] = lambda: None) -> list[float]:
        before()
        call()
        times = []
        for _ in range(n):
            before()
            started = time.perf_counter()
            call()
            times.append(time.perf_counter() - started)
        return times

    with worker_decoder:
        worker = timed(lambda: check(worker_decoder.decode(path)), before=idle)
    runs = {
        "worker": worker,
        "default": timed(lambda: decode(None)),
        "one_process": timed(lambda: decode(1)),
        "opus_decoder_alone": timed(lambda: ffmpeg("-threads", "1", "-i", str(path), "-f", "null", "-")),
        "ffmpeg_start": timed(lambda: ffmpeg("-version")),
    }
    seconds = {name: median(times) for name, times in runs.items()}
    return Section(
        rows=[
            Row("decode", "decode 10 min OGG/Opus → 16 kHz f32 (worker: spare ffmpeg ready)",
                f"{seconds['worker']:.3f} s", n, f"≤ {TARGET_SECONDS} s", seconds["worker"] <= TARGET_SECONDS),
            Row("decode", "  same, decode_audio starting every ffmpeg", f"{seconds['default']:.3f} s", n),
            Row("decode", "  same, one ffmpeg process", f"{seconds['one_process']:.3f} s", n),
            Row("decode", "  ffmpeg's Opus decoder alone, whole file, no output",
                f"{seconds['opus_decoder_alone']:.3f} s", n),
            Row("decode", "  starting one ffmpeg process (-version)", f"{1000 * seconds['ffmpeg_start']:.0f} ms", n),
        ],
        data={"seconds": runs, "median": seconds, "audio_seconds": LENGTH_SECONDS},
    )
