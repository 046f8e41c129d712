"""Turn an uploaded file into 16 kHz mono float32 samples, safely.

Everything a chat user sends is hostile until proven otherwise, and ffmpeg is a very
large attack surface: it can follow playlists to URLs and local files, and a few KB of
FLAC can expand to gigabytes of PCM. So ffmpeg and ffprobe are never run the way
`pydub.AudioSegment.from_file` runs them (no timeout, no limits, every demuxer enabled).
Instead every run here:

* reads only the given file (`-protocol_whitelist file`) through a fixed list of
  ordinary audio/video demuxers (`-format_whitelist`), so HLS, DASH, ffconcat, image
  sequences and other formats that open *other* files or URLs are refused at once;
* writes nothing but a pipe (RLIMIT_FSIZE 0), and reads no stdin, except a spare
  (`AudioDecoder`), which reads Ogg from its stdin and nothing else;
* runs in its own process group under address-space, CPU-time and wall-clock limits,
  and is killed (with anything it spawned) when it overruns;
* has its output cut off just past `max_seconds`, and its byte count checked, so a
  header that lies or a decompression bomb cannot fill memory.

ffmpeg does the resampling and downmix itself (`-ar 16000 -ac 1`) and writes raw
float32 to a pipe that is read straight into the returned array: no second resampling
pass and no intermediate WAV. Its stderr never reaches users; a short tail is logged.

Speed: starting one of these processes costs ~55 ms (the Debian build links ~200
shared libraries), as much as decoding a 30 s voice note. So a voice note's length is
read from its Ogg pages (`bot.audio.ogg`) instead of asking ffprobe, and for other files the
probe and the decode run side by side rather than one after the other. Opus decoding
is single-threaded, so a long recording in a container that seeks to the exact sample
is decoded in pieces by several ffmpeg processes at once; each piece after the first
starts a second early and drops that second, so the decoder has settled by the first
sample kept. And a long-lived caller (a model worker) holds an `AudioDecoder`, which keeps
one ffmpeg started ahead of time, waiting on its stdin for the next voice note.
"""

from __future__ import annotations

import json
import logging
import math
import os
import resource
import selectors
import shutil
import signal
import subprocess
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import IO, Any

import numpy as np

with warnings.catch_warnings():
    # pydub warns at import when ffmpeg is missing; check_ffmpeg() reports that properly.
    warnings.simplefilter("ignore", RuntimeWarning)
    from pydub import AudioSegment

from bot.audio.ogg import opus_duration, pages_through
from bot.errors import AudioDecodeError, AudioTooLongError, FFmpegMissingError

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000

_SAMPLE_DTYPE = np.dtype("<f4")  # what `-f f32le` writes
_BYTES_PER_SECOND = SAMPLE_RATE * _SAMPLE_DTYPE.itemsize
_DEFAULT_MEMORY_MB = 1024
_INSTALL_HINT = "install ffmpeg (e.g. `apt-get install ffmpeg` or `brew install ffmpeg`), which provides ffprobe too"

# Containers people actually send: voice notes (ogg), music and recorder apps
# (mp3, m4a, aac, wav, flac, ...), video notes and videos (mov/mp4, matroska/webm, ...),
# plus raw codec streams ffmpeg recognises by content. Deliberately absent: every
# demuxer that opens further files or URLs named inside the input (hls, dash, concat,
# image2, webm_dash_manifest, ...) and device/text/metadata demuxers.
# ffmpeg matches each entry against every alias of a demuxer ("mov" covers mp4/m4a/3gp).
_ALLOWED_DEMUXERS = (
    "aac", "ac3", "aiff", "amr", "amrnb", "amrwb", "ape", "asf", "au", "avi", "caf",
    "dts", "eac3", "flac", "flv", "loas", "matroska", "mov", "mp3", "mpc", "mpc8",
    "mpeg", "mpegts", "ogg", "tta", "voc", "w64", "wav", "wv",
)  # fmt: skip
# Input options shared by ffprobe and ffmpeg: only the file itself, only those demuxers,
# and single-threaded decoders. Both tools decode a few frames of every stream (video
# too) to fill in stream info, and with one thread per core a 4K video alone can
# exhaust the address-space limit on a many-core server; audio gains nothing from threads.
_INPUT_HARDENING = (
    "-protocol_whitelist", "file",
    "-format_whitelist", ",".join(_ALLOWED_DEMUXERS),
    "-threads", "1",
)  # fmt: skip

# The input of a spare ffmpeg (`AudioDecoder`): Ogg and nothing else, from stdin only.
_SPARE_INPUT_HARDENING = (
    "-protocol_whitelist", "pipe",
    "-threads", "1",
    "-f", "ogg",
)  # fmt: skip

# ffprobe prints a few hundred bytes of JSON; a file crafted with thousands of streams
# must not make the probe itself a memory problem.
_PROBE_OUTPUT_LIMIT = 1 << 20
_READ_CHUNK = 1 << 16
_STDERR_TAIL_BYTES = 2048
# ffmpeg is asked for this much more than `max_seconds`, so audio exactly at the limit
# can be told apart from audio that goes past it.
_CAP_SLACK_SECONDS = 1.0
# Parallel decoding of long files: pieces of at least this length (shorter ones would
# spend more on starting ffmpeg than they save), each after the first starting this many
# whole seconds early. Whole seconds keep every piece boundary on an exact sample.
_PIECE_MIN_SECONDS = 30
_PIECE_PREROLL_SECONDS = 1
# A spare ffmpeg (AudioDecoder) taking the first piece has no start-up left to do: it gets
# about what an ffmpeg decodes in the ~60 ms another one takes to start, so all end together.
_SPARE_HEAD_START_SECONDS = 40
# ... and is fed the pages up to this far past its piece, so it surely reaches its end.
_SPARE_OVERRUN_SECONDS = 1
# Demuxers whose input seeking (`-ss` before `-i`) was checked to land on the exact
# sample (tests/test_audio.py). Not so: MP3 and raw streams (seek by estimated bitrate),
# AAC in MP4 (encoder priming is not re-applied after a seek) and Matroska (millisecond
# timestamps cut pieces a few samples short); those are decoded in one piece.
_SAMPLE_ACCURATE_FORMATS = frozenset({"ogg", "flac", "wav"})


@dataclass(frozen=True)
class AudioInfo:
    """What a cheap probe of the container tells us, before any decoding."""

    duration: float  # seconds; 0.0 when the container does not say
    format_name: str


@dataclass(frozen=True)
class _RunResult:
    returncode: int | None  # None when the process was killed for overflowing
    size: int  # bytes of stdout read into the caller's buffers (one more if it overflowed them)
    stderr_tail: str
    overflowed: bool  # stdout went past the buffers and the process was killed


@dataclass(frozen=True)
class _Feed:
    """What a spare ffmpeg is given on its stdin: the first `size` bytes of `file`."""

    file: IO[bytes]
    size: int


@dataclass(frozen=True)
class _SparePiece:
    """A spare ffmpeg taking a long voice note's first piece: it gets `size` bytes of the
    file, which hold `seconds` of audio by their pages' granule positions."""

    proc: subprocess.Popen[bytes]
    size: int
    seconds: float


class _Timeout(Exception):
    """The wall-clock deadline passed (internal; becomes AudioDecodeError)."""


def check_ffmpeg() -> None:
    """Raise FFmpegMissingError with a one-line install hint if ffmpeg or ffprobe is not on PATH.

    Called once at start-up, so a missing install is a clear configuration error
    rather than every voice note failing with "couldn't read any audio".
    """
    _binary("ffmpeg")
    _binary("ffprobe")


def decode_audio(
    path: Path, *, max_seconds: float, timeout: float = 120.0, memory_mb: int = 1024, processes: int | None = None
) -> np.ndarray:
    """Decode `path` to 16 kHz mono float32 (1-D, C-contiguous, finite, within [-1, 1]).

    Reads an Ogg Opus file's length from its pages, or probes any other container while
    ffmpeg starts, and raises AudioTooLongError (killing that ffmpeg before it decodes
    more than a pipe's worth) when the container says the audio is longer than
    `max_seconds`. Because containers can lie (or not say), decoding is also cut off
    just past `max_seconds` of output, and reaching the cap raises AudioTooLongError too.
    `timeout` bounds probe and decode together; `memory_mb` is each ffmpeg process's
    address-space limit; a long file is decoded by up to `processes` ffmpeg processes at
    once (default: the CPUs this process may run on).
    Silence is valid and comes back as zeros; a file with no decodable samples raises
    AudioDecodeError. A truncated file returns whatever part of it decodes.
    """
    return _decode(path, max_seconds=max_seconds, timeout=timeout, memory_mb=memory_mb, processes=processes,
                   take_spare=lambda: None)


class AudioDecoder:
    """`decode_audio` with its limits bound, keeping one ffmpeg started for the next voice note.

    Starting ffmpeg takes ~55 ms, about as long as decoding a 30 s voice note, so on a
    short note it is most of the decode. A worker calls `prepare()` when it goes idle,
    which starts a *spare* ffmpeg that loads its libraries and then waits on its stdin;
    the next voice note decoded in one piece (Ogg Opus, not long enough to split) is
    written into it, so no start-up is left on the note's path. The spare runs the same
    command under the same limits as any decode, except that it reads Ogg from stdin and
    nothing else (no file, no other format), and it exits when its stdin closes, so it
    never outlives its owner, even one killed by SIGKILL. Other files, and any call while
    no spare is ready, are decoded exactly as `decode_audio` does. Output is identical
    either way (tests/test_audio.py). Costs one idle ffmpeg: ~45 MB RSS, ~9 MB of it private.
    Safe to share between threads: one of them gets the spare, the others start their own.
    """

    def __init__(self, *, max_seconds: float, timeout: float = 120.0, memory_mb: int = 1024,
                 processes: int | None = None) -> None:
        self.max_seconds = max_seconds
        self.timeout = timeout
        self.memory_mb = memory_mb
        self.processes = processes
        self._lock = threading.Lock()
        self._spare: subprocess.Popen[bytes] | None = None

    def decode(self, path: Path) -> np.ndarray:
        """Same contract as `decode_audio` with this decoder's limits."""
        return _decode(path, max_seconds=self.max_seconds, timeout=self.timeout, memory_mb=self.memory_mb,
                       processes=self.processes, take_spare=self._take_spare)

    def prepare(self) -> None:
        """Start the spare ffmpeg unless one is waiting already (call when idle: it costs ~55 ms of CPU)."""
        with self._lock:
            if self._spare is not None:
                if self._spare.poll() is None:
                    return
                _discard(self._spare)
                self._spare = None
            argv = _decode_argv(None, seconds=self.max_seconds + _CAP_SLACK_SECONDS)
            try:
                self._spare = _spawn(argv, cpu_seconds=self.timeout, memory_mb=self.memory_mb, stdin=subprocess.PIPE)
            except FFmpegMissingError as exc:  # the next decode reports it to its caller
                logger.warning("no spare ffmpeg: %s", exc)

    def close(self) -> None:
        """Stop the spare, if any."""
        spare = self._take_spare()
        if spare is not None:
            _discard(spare)

    def _take_spare(self) -> subprocess.Popen[bytes] | None:
        """The waiting spare, now the caller's to feed and to end; None when there is none alive."""
        with self._lock:
            spare, self._spare = self._spare, None
        if spare is not None and spare.poll() is not None:
            _discard(spare)
            return None
        return spare

    def __enter__(self) -> AudioDecoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _decode(
    path: Path, *, max_seconds: float, timeout: float, memory_mb: int, processes: int | None,
    take_spare: Callable[[], subprocess.Popen[bytes] | None],
) -> np.ndarray:
    """decode_audio, taking a spare ffmpeg (see AudioDecoder) for a voice note, whole or its first piece."""
    deadline = time.monotonic() + timeout
    one_pass = _decode_argv(path, seconds=max_seconds + _CAP_SLACK_SECONDS)
    with ExitStack() as stack:
        first = None
        opus_seconds = opus_duration(path)
        if opus_seconds is not None:  # a voice note: its pages tell its length, no ffprobe needed
            info = AudioInfo(duration=opus_seconds, format_name="ogg")
        else:
            first = stack.enter_context(_started(one_pass, path, deadline=deadline, memory_mb=memory_mb))
            info = _probe(path, deadline=deadline, memory_mb=memory_mb)
        if info.duration > max_seconds:
            raise AudioTooLongError(info.duration, max_seconds)
        pieces = _plan_pieces(info, max_seconds=max_seconds, processes=processes or _usable_cpus())
        if len(pieces) == 1:
            feed = None
            if first is None and (spare := take_spare()) is not None:
                first = stack.enter_context(_owned(spare))
                feed = _Feed(stack.enter_context(open(path, "rb")), os.path.getsize(path))
            elif first is None:
                first = stack.enter_context(_started(one_pass, path, deadline=deadline, memory_mb=memory_mb))
            return _one_pass_samples(first, path, info=info, max_seconds=max_seconds, deadline=deadline, feed=feed)
        # A long voice note: a spare, already started, takes a longer first piece.
        spare_piece = None
        if opus_seconds is not None:
            ahead = _plan_pieces(info, max_seconds=max_seconds, processes=len(pieces),
                                 head_start=_SPARE_HEAD_START_SECONDS)
            pages = pages_through(path, ahead[1].start + _SPARE_OVERRUN_SECONDS)
            if pages is not None and (spare := take_spare()) is not None:
                pieces, spare_piece = ahead, _SparePiece(spare, *pages)
    # A long file: `first`, if started, has barely begun and is killed; the pieces decode it.
    joined = _decode_pieces(path, pieces, info=info, max_seconds=max_seconds, deadline=deadline, memory_mb=memory_mb,
                            spare=spare_piece)
    if joined is None:
        with _started(one_pass, path, deadline=deadline, memory_mb=memory_mb) as proc:
            return _one_pass_samples(proc, path, info=info, max_seconds=max_seconds, deadline=deadline)
    return joined


def _usable_cpus() -> int:
    """CPUs this process may run on: its affinity mask (taskset, cpusets) where the OS has one."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS
        return os.cpu_count() or 1


def _one_pass_samples(
    proc: subprocess.Popen[bytes], path: Path, *, info: AudioInfo, max_seconds: float, deadline: float,
    feed: _Feed | None = None,
) -> np.ndarray:
    """All samples one started ffmpeg decodes, or why there are none (too long, unreadable).

    They are read straight into an array as long as the cap allows; pages of it that
    are never written are never touched, so a short note costs only its own length.
    """
    samples = np.empty(int(max_seconds * SAMPLE_RATE), dtype=_SAMPLE_DTYPE)
    result = _output(proc, path, deadline=deadline, into=[_bytes_of(samples)], feed=feed)
    if result.overflowed:
        raise AudioTooLongError(max(info.duration, result.size / _BYTES_PER_SECOND), max_seconds)
    _require_success(result, path, "ffmpeg")
    return _scrubbed(samples[: result.size // _SAMPLE_DTYPE.itemsize], path)


@dataclass(frozen=True)
class _Piece:
    """One stretch of a recording decoded by its own ffmpeg process."""

    start: int  # whole second where the samples kept from this piece begin
    skip: int  # seconds decoded before `start` and dropped, for the decoder to settle
    end: int | None  # whole second where the next piece begins; None for the last piece
    max_seconds: float  # the recording's overall cap

    @property
    def limit(self) -> int:
        """Bytes this piece delivers: exactly its length, or up to the overall cap for the last one."""
        if self.end is None:
            return int((self.max_seconds - self.start + self.skip) * SAMPLE_RATE) * _SAMPLE_DTYPE.itemsize
        return (self.end - self.start + self.skip) * _BYTES_PER_SECOND

    def argv(self, path: Path) -> list[str]:
        end = self.end if self.end is not None else self.max_seconds + _CAP_SLACK_SECONDS
        return _decode_argv(path, seconds=end - self.start + self.skip, seek=self.start - self.skip)


def _plan_pieces(info: AudioInfo, *, max_seconds: float, processes: int, head_start: float = 0) -> list[_Piece]:
    """Split a long recording into up to `processes` pieces of at least `_PIECE_MIN_SECONDS`,
    the first `head_start` seconds longer than the others (for an ffmpeg that is running already)."""
    seekable = bool(set(info.format_name.split(",")) & _SAMPLE_ACCURATE_FORMATS)
    count = max(1, min(processes, int(info.duration // _PIECE_MIN_SECONDS))) if seekable else 1
    starts = [0, *(round(head_start + (info.duration - head_start) * index / count) for index in range(1, count))]
    return [
        _Piece(start=start, skip=min(_PIECE_PREROLL_SECONDS, start), end=end, max_seconds=max_seconds)
        for start, end in zip(starts, [*starts[1:], None], strict=True)
    ]


def _decode_pieces(
    path: Path, pieces: list[_Piece], *, info: AudioInfo, max_seconds: float, deadline: float, memory_mb: int,
    spare: _SparePiece | None,
) -> np.ndarray | None:
    """Decode all pieces at once and join them, or None when only one pass can be trusted.

    Each piece but the last is cut by timestamp (`-t`), so a gap in the stream (a
    damaged page, a container whose duration is wrong) makes it come back short,
    while one pass would have closed the gap up; then None tells the caller to decode
    in one pass instead. With `spare` the first piece is a spare ffmpeg's: it is fed the
    file's pages up to a second past the piece (an intact chain, `bot.audio.ogg.pages_through`),
    must give back exactly the audio their granule positions promise, so a frame the
    decoder dropped shows, and is cut back to the piece. The last piece carries the
    overall output cap and raises AudioTooLongError past it. Each piece is read straight
    into its place in the result and scrubbed there by its own thread (numpy lets go of
    the GIL): no copies.
    """

    last = pieces[-1]
    joined = np.empty((last.start - last.skip) * SAMPLE_RATE + last.limit // _SAMPLE_DTYPE.itemsize,
                      dtype=_SAMPLE_DTYPE)

    def decode(proc: subprocess.Popen[bytes], piece: _Piece, feed: _Feed | None) -> tuple[_RunResult, int | None]:
        """Read one piece into its place in `joined` (its first `skip` seconds aside) and scrub
        it there; how it ended, and how many samples it gave if it came back whole."""
        skip = piece.skip * _BYTES_PER_SECOND
        start = piece.start * _BYTES_PER_SECOND
        into = [memoryview(bytearray(skip)), _bytes_of(joined)[start : start - skip + piece.limit]]
        if feed is None:
            result = _output(proc, path, deadline=deadline, into=into)
            whole = result.returncode == 0 and (piece is last or result.size == piece.limit)
        else:  # the spare's: it must give what its pages promise, the part past the piece into scratch
            assert spare is not None
            expected = round(spare.seconds * SAMPLE_RATE) * _SAMPLE_DTYPE.itemsize
            into.append(memoryview(bytearray(max(0, expected - piece.limit))))
            result = _output(proc, path, deadline=deadline, into=into, feed=feed)
            whole = result.returncode == 0 and result.size == expected >= piece.limit
        kept = (min(result.size, piece.limit) - skip) // _SAMPLE_DTYPE.itemsize
        if not whole or kept <= 0:
            return result, None
        first = piece.start * SAMPLE_RATE
        _scrubbed(joined[first : first + kept], path)
        return result, kept

    with ExitStack() as stack:
        feeds: list[_Feed | None] = [None] * len(pieces)
        procs = []
        if spare is not None:
            procs.append(stack.enter_context(_owned(spare.proc)))
            feeds[0] = _Feed(stack.enter_context(open(path, "rb")), spare.size)
        procs += [stack.enter_context(_started(piece.argv(path), path, deadline=deadline, memory_mb=memory_mb))
                  for piece in pieces[len(procs):]]
        with ThreadPoolExecutor(len(procs), thread_name_prefix="ffmpeg-piece") as threads:
            decoded = list(threads.map(decode, procs, pieces, feeds))
    last_result, last_kept = decoded[-1]
    if last_result.overflowed:
        seconds = last.start - last.skip + last_result.size / _BYTES_PER_SECOND
        raise AudioTooLongError(max(info.duration, seconds), max_seconds)
    for piece, (result, kept) in zip(pieces, decoded, strict=True):
        if kept is None:
            logger.info("decoding %s in pieces fell back to one pass (piece at %d s: exit %s, %d bytes)",
                        path, piece.start, result.returncode, result.size)
            return None
    assert last_kept is not None
    return joined[: last.start * SAMPLE_RATE + last_kept]


def _probe(path: Path, *, deadline: float, memory_mb: int) -> AudioInfo:
    argv = [
        _binary("ffprobe"),
        "-hide_banner",
        "-loglevel", "error",
        *_INPUT_HARDENING,
        "-show_entries", "format=format_name,duration:stream=codec_type,duration",
        "-of", "json",
        _input_url(path),
    ]  # fmt: skip
    report = bytearray(_PROBE_OUTPUT_LIMIT)
    with _started(argv, path, deadline=deadline, memory_mb=memory_mb) as proc:
        result = _output(proc, path, deadline=deadline, into=[memoryview(report)])
    if result.overflowed:
        logger.warning("ffprobe output for %s exceeded %d bytes", path, _PROBE_OUTPUT_LIMIT)
        raise AudioDecodeError("ffprobe output too large")
    _require_success(result, path, "ffprobe")
    return _parse_probe(report[: result.size], path)


def _parse_probe(raw: bytes | bytearray, path: Path) -> AudioInfo:
    """Turn ffprobe's JSON into AudioInfo; a file without an audio stream is an error."""
    try:
        report: dict[str, Any] = json.loads(raw)
    except ValueError as exc:
        raise AudioDecodeError(f"unreadable ffprobe output for {path.name}") from exc
    fmt = report.get("format") or {}
    audio = [s for s in report.get("streams") or [] if s.get("codec_type") == "audio"]
    if not audio:
        raise AudioDecodeError(f"no audio stream in {path.name}", problem="no_audio")
    duration = _seconds(fmt.get("duration")) or max(_seconds(s.get("duration")) for s in audio)
    return AudioInfo(duration=duration, format_name=str(fmt.get("format_name", "")))


def _seconds(value: object) -> float:
    """ffprobe durations are strings, "N/A" or absent; anything unusable means unknown (0.0)."""
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0
    return seconds if math.isfinite(seconds) and seconds > 0 else 0.0


def _decode_argv(path: Path | None, *, seconds: float, seek: int = 0) -> list[str]:
    """ffmpeg decoding `seconds` of the first audio stream from second `seek` to 16 kHz mono f32.

    It reads `path`, or with None, Ogg from its stdin (a spare, see AudioDecoder).
    """
    return [
        _binary("ffmpeg"),
        "-nostdin",  # no interactive keys; reading the input from stdin is unaffected
        "-hide_banner",
        "-nostats",
        "-loglevel", "error",
        *(_INPUT_HARDENING if path is not None else _SPARE_INPUT_HARDENING),
        *(("-ss", str(seek)) if seek else ()),
        "-i", _input_url(path) if path is not None else "pipe:0",
        "-map", "0:a:0",  # the first audio stream: a video's sound track, never a cover image
        "-vn", "-sn", "-dn",
        "-ac", "1",
        "-ar", str(SAMPLE_RATE),
        # ffmpeg's float downmix adds channels up (7.1 carrying one signal peaks at 4.4x
        # it); a normalised matrix keeps the mono mix in range instead of clipping it.
        "-rematrix_maxval", "1.0",
        "-t", f"{seconds:.3f}",
        # Without this ffmpeg writes every 20 ms Opus frame to the pipe on its own: 30,000
        # writes (and wake-ups of the reader) per 10 minutes, a fifth of the decode time.
        "-flush_packets", "0",
        "-f", "f32le",
        "pipe:1",
    ]  # fmt: skip


def _input_url(path: Path) -> str:
    """An explicit `file:` URL: a name like `http:x.ogg` or `-i` can never be read as something else."""
    return "file:" + os.fspath(Path(path).absolute())


def _binary(name: str) -> str:
    """Absolute path of ffmpeg/ffprobe, resolved per call so an uninstall is noticed.

    pydub's `AudioSegment.converter` is the knob for which ffmpeg to use (an operator may
    point it at a static build); ffprobe is looked up beside it. `shutil.which` rather
    than `pydub.utils.which`: pydub searches the current directory before PATH, which
    would run a planted `./ffmpeg`.
    """
    converter = shutil.which(AudioSegment.converter) or AudioSegment.converter
    if name == "ffmpeg":
        wanted = converter
    else:
        sibling = Path(converter).with_name(name)
        wanted = str(sibling) if Path(converter).is_absolute() and sibling.exists() else name
    found = shutil.which(wanted)
    if found is None:
        raise FFmpegMissingError(f"{name} not found on PATH: {_INSTALL_HINT}")
    return found


@contextmanager
def _started(argv: Sequence[str], path: Path, *, deadline: float, memory_mb: int) -> Iterator[subprocess.Popen[bytes]]:
    """Start a hardened ffmpeg/ffprobe under the resource limits; its process group is killed on exit."""
    timeout = deadline - time.monotonic()
    if timeout <= 0:
        raise _timeout_error(Path(argv[0]).name, path, "")
    with _owned(_spawn(argv, cpu_seconds=timeout, memory_mb=memory_mb, stdin=subprocess.DEVNULL)) as proc:
        yield proc


def _spawn(argv: Sequence[str], *, cpu_seconds: float, memory_mb: int, stdin: int) -> subprocess.Popen[bytes]:
    """Start ffmpeg/ffprobe in a process group of its own, already under the resource limits.

    Where util-linux `prlimit` exists it sets the limits on itself and then execs the tool,
    so they hold from the tool's first instruction, and this process (a model worker with
    the weights mapped) is never fully forked: CPython starts `prlimit` with vfork. Elsewhere
    a `preexec_fn` sets them between fork and exec.
    """
    limits = _limits(cpu_seconds=cpu_seconds, memory_mb=memory_mb)
    prlimit = shutil.which("prlimit")
    command = [prlimit, *_prlimit_options(limits), "--", *argv] if prlimit else list(argv)
    try:
        return subprocess.Popen(
            command,
            stdin=stdin,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            close_fds=True,
            start_new_session=True,  # its own process group, so a kill takes its children too
            preexec_fn=None if prlimit else partial(_apply_limits, limits),
        )
    except (FileNotFoundError, PermissionError) as exc:
        raise FFmpegMissingError(f"cannot run {argv[0]}: {exc}; {_INSTALL_HINT}") from exc


def tool_argv(proc: subprocess.Popen[bytes]) -> list[str]:
    """The ffmpeg/ffprobe command line of a process `_spawn` started (without the `prlimit` in front)."""
    args = [str(arg) for arg in proc.args]  # type: ignore[union-attr]
    return args[args.index("--") + 1 :] if "--" in args else args


@contextmanager
def _owned(proc: subprocess.Popen[bytes]) -> Iterator[subprocess.Popen[bytes]]:
    """`proc` for the duration of the block; then its process group is killed and its pipes closed."""
    with proc:
        try:
            yield proc
        finally:
            _kill_group(proc)


def _discard(proc: subprocess.Popen[bytes]) -> None:
    """Kill `proc`'s process group, reap it and close its pipes."""
    with _owned(proc):
        pass


def _output(
    proc: subprocess.Popen[bytes], path: Path, *, deadline: float, into: list[memoryview], feed: _Feed | None = None
) -> _RunResult:
    """A started process's stdout read into the buffers `into`, one after the other, and how
    it ended; a process that writes more than they hold is killed as overflowing.

    With `feed`, those bytes of the file are written to the process's stdin meanwhile.
    """
    try:
        return _collect(proc, deadline=deadline, into=into, feed=feed)
    except _Timeout as exc:
        raise _timeout_error(Path(tool_argv(proc)[0]).name, path, str(exc)) from None


def _limits(*, cpu_seconds: float, memory_mb: int) -> list[tuple[int, tuple[int, int]]]:
    """The (soft, hard) limits every ffmpeg runs under: memory, CPU time, file writes, core dumps.

    Each is lowered, never raised above the hard limit this process was started with.
    """
    cpu = math.ceil(cpu_seconds) + 1  # SIGXCPU just after the wall-clock budget, SIGKILL a second later
    wanted = [
        (resource.RLIMIT_AS, memory_mb * 1024 * 1024, memory_mb * 1024 * 1024),
        (resource.RLIMIT_CPU, cpu, cpu + 1),
        (resource.RLIMIT_FSIZE, 0, 0),  # ffmpeg only writes to pipes
        (resource.RLIMIT_CORE, 0, 0),  # a core dump would hold the user's audio
    ]
    limits = []
    for kind, soft, hard in wanted:
        _, ceiling = resource.getrlimit(kind)
        if ceiling != resource.RLIM_INFINITY:
            soft, hard = min(soft, ceiling), min(hard, ceiling)
        limits.append((kind, (soft, hard)))
    return limits


#: prlimit(1)'s option for each limit `_limits` sets.
_PRLIMIT_OPTIONS = {
    resource.RLIMIT_AS: "--as", resource.RLIMIT_CPU: "--cpu",
    resource.RLIMIT_FSIZE: "--fsize", resource.RLIMIT_CORE: "--core",
}  # fmt: skip


def _prlimit_options(limits: list[tuple[int, tuple[int, int]]]) -> list[str]:
    """`limits` as prlimit(1) options (`--as=soft:hard` ...)."""
    return [f"{_PRLIMIT_OPTIONS[kind]}={soft}:{hard}" for kind, (soft, hard) in limits]


def _apply_limits(limits: list[tuple[int, tuple[int, int]]]) -> None:
    """Set `limits` as a `preexec_fn`, in the child between fork and exec (where there is no prlimit(1)).

    It only makes setrlimit calls (no imports, no locks taken), the least that can go wrong
    in `preexec_fn` when the bot calls decode_audio from several threads.
    """
    for kind, values in limits:
        resource.setrlimit(kind, values)


def _collect(
    proc: subprocess.Popen[bytes], *, deadline: float, into: list[memoryview], feed: _Feed | None
) -> _RunResult:
    """Drain stdout and stderr together (so neither pipe can fill and stall ffmpeg) until EOF,
    writing `feed` to stdin meanwhile (so ffmpeg never waits on us either)."""
    assert proc.stdout is not None and proc.stderr is not None
    out = _Sink(into)
    tail = bytearray()
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        selector.register(proc.stderr, selectors.EVENT_READ)
        if feed is not None:
            assert proc.stdin is not None
            os.set_blocking(proc.stdin.fileno(), False)
            selector.register(proc.stdin, selectors.EVENT_WRITE, _Feeder(feed, proc.stdin))
        while selector.get_map():
            for key, _ in selector.select(_remaining(deadline, tail)):
                if key.data is not None:
                    if key.data.write():
                        selector.unregister(key.fileobj)
                        key.data.close()
                    continue
                stream: IO[bytes] = key.fileobj  # type: ignore[assignment]
                if stream is proc.stdout:
                    if not out.read(key.fd):
                        selector.unregister(stream)
                    elif out.overflowed:
                        return _RunResult(None, out.size, _text(tail), overflowed=True)
                elif chunk := os.read(key.fd, _READ_CHUNK):
                    tail = (tail + chunk)[-_STDERR_TAIL_BYTES:]
                else:
                    selector.unregister(stream)
    try:
        returncode = proc.wait(_remaining(deadline, tail))
    except subprocess.TimeoutExpired:
        raise _Timeout(_text(tail)) from None
    return _RunResult(returncode, out.size, _text(tail), overflowed=False)


class _Sink:
    """Buffers filled in order from a pipe (readv), and one byte more to notice overflow."""

    def __init__(self, buffers: list[memoryview]) -> None:
        self.capacity = sum(len(view) for view in buffers)
        self._left = [view for view in buffers if len(view)] + [memoryview(bytearray(1))]
        self.size = 0  # bytes read: past `capacity` (by one) once overflowed

    @property
    def overflowed(self) -> bool:
        return self.size > self.capacity

    def read(self, fd: int) -> int:
        """One readv into what is left of the buffers; 0 at EOF."""
        count = os.readv(fd, self._left)
        self.size += count
        left = count
        while left:
            taken = min(left, len(self._left[0]))
            left -= taken
            self._left[0] = self._left[0][taken:]
            if not self._left[0]:
                self._left.pop(0)
        return count


class _Feeder:
    """Copies a feed into a non-blocking pipe, a pipe-buffer's worth per call, as it drains."""

    def __init__(self, feed: _Feed, pipe: IO[bytes]) -> None:
        self._source = feed.file
        self._left = feed.size
        self._pipe = pipe
        self._pending = memoryview(b"")

    def write(self) -> bool:
        """Write what the pipe takes now; True once all is written or the reader has gone."""
        if not self._pending:
            self._pending = memoryview(self._source.read(min(_READ_CHUNK, self._left)))
            self._left -= len(self._pending)
            if not self._pending:
                return True
        try:
            self._pending = self._pending[os.write(self._pipe.fileno(), self._pending):]
        except BlockingIOError:
            return False
        except BrokenPipeError:  # ffmpeg stopped reading (bad data, output cap): its exit says why
            return True
        return False

    def close(self) -> None:
        """EOF for ffmpeg: the end of the file, which makes it flush and exit."""
        with suppress(BrokenPipeError):
            self._pipe.close()


def _remaining(deadline: float, tail: bytearray) -> float:
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise _Timeout(_text(tail))
    return remaining


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the process group unless the leader already exited and was reaped.

    While the leader is unreaped its pid (= the group id) cannot be reused, so this
    never hits an unrelated group.
    """
    if proc.returncode is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    proc.wait()


def _text(raw: bytes | bytearray) -> str:
    return raw.decode("utf-8", errors="replace").strip()


def _timeout_error(tool: str, path: Path, stderr_tail: str) -> AudioDecodeError:
    logger.warning("%s timed out on %s; stderr tail: %s", tool, path, stderr_tail or "(empty)")
    return AudioDecodeError(f"{tool} took too long on {path.name}", problem="too_slow")


def _require_success(result: _RunResult, path: Path, tool: str) -> None:
    """Non-zero exit (bad data, killed by a limit, refused demuxer) means unreadable; log why."""
    if result.returncode != 0:
        logger.info("%s failed on %s (exit %s): %s", tool, path, result.returncode, result.stderr_tail)
        raise AudioDecodeError(f"{tool} exit status {result.returncode} on {path.name}")


def _bytes_of(samples: np.ndarray) -> memoryview:
    """The bytes of a float32 array, as a buffer ffmpeg's output can be read into."""
    return samples.data.cast("B")


def _scrubbed(samples: np.ndarray, path: Path) -> np.ndarray:
    """`samples` with NaN made 0 and everything else clipped to [-1, 1], in place.

    A float WAV can carry NaN or huge values straight through ffmpeg; one of them would
    poison the model's normalisation of the whole recording. Clipping leaves NaN as it
    is, which makes the minimum NaN; only then is the slower NaN pass made.
    """
    if not samples.size:
        raise AudioDecodeError(f"no audio samples decoded from {path.name}")
    np.clip(samples, -1.0, 1.0, out=samples)
    if np.isnan(samples.min()):
        np.nan_to_num(samples, copy=False, nan=0.0)
    return samples
