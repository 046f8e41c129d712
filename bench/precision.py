"""How often reduced precision changes the transcript against float32, word by word, on ../shared/corpus.

Every corpus file (manifest.tsv) is transcribed by the engine (`build_recognizer` on
`load_model`, default chunking and CPU kernels) in float32, bfloat16 and dynamic int8,
each mode with its own freshly loaded model. Figures:

* word changes of each reduced mode against float32: pooled word edit distance over the
  float32 transcripts' word count (`bench.words`), and the share of files whose
  transcript changed at all;
* each mode's word error rate against the corpus reference transcripts;
* each mode's model-only RTF on this machine, and whether torch reports native bf16.

With the default random-weight model the reference WER is meaningless (the model knows
no words; it is printed so that a run with `--model DIR` reads the same), and the change
rate is overstated: random weights give flat logits, where a tiny numeric change flips
the argmax of a frame, whereas a trained model's confident logits keep it. The change
rate does not depend on speed, so a CPU that only emulates bf16 measures it correctly,
just slowly; `--quick` therefore takes the first few seconds of a few files, the full
run takes every file whole and prints its expected time (from a short probe) first.

The measuring runs in a child, `python -m bench.precision --files JSON ...`.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path
from typing import Any

from bench.common import (
    CACHE,
    CORPUS,
    PYTHON,
    Options,
    Row,
    Section,
    child_env,
    default_settings,
    machine_info,
    machine_line,
    not_run,
    run_child,
)
from bench.words import word_errors

MODES = ("float32", "bfloat16", "int8")
REFERENCE_MODE = "float32"
#: --quick: this many files, spread over the manifest's sources, cut to their first seconds.
QUICK_FILES = 6
QUICK_SECONDS = 4.0
#: Seconds of the first file each mode transcribes before the run, to project its duration.
PROBE_SECONDS = 2.0
RANDOM_WEIGHTS_NOTE = ("random weights overstate changes: flat logits flip argmaxes that a trained model's "
                       "confident logits keep")


def corpus_files() -> list[dict[str, Any]]:
    """The manifest's files that exist: name, path, duration and reference text."""
    manifest = CORPUS / "manifest.tsv"
    files = []
    for line in manifest.read_text().splitlines()[1:]:
        name, seconds, reference, *_ = [*line.split("\t"), "", "", ""]
        if name and (CORPUS / name).exists():
            files.append({"file": name, "path": str(CORPUS / name), "seconds": float(seconds or 0.0),
                          "reference": reference})
    return files


def _select(files: list[dict[str, Any]], quick: bool) -> tuple[list[dict[str, Any]], float | None]:
    """All files whole, or (--quick) `QUICK_FILES` evenly spaced ones, cut to `QUICK_SECONDS`."""
    if not quick or len(files) <= QUICK_FILES:
        return files, QUICK_SECONDS if quick else None
    step = len(files) / QUICK_FILES
    return [files[int(i * step)] for i in range(QUICK_FILES)], QUICK_SECONDS


def _is_random_model(model_dir: Path) -> bool:
    return model_dir.resolve() == (CACHE / "base-model").resolve()


def run(opts: Options) -> Section:
    if not (CORPUS / "manifest.tsv").exists():
        return not_run("precision", f"no corpus at {CORPUS}")
    files, cap = _select(corpus_files(), opts.quick)
    if not files:
        return not_run("precision", f"no manifest file of {CORPUS} exists")
    machine = machine_info(opts.threads)
    audio_seconds = sum(min(f["seconds"], cap or f["seconds"]) for f in files)
    cut = f"first {cap:g} s of each" if cap else "whole files"
    print(f"precision: {len(files)} corpus files, {audio_seconds:.0f} s of audio ({cut}), modes {', '.join(MODES)}; "
          f"{machine_line(machine)}", file=sys.stderr, flush=True)
    listing = CACHE / "precision-files.json"
    CACHE.mkdir(parents=True, exist_ok=True)
    listing.write_text(json.dumps(files))
    try:
        child = run_child([PYTHON, "-m", "bench.precision", "--files", str(listing), "--model", str(opts.model_dir),
                           "--threads", str(opts.threads), *(["--max-seconds", str(cap)] if cap else [])],
                          env=child_env(), timeout=max(900.0, 40.0 * audio_seconds), stream_stderr=True)
    finally:
        listing.unlink(missing_ok=True)
    data = child.json()
    return summarise(data, machine, random_weights=_is_random_model(opts.model_dir))


def summarise(data: dict[str, Any], machine: dict[str, Any], *, random_weights: bool) -> Section:
    """Rows and raw figures from the child's transcripts (`_measure`'s output)."""
    files = data["files"]
    section = Section(data=data | {"machine_line": machine_line(machine), "notes": RANDOM_WEIGHTS_NOTE})
    native = data["native_bf16"]
    section.add(Row("precision", "native bf16 (torch: AMX tiles or AVX512-BF16)",
                    "yes" if native else f"no: bfloat16 is emulated (torch CPU capability {data['capability']})"))
    audio = sum(f["duration"] for f in files)
    cut = f"first {data['max_seconds']:g} s of each" if data["max_seconds"] else "whole files"
    section.add(Row("precision", "corpus files compared (../shared/corpus)", f"{len(files)} files, {audio:.0f} s "
                    f"of audio ({cut})", len(files)))
    changes: dict[str, Any] = {}
    for mode in data["modes"]:
        if mode == REFERENCE_MODE:
            continue
        pooled = word_errors((f["texts"][REFERENCE_MODE], f["texts"][mode]) for f in files)
        changes[mode] = pooled.__dict__ | {"rate": pooled.rate, "changed_share": pooled.changed_share}
        section.add(Row("precision", f"{mode} vs float32: word changes (edits / float32 words); files changed",
                        f"{pooled.rate:.1%} ({pooled.edits}/{pooled.reference_words}); "
                        f"{pooled.changed}/{pooled.transcripts} files ({pooled.changed_share:.0%})", len(files)))
    against_reference: dict[str, Any] = {}
    label = " (random weights: meaningless)" if random_weights else ""
    for mode in data["modes"]:
        pooled = word_errors((f["reference"], f["texts"][mode]) for f in files)
        against_reference[mode] = {"rate": pooled.rate, "edits": pooled.edits, "words": pooled.reference_words}
        section.add(Row("precision", f"{mode}: WER against the corpus references{label}", f"{pooled.rate:.0%}",
                        len(files)))
    for mode in data["modes"]:
        rtf = sum(f["times"][mode] for f in files) / audio
        section.add(Row("precision", f"{mode}: RTF (engine, decoded audio; all files)", f"{rtf:.3f}", len(files)))
    if random_weights:
        section.add(Row("precision", "note", RANDOM_WEIGHTS_NOTE))
    section.data["changes_vs_float32"] = changes
    section.data["wer_vs_reference"] = against_reference
    return section


# ----------------------------------------------------------------------------------------
# The child: python -m bench.precision --files JSON --model DIR --threads N [--max-seconds S]
# ----------------------------------------------------------------------------------------


def _load_audio(path: str, max_seconds: float | None) -> Any:
    """A corpus file as 16 kHz mono float32, decoded by the bot's own ffmpeg path.

    The one headerless file (`.raw`, s16le 16 kHz mono per the corpus notes) is read directly.
    """
    import numpy as np

    from bot.audio.decode import decode_audio

    settings = default_settings()
    if path.endswith(".raw"):
        audio = np.fromfile(path, dtype="<i2").astype(np.float32) / 32768.0
    else:
        audio = decode_audio(Path(path), max_seconds=settings.max_audio_seconds,
                             timeout=settings.ffmpeg_timeout_seconds, memory_mb=settings.ffmpeg_memory_mb)
    return audio[: int(max_seconds * 16000)] if max_seconds else audio


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    """Every file in every mode; prints the projected duration to stderr before the long part."""
    import torch

    from bot.asr.hardware import native_bf16
    from bot.asr.loading import load_model
    from bot.asr.recognizer import RecognizerConfig, build_recognizer
    from bot.asr.types import TextOptions

    torch.set_num_threads(args.threads)
    # int8's quantize_dynamic warns of a deprecated torch API on every load; bench.variants reports it.
    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
    settings = default_settings()
    files = json.loads(Path(args.files).read_text())
    audio = [_load_audio(f["path"], args.max_seconds) for f in files]
    options = TextOptions(model=args.model)

    def recognizer(mode: str) -> Any:
        config = RecognizerConfig(device="cpu", compute_type=mode, cpu_kernels=settings.asr_cpu_kernels,
                                  chunk_seconds=settings.asr_chunk_seconds,
                                  stride_seconds=settings.asr_stride_seconds)
        return build_recognizer(load_model(args.model, attention=settings.asr_attention), config)

    total = sum(len(a) for a in audio) / 16000
    probe = audio[0][: int(PROBE_SECONDS * 16000)]
    recognizers = {mode: recognizer(mode) for mode in MODES}
    projected = {}
    for mode, rec in recognizers.items():  # the first call also pays one-off set-up: the estimate errs high
        started = time.perf_counter()
        rec.transcribe(probe, options)
        projected[mode] = (time.perf_counter() - started) / (len(probe) / 16000) * total
    print(f"precision: expected time for {total:.0f} s of audio: "
          + ", ".join(f"{mode} ~{seconds / 60:.1f} min" for mode, seconds in projected.items())
          + f" (~{sum(projected.values()) / 60:.0f} min in all)", file=sys.stderr, flush=True)

    results = [{"file": f["file"], "reference": f["reference"], "duration": len(a) / 16000, "texts": {},
                "times": {}} for f, a in zip(files, audio, strict=True)]
    for mode, rec in recognizers.items():
        started = time.perf_counter()
        for entry, samples in zip(results, audio, strict=True):
            result = rec.transcribe(samples, options)
            entry["texts"][mode] = result.raw_text
            entry["times"][mode] = result.processing_seconds
        print(f"precision: {mode} done in {time.perf_counter() - started:.0f} s", file=sys.stderr, flush=True)
    return {"native_bf16": native_bf16(), "capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads(), "max_seconds": args.max_seconds, "modes": list(MODES),
            "projected_seconds": projected, "files": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.precision",
                                     description="the child of the precision bench (run `python -m bench "
                                                 "--only precision` instead)")
    parser.add_argument("--files", required=True, help="JSON list of corpus entries (file, path, reference)")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--max-seconds", type=float, help="transcribe only the first seconds of each file")
    print(json.dumps(_measure(parser.parse_args(argv))), flush=True)


if __name__ == "__main__":
    main()
