"""Command line: `python -m bot run | transcribe FILE... | download-model | serve`.

`transcribe` needs no Telegram token and no database: it decodes and transcribes in this
process (no worker pool to start), which is the fastest way through one or a few files.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from bot.errors import VoiceBotError
from bot.ops.startup_gc import collector_paused
from bot.settings import Settings, SettingsError, load_settings

if TYPE_CHECKING:  # heavy (torch); imported where used, after the settings are known to be valid
    import numpy as np

    from bot.asr.recognizer import Recognizer

EXIT_BAD_INPUT = 1
EXIT_BAD_CONFIG = 2
EXIT_OUTPUT_CLOSED = 141  # what a shell reports for a program that SIGPIPE ended, like cat


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bot", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="start the Telegram bot (long polling, or webhook when WEBHOOK_URL is set)")
    transcribe = commands.add_parser("transcribe", help="print the transcript of audio or video files")
    transcribe.add_argument("files", nargs="+", type=Path, metavar="FILE")
    output = transcribe.add_mutually_exclusive_group()
    output.add_argument("--json", action="store_true", help="one JSON object per file (text, words, timing)")
    output.add_argument("--words", action="store_true", help="one line per word: start end word")
    output.add_argument("--srt", action="store_true", help="SubRip subtitles from the word times")
    transcribe.add_argument("--raw", action="store_true", help="print the model's raw text (before post-processing)")
    commands.add_parser("download-model", help="fetch ASR_MODEL (every model of ASR_MODELS, and PUNCTUATION_MODEL) "
                        "into the Hugging Face cache for offline use")
    serve = commands.add_parser(
        "serve", help="serve OpenAI's /v1/audio/transcriptions on Ray Serve (needs the `cluster` extra)"
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on (default 8000)")
    return parser


def main(argv: Sequence[str] | None = None, *, fast_exit: bool = False) -> int:
    """Run one command and return its exit status.

    With `fast_exit` (the `python -m bot` entry point), `transcribe` and `run` end the
    process themselves once they are done, skipping the interpreter's teardown, as mypy
    does: freeing torch's and transformers' millions of objects one at a time (and, for
    `run`, tidying up after the worker processes) takes most of a second and gives back
    nothing the kernel does not reclaim at exit anyway. By then `transcribe`'s output is
    flushed and its decode thread and ffmpeg are finished; `run` has stopped the bot: every
    worker reaped, the database closed, the event loop and its threads finished.
    """
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return EXIT_BAD_CONFIG
    if args.command == "download-model":
        return _download(settings)
    if args.command == "serve":
        return _serve(settings, args.host, args.port)
    if args.command == "run":
        status = _run(settings)
    else:
        try:
            status = _transcribe(settings, args)
            sys.stdout.flush()
        except BrokenPipeError:  # the reader left (`| head`): stop quietly, as the Python docs advise
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
            status = EXIT_OUTPUT_CLOSED
    if fast_exit:
        sys.stderr.flush()
        logging.shutdown()
        os._exit(status)
    return status


def _run(settings: Settings) -> int:
    if settings.telegram_bot_token is None:
        print(
            "TELEGRAM_BOT_TOKEN is not set: put the token from @BotFather in .env (see .env.example).",
            file=sys.stderr,
        )
        return EXIT_BAD_CONFIG
    try:
        if settings.asr_backend == "local":  # a cluster backend runs no model here
            from bot.execution.local.forkserver import start_forkserver

            start_forkserver()  # the workers' imports, on another core while this process imports the bot
        with collector_paused():
            from bot.app import run_bot

        run_bot(settings)
    except VoiceBotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return 0


def _serve(settings: Settings, host: str, port: int) -> int:
    """The cluster side; Ray is imported only from here, so nothing else needs the extra."""
    import importlib.util

    if importlib.util.find_spec("ray") is None:
        print("error: `serve` needs Ray Serve: pip install -e '.[cluster]'", file=sys.stderr)
        return EXIT_BAD_CONFIG
    from bot.execution.ray.app import serve_forever

    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        serve_forever(settings, host=host, port=port)
    except VoiceBotError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_CONFIG
    return 0


def _download(settings: Settings) -> int:
    """Fetch and load-check every model the bot would load: ASR_MODELS' (or ASR_MODEL) and PUNCTUATION_MODEL."""
    from bot.asr.loading import download_model, load_model
    from bot.asr.punctuation import load_punctuator
    from bot.asr.routing import models_to_load

    for name in models_to_load(settings.model_table()):
        try:
            path = download_model(name)
            load_model(str(path), attention=settings.asr_attention)
        except Exception as exc:  # noqa: BLE001 - one line for any download failure
            print(f"error: could not download ASR_MODEL={name!r}: {exc}".splitlines()[0], file=sys.stderr)
            return EXIT_BAD_CONFIG
        print(path)
    if settings.punctuation_model:
        try:
            path = download_model(settings.punctuation_model)
            load_punctuator(str(path))
        except Exception as exc:  # noqa: BLE001 - one line for any download failure
            print(f"error: could not download PUNCTUATION_MODEL={settings.punctuation_model!r}: {exc}".splitlines()[0],
                  file=sys.stderr)
            return EXIT_BAD_CONFIG
        print(path)
    return 0


def _transcribe(settings: Settings, args: argparse.Namespace) -> int:
    from bot.audio.decode import check_ffmpeg, decode_audio

    decode = partial(decode_audio, max_seconds=settings.max_audio_seconds, timeout=settings.ffmpeg_timeout_seconds,
                     memory_mb=settings.ffmpeg_memory_mb)
    # One thread decodes ahead: the first file while torch is imported and the model
    # loads (ffmpeg runs on the other core), each next one while the model runs. That
    # hides ffmpeg's start-up too, so no spare ffmpeg (AudioDecoder) is kept here.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="decode") as decoding:
        def decode_ahead(path: Path) -> Future[tuple[np.ndarray, float]]:
            return decoding.submit(_timed_decode, decode, path)

        try:
            check_ffmpeg()
            first = decode_ahead(args.files[0])
            with collector_paused():
                import torch

                from bot.asr.recognizer import load_recognizer
                from bot.execution.config import EngineConfig

                torch.set_num_threads(settings.asr_threads_per_worker or torch.get_num_threads())
                config = EngineConfig.from_settings(settings)
                recognizer = load_recognizer(config.model, config.recognizer, attention=config.attention)
        except VoiceBotError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_CONFIG
        return _transcribe_files(recognizer, decode_ahead, first, settings, args)


def _timed_decode(decode: Callable[[Path], np.ndarray], path: Path) -> tuple[np.ndarray, float]:
    """The file's samples and the seconds it took to decode them."""
    started = time.perf_counter()
    audio = decode(path)
    return audio, time.perf_counter() - started


def _transcribe_files(recognizer: Recognizer, decode_ahead: Callable[[Path], Future[tuple[np.ndarray, float]]],
                      first: Future[tuple[np.ndarray, float]], settings: Settings, args: argparse.Namespace) -> int:
    """Print each file's transcript; a file that cannot be read is reported and skipped."""
    from bot.asr.formats import to_srt
    from bot.asr.types import TextOptions

    options = TextOptions(model=settings.asr_model)
    status = 0
    pending = first
    for index, path in enumerate(args.files):
        current = pending
        if index + 1 < len(args.files):  # queued behind this one: one decoded file ahead, no more
            pending = decode_ahead(args.files[index + 1])
        try:
            audio, decoded = current.result()
            result = recognizer.transcribe(audio, options)
            result = dataclasses.replace(result, decode_seconds=decoded)
        except VoiceBotError as exc:
            from bot.telegram.replies import failure

            print(f"error: {path}: {failure(exc)}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        if len(args.files) > 1 and not args.json:
            print(f"==> {path} <==")
        if args.json:
            print(json.dumps({"file": str(path), **result.to_dict()}))
        elif args.words:
            for word in result.words:
                print(f"{word.start:.2f}\t{word.end:.2f}\t{word.word}")
        elif args.srt:
            print(to_srt(result.words))
        else:
            print(result.raw_text if args.raw else result.text)
    return status
