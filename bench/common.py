"""Shared pieces of the benchmarks: test audio, child processes, statistics, result rows.

Everything heavy (torch, the model) is kept out of the orchestrating process: the
benchmarks that load a model run it in a fresh child (`python -m bench.child ...`), so
one benchmark's memory, threads or compiled graphs never leak into the next one's
figures, and peak RSS can be read per child with `wait4`.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
CACHE = BENCH_DIR / ".cache"
AUDIO_DIR = CACHE / "audio"
CORPUS = ROOT.parent / "shared" / "corpus"
PYTHON = sys.executable
SAMPLE_RATE = 16_000
#: Idle time before a timed run (untimed): most voice notes reach an idle bot, and that is
#: when a worker starts its spare ffmpeg (`bot.audio.decode.AudioDecoder.prepare`).
IDLE_SECONDS = 0.3

# Sentences for espeak-ng when the real-speech corpus is absent (varied phonemes, ~20 s).
_ESPEAK_TEXT = (
    "The quick brown fox jumps over the lazy dog. Please call Stella and ask her to bring "
    "these things with her from the store: six spoons of fresh snow peas, five thick slabs "
    "of blue cheese, and maybe a snack for her brother Bob. We also need a small plastic "
    "snake and a big toy frog for the kids. She can scoop these things into three red bags, "
    "and we will go meet her Wednesday at the train station."
)


# ----------------------------------------------------------------------------------------
# Run options
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What every benchmark is told: the model, the thread budget and how many repetitions."""

    model_dir: Path
    quick: bool
    threads: int

    def reps(self, full: int, quick: int) -> int:
        """Repetitions for one figure: fewer with --quick, never fewer than one."""
        return max(1, quick if self.quick else full)


def default_settings(**overrides: Any) -> Any:
    """The code defaults of `bot.settings.Settings`, ignoring the environment and any .env file.

    `model_construct` skips the settings sources, so a developer's local ASR_* variables
    cannot change what "default" means in a benchmark.
    """
    from bot.settings import Settings

    return Settings.model_construct(**overrides)


# ----------------------------------------------------------------------------------------
# Result rows
# ----------------------------------------------------------------------------------------


@dataclass
class Row:
    """One line of the printed table; `passed` is None where the figure has no target."""

    bench: str
    metric: str
    value: str
    n: int | None = None
    target: str = ""
    passed: bool | None = None

    @property
    def verdict(self) -> str:
        if self.value == "not run":
            return "—"
        return "" if self.passed is None else ("PASS" if self.passed else "FAIL")


@dataclass
class Section:
    """What one benchmark returns: table rows, plus every raw figure for results.json."""

    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)

    def add(self, row: Row) -> None:
        self.rows.append(row)


def not_run(bench: str, why: str) -> Section:
    """A benchmark that could not run says so in the table instead of failing the whole run."""
    print(f"{bench}: not run ({why})", flush=True)
    return Section(rows=[Row(bench, why, "not run")], data={"not_run": why})


# ----------------------------------------------------------------------------------------
# Statistics
# ----------------------------------------------------------------------------------------


def machine_line(machine: dict[str, Any]) -> str:
    """The CPU, its relevant flags and torch's capability report: printed beside every table, so
    figures from different machines are never compared blind."""
    flags = ", ".join(machine["cpu_flags"]) or "none of avx2/avx512/vnni/bf16/amx"
    return (f"{machine['cpu_model']} [{machine['cpu_id']}] ({flags}; "
            f"torch CPU capability {machine['torch_cpu_capability']}), "
            f"{machine['logical_cpus']} CPUs, torch {machine['torch']}")


def native_bf16(support: dict[str, Any]) -> bool:
    """Whether the CPU support torch reports (bench.child's `_cpu_support`) includes native bf16."""
    return support.get("avx512_bf16") is True or support.get("amx_tile") is True


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    return float(np.percentile(np.asarray(values, dtype=float), q))


def fmt_ratio(value: float) -> str:
    return f"{value:.2f}×"


# ----------------------------------------------------------------------------------------
# Child processes
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChildRun:
    """A finished child: its output, wall time and the peak RSS of it and its descendants."""

    returncode: int
    stdout: str
    stderr: str
    wall_seconds: float
    peak_rss_mb: float

    def json(self) -> dict[str, Any]:
        """The last stdout line, which every bench child prints as one JSON object."""
        if self.returncode != 0:
            raise RuntimeError(f"child failed ({self.returncode}): {self.stderr.strip()[-2000:]}")
        for line in reversed(self.stdout.splitlines()):
            if line.startswith("{"):
                return json.loads(line)
        raise RuntimeError(f"child printed no JSON: {self.stdout[-500:]!r} {self.stderr[-1000:]!r}")


def child_env(**extra: str) -> dict[str, str]:
    """The environment for children: this one, with the repo importable and quiet libraries."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env.setdefault("TOKENIZERS_PARALLELISM", "false")
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_VERBOSITY", "error")
    env.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    env.update(extra)
    return env


def stop_group(process: subprocess.Popen[Any], grace: float) -> None:
    """SIGTERM the process group a child leads (started with `start_new_session`), SIGKILL it after `grace` s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


def run_child(argv: Sequence[str], *, env: dict[str, str] | None = None, timeout: float = 1200.0,
              stream_stderr: bool = False) -> ChildRun:
    """Run `argv` to completion and read its resource usage with `wait4`.

    `wait4` gives this one child's peak RSS (the kernel reports the larger of the child's
    own and its waited-for descendants', e.g. ffmpeg), whereas RUSAGE_CHILDREN would be
    the maximum over every child this process ever had. Output goes to temporary files
    so a chatty child can never block on a full pipe while we wait; `stream_stderr`
    passes stderr through instead, for long children that report progress there.
    """
    out_path = CACHE / f"child-{os.getpid()}-{threading.get_ident()}.out"
    err_path = out_path.with_suffix(".err")
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(out_path, "w+b") as out, open(err_path, "w+b") as err:
        started = time.perf_counter()
        proc = subprocess.Popen(list(argv), stdout=out, stderr=None if stream_stderr else err,
                                stdin=subprocess.DEVNULL, env=env or child_env(), cwd=ROOT)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
        wall = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
    out_path.unlink(missing_ok=True)
    err_path.unlink(missing_ok=True)
    return ChildRun(proc.returncode, stdout, stderr, wall, usage.ru_maxrss / 1024.0)


def bench_child(task: str, *args: str, timeout: float = 1200.0, stream_stderr: bool = False,
                env: dict[str, str] | None = None) -> ChildRun:
    """Run one task of `bench.child` in a fresh interpreter."""
    return run_child([PYTHON, "-m", "bench.child", task, *args], env=env, timeout=timeout,
                     stream_stderr=stream_stderr)


# ----------------------------------------------------------------------------------------
# Model and audio fixtures
# ----------------------------------------------------------------------------------------


def ensure_base_model() -> Path:
    """The random-weight wav2vec2-base (real architecture and vocabulary), built once and reused."""
    directory = CACHE / "base-model"
    if not (directory / "model.safetensors").exists():
        print("building the random wav2vec2-base model into bench/.cache/base-model ...", flush=True)
        result = run_child([PYTHON, "-c", (
            "import sys; from pathlib import Path; from tests.model_factory import build_random_ctc_model; "
            "build_random_ctc_model(Path(sys.argv[1]), size='base')"
        ), str(directory)])
        if result.returncode != 0:
            raise RuntimeError(f"could not build the base model: {result.stderr[-2000:]}")
    return directory


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-nostdin", "-hide_banner", "-loglevel", "error", "-y", *args], check=True)


def _decode_any(path: Path) -> np.ndarray:
    """Any corpus file to 16 kHz mono float32 (fixture building only; trusted input)."""
    raw = subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(path), "-ac", "1", "-ar", str(SAMPLE_RATE),
         "-f", "f32le", "pipe:1"],
        check=True, capture_output=True,
    ).stdout
    return np.frombuffer(raw, dtype="<f4")


def speech_source() -> Path:
    """A long 16 kHz WAV of speech that every test file is cut from.

    Real speech from ../shared/corpus (all clips back to back) when it is there, so the
    Opus encoder and the decoder see the signal they see in production; espeak-ng
    otherwise. The random model does not care what is said, but the codec does.
    """
    target = AUDIO_DIR / "speech-16k.wav"
    if target.exists():
        return target
    AUDIO_DIR.mkdir(parents=True, exist_ok=True)
    manifest = CORPUS / "manifest.tsv"
    pieces: list[np.ndarray] = []
    if manifest.exists():
        for line in manifest.read_text().splitlines()[1:]:
            name = line.split("\t", 1)[0]
            if name and not name.endswith(".raw") and (CORPUS / name).exists():
                pieces.append(_decode_any(CORPUS / name))
                pieces.append(np.zeros(SAMPLE_RATE // 4, dtype=np.float32))  # a breath between speakers
    if not pieces:
        spoken = AUDIO_DIR / "espeak.wav"
        subprocess.run(["espeak-ng", "-s", "160", "-w", str(spoken), _ESPEAK_TEXT], check=True)
        pieces.append(_decode_any(spoken))
        spoken.unlink()
    raw = AUDIO_DIR / "speech-16k.f32"
    np.concatenate(pieces).astype("<f4").tofile(raw)
    _ffmpeg("-f", "f32le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", str(raw), "-c:a", "pcm_s16le", str(target))
    raw.unlink()
    return target


def voice_note(seconds: float, *, offset: float = 0.0) -> Path:
    """An OGG/Opus 48 kHz mono file of `seconds` of speech, like a Telegram voice note.

    Cut from the speech source starting at `offset` (looping past its end), cached by
    length and offset.
    """
    target = AUDIO_DIR / f"note-{seconds:g}s-at-{offset:g}.ogg"
    if not target.exists():
        source = speech_source()
        tmp = target.with_suffix(".tmp.ogg")
        _ffmpeg("-stream_loop", "-1", "-ss", f"{offset:.3f}", "-i", str(source), "-t", f"{seconds:.3f}",
                "-ac", "1", "-ar", "48000", "-c:a", "libopus", "-b:a", "32k", "-application", "voip", str(tmp))
        tmp.replace(target)
    return target


def voice_note_set(count: int, *, low: float = 3.0, high: float = 30.0, seed: int = 1234) -> list[tuple[Path, float]]:
    """`count` voice notes of seeded random lengths in [low, high] s, each cut from a different place."""
    rng = random.Random(seed)
    notes = []
    for _ in range(count):
        seconds = round(rng.uniform(low, high), 1)
        offset = round(rng.uniform(0.0, 300.0), 1)
        notes.append((voice_note(seconds, offset=offset), seconds))
    return notes


# ----------------------------------------------------------------------------------------
# Machine
# ----------------------------------------------------------------------------------------


#: The /proc/cpuinfo flags that say what the figures can reach: vector width, VNNI, bf16, AMX.
RELEVANT_CPU_FLAGS = frozenset({"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16", "amx_tile",
                                "amx_int8", "avx512_fp16"})


@dataclass(frozen=True)
class CpuInfo:
    """The first CPU as /proc/cpuinfo names it. A VM's model name can be as vague as "AMD EPYC"
    for several generations; vendor, family and model number tell them apart."""

    model: str
    flags: frozenset[str]
    #: "cpu MHz": in a VM, the nominal clock.
    mhz: float | None
    vendor: str
    family: int | None
    model_number: int | None

    @property
    def half_width_avx512(self) -> bool:
        """AMD Zen 4 (family 0x19 with AVX-512) runs each 512-bit instruction on two 256-bit
        halves: per cycle it does what AVX2 does on a core with two FMA units."""
        return self.vendor == "AuthenticAMD" and self.family == 0x19 and "avx512f" in self.flags


def cpu_info() -> CpuInfo:
    """The first CPU's identity, its relevant flags and its clock."""
    fields: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            if not key.strip():
                break  # the end of the first CPU's block
            fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass

    def number(key: str) -> int | None:
        return int(fields[key]) if fields.get(key, "").isdigit() else None

    return CpuInfo(
        model=fields.get("model name", "unknown"),
        flags=frozenset(fields.get("flags", "").split()) & RELEVANT_CPU_FLAGS,
        mhz=float(fields["cpu MHz"]) if "cpu MHz" in fields else None,
        vendor=fields.get("vendor_id", "unknown"),
        family=number("cpu family"),
        model_number=number("model"),
    )


def machine_info(threads: int) -> dict[str, Any]:
    """What the figures depend on: CPU, cores, the bf16/AMX flags, library versions, load."""
    from importlib.metadata import PackageNotFoundError, version

    cpu = cpu_info()

    def ver(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            return "absent"

    capability = subprocess.run(
        [PYTHON, "-c", "import torch; print(torch.backends.cpu.get_cpu_capability())"],
        capture_output=True, text=True, timeout=120,
    ).stdout.strip() or "unknown"
    return {
        "cpu_model": cpu.model,
        "cpu_id": f"{cpu.vendor} family {cpu.family} model {cpu.model_number}",
        "torch_cpu_capability": capability,
        "logical_cpus": os.cpu_count(),
        "affinity_cpus": len(os.sched_getaffinity(0)),
        "cpu_flags": sorted(cpu.flags),
        "cpu_mhz": cpu.mhz,
        "torch": ver("torch"),
        "transformers": ver("transformers"),
        "python": sys.version.split()[0],
        "threads": threads,
        "ffmpeg": shutil.which("ffmpeg") is not None,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "loadavg_at_start": [round(x, 2) for x in os.getloadavg()],
    }
