"""`python -m bot ...` as a user runs it: real processes, real files, the tiny model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.asr.recognizer import Recognizer
from tests.conftest import E2E_CHUNK_SECONDS, E2E_STRIDE_SECONDS, REPO, engine_text
from tests.model_factory import EXACT_COMPUTE_TYPE

pytestmark = pytest.mark.slow


def cli_environment(model: Path, **env: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("ASR_", "TELEGRAM_"))}
    environment.update({"ASR_MODEL": str(model), "ASR_COMPUTE_TYPE": EXACT_COMPUTE_TYPE,
                        "ASR_CHUNK_SECONDS": str(E2E_CHUNK_SECONDS),
                        "ASR_STRIDE_SECONDS": str(E2E_STRIDE_SECONDS), **env})
    return environment


def run_cli(*args: str, model: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=REPO, env=cli_environment(model, **env),
                          capture_output=True, text=True, timeout=300)


def test_transcribe_prints_the_transcript(tiny_model: Path, speech_ogg: Path, recognizer: Recognizer) -> None:
    done = run_cli("transcribe", str(speech_ogg), model=tiny_model)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == engine_text(recognizer, speech_ogg)  # the same chunking
    assert done.stderr == ""  # no progress bars or warnings around the transcript


def test_transcribe_many_files_and_output_formats(tiny_model: Path, speech_ogg: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.ogg"
    broken.write_bytes(b"not audio at all" * 100)
    done = run_cli("transcribe", str(speech_ogg), str(broken), str(speech_ogg), model=tiny_model)
    assert done.returncode == 1
    assert done.stdout.count(f"==> {speech_ogg} <==") == 2
    [error] = done.stderr.strip().splitlines()[-1:]
    assert error.startswith(f"error: {broken}: ") and "couldn't read any audio" in error

    as_json = json.loads(run_cli("transcribe", "--json", str(speech_ogg), model=tiny_model).stdout)
    assert as_json["file"] == str(speech_ogg) and as_json["options"]["chunk_seconds"] == 4
    assert as_json["duration"] == pytest.approx(5, abs=2) and as_json["words"]

    words = run_cli("transcribe", "--words", str(speech_ogg), model=tiny_model).stdout.splitlines()
    start, end, word = words[0].split("\t")
    assert float(start) <= float(end) and word == as_json["words"][0]["word"]

    srt = run_cli("transcribe", "--srt", str(speech_ogg), model=tiny_model).stdout
    assert srt.startswith("1\n00:00:") and "-->" in srt


def test_output_closed_early_ends_quietly(tiny_model: Path, speech_ogg: Path) -> None:
    """`python -m bot transcribe ... | head -0`: no traceback, the status a shell gives cat."""
    with subprocess.Popen([sys.executable, "-m", "bot", "transcribe", str(speech_ogg), str(speech_ogg)], cwd=REPO,
                          env=cli_environment(tiny_model), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True) as reader_gone:
        assert reader_gone.stdout is not None and reader_gone.stderr is not None
        reader_gone.stdout.close()
        stderr = reader_gone.stderr.read()
    assert reader_gone.returncode == 141
    assert stderr == ""


def test_configuration_errors_are_one_line(tiny_model: Path, speech_ogg: Path, tmp_path: Path) -> None:
    bad = run_cli("transcribe", str(speech_ogg), model=tiny_model, ASR_WORKERS="0")
    assert bad.returncode == 2
    assert bad.stderr.strip() == "Invalid setting ASR_WORKERS: Input should be greater than or equal to 1 (got '0')"

    missing = run_cli("transcribe", str(speech_ogg), model=tmp_path / "nowhere")
    assert missing.returncode == 2 and "ASR_MODEL=" in missing.stderr
    assert "Traceback" not in missing.stderr

    no_token = run_cli("run", model=tiny_model, TELEGRAM_BOT_TOKEN="")
    assert no_token.returncode == 2
    assert no_token.stderr.strip().splitlines() == [
        "TELEGRAM_BOT_TOKEN is not set: put the token from @BotFather in .env (see .env.example)."
    ]

    long_tmp = tmp_path / ("t" * 100)
    long_tmp.mkdir()
    socket_too_long = run_cli("run", model=tiny_model, TELEGRAM_BOT_TOKEN="123:abc", TMPDIR=str(long_tmp))
    assert socket_too_long.returncode == 2
    assert socket_too_long.stderr.strip().splitlines() == [
        f"error: the temporary directory {long_tmp} is too long for the model workers' socket (a Unix socket path"
        " fits 107 bytes, and it needs 32 more): set TMPDIR to a shorter directory"
    ]

    empty_bin = tmp_path / "bin"
    empty_bin.mkdir()
    (empty_bin / "python").symlink_to(sys.executable)
    no_ffmpeg = run_cli("transcribe", str(speech_ogg), model=tiny_model, PATH=str(empty_bin))
    assert no_ffmpeg.returncode == 2 and "ffmpeg" in no_ffmpeg.stderr
    assert len(no_ffmpeg.stderr.strip().splitlines()) == 1


def test_download_model_with_a_local_directory(tiny_model: Path) -> None:
    done = run_cli("download-model", model=tiny_model)
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()) == tiny_model
