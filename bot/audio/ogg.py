"""The duration of an Ogg Opus file (a Telegram voice note) from two page headers, and
where in the file a given moment has been reached.

Most of what the bot decodes is Telegram voice notes: Ogg Opus. Their length is in the
header of the last Ogg page (its granule position, in 48 kHz samples, less the pre-skip
in the first page's OpusHead, RFC 7845), so reading two small pieces of the file tells
it in microseconds where starting ffprobe costs ~55 ms. Only that one question is
answered here, and only for a file that plainly is a single Opus stream; for anything
else the answer is None and ffprobe decides. The file is still decoded by the hardened
ffmpeg, and a file whose pages lie is caught by its output cap, so a wrong answer here
costs at most a slower decode, never safety.
"""

from __future__ import annotations

import math
from pathlib import Path

#: The first page: 27-byte header, up to 255 lacing values, then OpusHead (19+ bytes).
_HEAD_BYTES = 27 + 255 + 19
#: An Ogg page is at most 65,307 bytes, so the last page header lies within this of the end.
_TAIL_BYTES = 65_307 + 27
_OPUS_RATE = 48_000
_BOS = 0x02  # header_type flag of a stream's first page
_NO_PACKET_ENDS = -1  # granule position of a page on which no packet ends


def opus_duration(path: Path) -> float | None:
    """Seconds of audio in an Ogg Opus file, or None if it is not plainly one (or says nothing)."""
    try:
        with open(path, "rb") as file:
            head = file.read(_HEAD_BYTES)
            size = file.seek(0, 2)
            file.seek(max(0, size - _TAIL_BYTES))
            tail = file.read()
    except OSError:
        return None
    first = _opus_stream(head)
    if first is None:
        return None
    serial, pre_skip = first
    granule = _last_granule(tail, serial)
    if granule is None or granule <= pre_skip:
        return None
    return (granule - pre_skip) / _OPUS_RATE


def pages_through(path: Path, seconds: float) -> tuple[int, float] | None:
    """(bytes, their seconds): from the start of an Ogg Opus file to the end of the first
    page that completes `seconds` of audio, and how much audio those pages hold by
    their granule position; None unless the page chain up to there is intact.

    Intact means each page starts where the one before ended, all of one stream, with
    no sequence number missing: then a decoder given just those bytes decodes what one
    given the whole file decodes up to there (`bot.audio.decode` feeds them to an ffmpeg
    already started, and checks it got that many seconds back). Lost or damaged
    pages, or a file that ends sooner, give None.
    """
    try:
        with open(path, "rb") as file:
            first = _opus_stream(file.read(_HEAD_BYTES))
            if first is None:
                return None
            serial, pre_skip = first
            target = pre_skip + math.ceil(seconds * _OPUS_RATE)
            size = file.seek(0, 2)
            offset = sequence = 0
            while True:
                file.seek(offset)
                header = file.read(27 + 255)
                if (len(header) < 27 or header[:5] != b"OggS\0" or len(header) < 27 + header[26]
                        or int.from_bytes(header[14:18], "little") != serial
                        or int.from_bytes(header[18:22], "little") != sequence):
                    return None
                offset += 27 + header[26] + sum(header[27 : 27 + header[26]])
                if offset > size:
                    return None
                granule = int.from_bytes(header[6:14], "little", signed=True)
                if granule >= target:
                    return offset, (granule - pre_skip) / _OPUS_RATE
                sequence += 1
    except OSError:
        return None


def _opus_stream(head: bytes) -> tuple[int, int] | None:
    """(serial number, pre-skip) when `head` is a first Ogg page carrying an OpusHead packet."""
    if len(head) < 27 or head[:4] != b"OggS" or head[4] != 0 or not head[5] & _BOS:
        return None
    body = 27 + head[26]
    if head[body : body + 8] != b"OpusHead" or len(head) < body + 12:
        return None
    return int.from_bytes(head[14:18], "little"), int.from_bytes(head[body + 10 : body + 12], "little")


def _last_granule(tail: bytes, serial: int) -> int | None:
    """Granule position of the file's last page, which must belong to stream `serial`.

    Pages are found by their capture pattern; a stray "OggS" inside audio data would
    also need version 0 and the same 32-bit serial number to be taken for a page. A
    last page of another stream (a chained or multiplexed file) means None: ffprobe
    knows those better.
    """
    position = tail.rfind(b"OggS")
    while position >= 0:
        header = tail[position : position + 27]
        if len(header) == 27 and header[4] == 0:
            if int.from_bytes(header[14:18], "little") != serial:
                return None
            granule = int.from_bytes(header[6:14], "little", signed=True)
            if granule != _NO_PACKET_ENDS:
                return granule
        position = tail.rfind(b"OggS", 0, position)
    return None
