"""A file from Telegram on local disk, in a private temporary directory that lives as long as the job.

The size Telegram reports for the file is checked before a byte is fetched (the update's own
size was already checked on arrival, but a document's may be missing). The directory is
created with mode 0700 and removed with everything in it when the job is done, however it ends.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from bot.errors import FileTooBigError
from bot.telegram.delivery import Delivery


def check_size(size_bytes: int | None, limit_mb: float) -> None:
    """Raise `FileTooBigError` when a known size is over `limit_mb` megabytes."""
    if size_bytes and size_bytes > limit_mb * 2**20:
        raise FileTooBigError(size_bytes, limit_mb)


@asynccontextmanager
async def downloaded(delivery: Delivery, file_id: str, *, limit_mb: float, name: str) -> AsyncIterator[Path]:
    """Download `file_id` as `name` into a fresh private directory; the path is valid inside the block."""
    with tempfile.TemporaryDirectory(prefix="voicebot-") as workdir:
        file = await delivery.call(lambda: delivery.bot.get_file(file_id))
        check_size(file.file_size, limit_mb)
        path = Path(workdir) / name
        await delivery.call(lambda: file.download_to_drive(path))
        yield path
