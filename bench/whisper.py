"""Whisper: real-time factor of the tiny, base and small architectures, ours against transformers' pipeline.

Random weights with each checkpoint's sizes and the real vocabulary (tests/whisper_factory.py)
have the real compute per token; they do not stop where a real model would, so every window
is capped at `MAX_NEW_TOKENS` in both paths alike. Three figures per size and length, each
in a fresh process (its peak RSS is its own):

- ours: `WhisperRecognizer` as the bot runs it, with the long-form fallback on (random text
  fails the log-prob threshold, so every window is decoded at every temperature: the worst case);
- ours without fallback: one temperature, the same work as the pipeline;
- pipeline: `transformers.pipeline("automatic-speech-recognition", chunk_length_s=30)`.

Memory per loaded model is the RSS a process gains by loading it. `--quick` runs the 5-minute
file on whisper-tiny only (30 s on every size).

    python -m bench.whisper child ours|ours-no-fallback|pipeline MODEL_DIR AUDIO THREADS  # one run
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

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
        for seconds in LENGTHS if not opts.quick or size == SIZES[0] else LENGTHS[:1]:
            audio = voice_note(seconds)
            figures: dict[str, dict[str, float]] = {}
            for path in PATHS:
                runs = []
                for index in range(n):
                    print(f"whisper: {size} {seconds:g} s {path}, run {index + 1}/{n}", file=sys.stderr, flush=True)
                    child = run_child([PYTHON, "-m", "bench.whisper", "child", path, str(directory), str(audio),
                                       str(opts.threads)], timeout=3600)
                    runs.append({**child.json(), "peak_rss_mb": child.peak_rss_mb})
                    print(f"whisper: {size} {seconds:g} s {path}: {json.dumps(runs[-1])}", file=sys.stderr, flush=True)
                section.data["runs"][f"{size}/{seconds:g}/{path}"] = runs
                figures[path] = {key: median([r[key] for r in runs]) for key in ("rtf", "load_rss_mb", "peak_rss_mb")}
            section.add(Row("whisper", f"{size} {seconds:g} s: RTF ours / no fallback / pipeline",
                            " / ".join(f"{figures[p]['rtf']:.3f}" for p in PATHS), n))
            section.add(Row("whisper", f"{size} {seconds:g} s: peak RSS ours / pipeline",
                            f"{figures['ours']['peak_rss_mb']:.0f} / {figures['pipeline']['peak_rss_mb']:.0f} MB", n))
        section.add(Row("whisper", f"{size}: RSS of one loaded model", f"{figures['ours']['load_rss_mb']:.0f} MB", n))
    return section


def _child(path: str, directory: str, audio_path: str, threads: int) -> dict[str, float]:
    import psutil
    import torch

    from bot.audio.decode import decode_audio

    torch.set_num_threads(threads)
    audio = decode_audio(Path(audio_path), max_seconds=3600)
    process = psutil.Process()
    before = process.memory_info().rss
    if path == "pipeline":
        from transformers import pipeline

        asr = pipeline("automatic-speech-recognition", model=directory, chunk_length_s=30, device="cpu")
        loaded_rss = process.memory_info().rss
        started = time.perf_counter()
        asr(audio.copy(), generate_kwargs={"max_new_tokens": MAX_NEW_TOKENS, "language": "en"})
    else:
        from bot.asr.loading import load_model
        from bot.asr.recognizer import RecognizerConfig
        from bot.asr.types import TextOptions
        from bot.asr.whisper.recognizer import Fallback, WhisperRecognizer

        fallback = Fallback() if path == "ours" else Fallback(temperatures=(0.0,))
        recognizer = WhisperRecognizer(load_model(directory), RecognizerConfig(device="cpu"), fallback=fallback,
                                       max_new_tokens=MAX_NEW_TOKENS)
        loaded_rss = process.memory_info().rss
        started = time.perf_counter()
        recognizer.transcribe(audio, TextOptions(model=directory, language="en"))
    elapsed = time.perf_counter() - started
    return {"rtf": elapsed / (len(audio) / 16_000), "seconds": elapsed, "load_rss_mb": (loaded_rss - before) / 2**20}


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        print(json.dumps(_child(sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]))))
