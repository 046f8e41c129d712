"""Punctuation cost and memory per loaded model.

- Cost: seconds of the "punctuate" step per minute of transcript, on a random model with
  BERT-base's architecture (the compute of a real BERT-base punctuation checkpoint), its
  WordPiece tokenizer trained on the corpus transcripts. A minute of transcript is the
  corpus' words per minute of speech (about 150 for read English).
- Memory: sum of PSS of a one-worker pool with one CTC model, with a second CTC model
  (ASR_MODELS), and with the punctuation model; the differences are what each extra
  model costs.

Each figure is taken in a fresh child (`python -m bench.punctuation <task>`), so one's
memory never counts in another's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE,
    CORPUS,
    PYTHON,
    Options,
    Row,
    Section,
    default_settings,
    median,
    run_child,
    voice_note,
)

#: Words per minute of speech when the corpus is absent (read English).
WORDS_PER_MINUTE = 150.0
MINUTES = (1, 5)
LABELS = ("0", ".", ",", "?", "-", ":")


def _transcripts() -> tuple[list[str], float]:
    """The corpus reference texts and their words per minute (fallback sentences without it)."""
    manifest = CORPUS / "manifest.tsv"
    if not manifest.exists():
        from tests.punctuation_factory import SENTENCES

        return list(SENTENCES), WORDS_PER_MINUTE
    rows = [line.split("\t") for line in manifest.read_text().splitlines()[1:] if line.strip()]
    texts = [row[2].lower() for row in rows]
    seconds = sum(float(row[1]) for row in rows)
    return texts, sum(len(text.split()) for text in texts) / (seconds / 60)


def _ensure_model(name: str, build: str) -> Path:
    directory = CACHE / name
    if not (directory / "model.safetensors").exists():
        print(f"building {directory} ...", file=sys.stderr, flush=True)
        result = run_child([PYTHON, "-m", "bench.punctuation", "build", build, str(directory)])
        if result.returncode != 0:
            raise RuntimeError(f"could not build {name}: {result.stderr[-2000:]}")
    return directory


def _child(*args: str) -> dict[str, Any]:
    return run_child([PYTHON, "-m", "bench.punctuation", *args]).json()


def run(opts: Options) -> Section:
    punctuation = _ensure_model("punctuation-base", "punctuation")
    second = _ensure_model("base-model-b", "ctc")
    n = opts.reps(3, 1)
    section = Section()
    cost = _child("cost", str(punctuation), str(opts.threads), str(n))
    section.data["cost"] = cost
    for minutes in MINUTES:
        seconds = cost["seconds"][str(minutes)]
        section.add(Row("punctuation", f"punctuate {minutes} min of transcript ({cost['words'][str(minutes)]} words)",
                        f"{seconds:.2f} s ({seconds / minutes:.2f} s per min)", n))
    model = str(opts.model_dir)
    note = str(voice_note(5))
    pss = {
        "one model": _child("memory", model, "", "", note),
        "two models": _child("memory", model, f"en:{second}", "", note),
        "with punctuation": _child("memory", model, "", str(punctuation), note),
    }
    section.data["pss_mb"] = pss
    base = pss["one model"]["pss_mb"]
    section.add(Row("punctuation", "pool of 1 worker, 1 CTC model (sum PSS)", f"{base:.0f} MB", 1))
    section.add(Row("punctuation", "+ a second wav2vec2-base model (ASR_MODELS)",
                    f"+{pss['two models']['pss_mb'] - base:.0f} MB", 1))
    section.add(Row("punctuation", "+ a BERT-base punctuation model (PUNCTUATION_MODEL)",
                    f"+{pss['with punctuation']['pss_mb'] - base:.0f} MB", 1))
    return section


# -- children ------------------------------------------------------------------------------


def _build(kind: str, directory: Path) -> None:
    if kind == "ctc":
        from tests.model_factory import build_random_ctc_model

        build_random_ctc_model(directory, size="base", seed=1)
        return
    from tests.punctuation_factory import build_punctuation_model

    texts, _ = _transcripts()
    build_punctuation_model(directory, LABELS, size="base", sentences=texts, vocab_size=8000)


def _cost(directory: str, threads: int, reps: int) -> None:
    import torch

    from bot.asr.punctuation import load_punctuator
    from bot.asr.types import TimedText

    torch.set_num_threads(threads)
    punctuator = load_punctuator(directory)
    texts, per_minute = _transcripts()
    words = " ".join(texts).split()
    punctuator(TimedText(" ".join(words[:50]), ()))  # warm-up
    seconds: dict[str, float] = {}
    counts: dict[str, int] = {}
    for minutes in MINUTES:
        count = int(per_minute * minutes)
        text = " ".join((words * (count // len(words) + 1))[:count]).upper()
        timings = []
        for _ in range(reps):
            started = time.perf_counter()
            punctuator(TimedText(text, ()))
            timings.append(time.perf_counter() - started)
        seconds[str(minutes)] = median(timings)
        counts[str(minutes)] = count
    print(json.dumps({"seconds": seconds, "words": counts, "words_per_minute": per_minute, "threads": threads}))


def _memory(model: str, models: str, punctuation: str, note: str) -> None:
    import psutil

    from bot.asr.types import TextOptions
    from bot.execution.base import TranscriptionRequest
    from bot.execution.factory import create_transcriber

    settings = default_settings(asr_model=model, asr_models=models, punctuation_model=punctuation or None,
                                asr_workers=1)

    async def main() -> float:
        pool = create_transcriber(settings)
        await pool.start()
        await pool.transcribe(TranscriptionRequest(audio=Path(note), options=TextOptions(model=model)), owner=0)
        me = psutil.Process()
        total = 0.0
        for process in [me, *me.children(recursive=True)]:
            try:
                total += process.memory_full_info().pss / 2**20
            except psutil.Error:
                continue
        await pool.shutdown()
        return total

    print(json.dumps({"pss_mb": asyncio.run(main())}))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.punctuation")
    parser.add_argument("task", choices=("build", "cost", "memory"))
    parser.add_argument("args", nargs="*")
    args = parser.parse_args(argv)
    if args.task == "build":
        _build(args.args[0], Path(args.args[1]))
    elif args.task == "cost":
        _cost(args.args[0], int(args.args[1]), int(args.args[2]))
    else:
        _memory(*args.args)


if __name__ == "__main__":
    main()
