"""Whisper: real-time factor of the tiny, base and small architectures, ours against transformers' pipeline.

Random weights with each checkpoint's sizes and the real vocabulary (tests/whisper_factory.py)
have the real compute per token; they do not stop where a real model would, so every window
is capped at `MAX_NEW_TOKENS` in both paths alike. Each figure comes from a fresh process (its
peak RSS is its own):

- ours: `WhisperRecognizer` as the bot runs it, with the long-form fallback on. Random text
  fails the log-prob threshold, so every window is decoded at all six temperatures: the worst
  case, measured on whisper-tiny and 30 s only (it costs six times the rest);
- ours without fallback: one temperature, the same work per window as the pipeline;
- pipeline: `transformers.pipeline("automatic-speech-recognition", chunk_length_s=30)`.

The two paths do not decode the same number of windows on random weights: the pipeline cuts
fixed 30 s chunks that overlap by 10 s, while our sequential long-form loop moves on to the
last timestamp the model predicted, which random weights put anywhere in the window (a real
model's segments end near the window's end). So next to the RTF each row gives the windows
decoded and the seconds per window, which is the like-for-like compute figure.

Memory per loaded model is the RSS a process has gained by loading it and running it once: right
after `from_pretrained` the weights are only mapped (safetensors), and run they are resident. `--quick` runs every size and
length once; the full run twice.

    python -m bench.whisper child ours|ours-no-fallback|pipeline MODEL_DIR AUDIO THREADS  # one run
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import CACHE, PYTHON, Options, Row, Section, median, run_child, voice_note

SIZES = ("whisper-tiny", "whisper-base", "whisper-small")
LENGTHS = (30.0, 300.0)
MAX_NEW_TOKENS = 32
PATHS = ("ours", "ours-no-fallback", "pipeline")


def model_dir(size: str) -> Path:
    """The random checkpoint of `size`, built once into the bench cache."""
    directory = CACHE / f"random-{size}"
    if not (directory / "model.safetensors").exists():
        run_child([PYTHON, "-c", "import sys; from pathlib import Path; "
                   "from tests.whisper_factory import build_random_whisper_model; "
                   "build_random_whisper_model(Path(sys.argv[1]), size=sys.argv[2]); print('{}')",
                   str(directory), size], timeout=600).json()
    return directory


def run(opts: Options) -> Section:
    n = opts.reps(2, 1)
    section = Section(data={"max_new_tokens": MAX_NEW_TOKENS, "runs": {}})
    for size in SIZES:
        directory = model_dir(size)
        for seconds in LENGTHS:
            audio = voice_note(seconds)
            paths = PATHS if (size, seconds) == (SIZES[0], LENGTHS[0]) else PATHS[1:]
            figures: dict[str, dict[str, float]] = {}
            for path in paths:
                runs = []
                for index in range(n):
                    print(f"whisper: {size} {seconds:g} s {path}, run {index + 1}/{n}", file=sys.stderr, flush=True)
                    child = run_child([PYTHON, "-m", "bench.whisper", "child", path, str(directory), str(audio),
                                       str(opts.threads)], timeout=3600)
                    runs.append({**child.json(), "peak_rss_mb": child.peak_rss_mb})
                    print(f"whisper: {size} {seconds:g} s {path}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
                section.data["runs"][f"{size}/{seconds:g}/{path}"] = runs
                figures[path] = {key: median([r[key] for r in runs])
                                 for key in ("rtf", "windows", "model_rss_mb", "peak_rss_mb")}
                figures[path]["per_window"] = median([r["seconds"] / r["windows"] for r in runs])
            section.add(Row("whisper", f"{size} {seconds:g} s: RTF {' / '.join(paths)}",
                            " / ".join(f"{figures[p]['rtf']:.3f}" for p in paths), n))
            section.add(Row("whisper", f"{size} {seconds:g} s: windows, s per window {' / '.join(paths)}",
                            " / ".join(f"{figures[p]['windows']:.0f}, {figures[p]['per_window']:.2f} s" for p in paths),
                            n))
            section.add(Row("whisper", f"{size} {seconds:g} s: peak RSS ours / pipeline",
                            f"{figures[PATHS[1]]['peak_rss_mb']:.0f} / {figures['pipeline']['peak_rss_mb']:.0f} MB", n))
        section.add(Row("whisper", f"{size}: RSS one loaded model adds, once it has run",
                        f"{figures[PATHS[1]]['model_rss_mb']:.0f} MB", n))
    return section


def _child(path: str, directory: str, audio_path: str, threads: int) -> dict[str, float]:
    import psutil
    import torch

    from bot.audio.decode import decode_audio

    torch.set_num_threads(threads)
    audio = decode_audio(Path(audio_path), max_seconds=3600)
    process = psutil.Process()
    before = process.memory_info().rss
    windows = 0
    if path == "pipeline":
        from transformers import pipeline

        asr = pipeline("automatic-speech-recognition", model=directory, chunk_length_s=30, device="cpu")
        generate = asr.model.generate

        def counted_generate(*args: Any, **kwargs: Any) -> Any:  # one call per 30 s chunk (batch size 1)
            nonlocal windows
            windows += 1
            return generate(*args, **kwargs)

        asr.model.generate = counted_generate
        started = time.perf_counter()
        asr(audio.copy(), generate_kwargs={"max_new_tokens": MAX_NEW_TOKENS, "language": "en"})
    else:
        from bot.asr.hardware import resolve_compute_type
        from bot.asr.loading import load_model
        from bot.asr.recognizer import RecognizerConfig
        from bot.asr.types import TextOptions
        from bot.asr.whisper.recognizer import Fallback, WhisperRecognizer

        def between_windows() -> bool:  # the recognizer asks before every 30 s window
            nonlocal windows
            windows += 1
            return False

        fallback = Fallback() if path == "ours" else Fallback(temperatures=(0.0,))
        config = RecognizerConfig(device="cpu", compute_type=resolve_compute_type("auto", "cpu"))  # as the bot runs
        recognizer = WhisperRecognizer(load_model(directory), config, fallback=fallback, max_new_tokens=MAX_NEW_TOKENS)
        started = time.perf_counter()
        recognizer.transcribe(audio, TextOptions(model=directory, language="en"), should_stop=between_windows)
    elapsed = time.perf_counter() - started
    return {"rtf": elapsed / (len(audio) / 16_000), "seconds": elapsed, "windows": max(windows, 1),
            "model_rss_mb": (process.memory_info().rss - before) / 2**20}


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        print(json.dumps(_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
