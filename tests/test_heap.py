"""After `keep_freed_memory`, a large block given back to glibc is reused, not faulted in afresh."""

from __future__ import annotations

import platform
import subprocess
import sys

import pytest

#: In a fresh interpreter: what keep_freed_memory returned, then the minor page faults of four
#: more 20 MiB blocks, each taken from glibc's malloc, written and freed, after one to warm
#: up; and the pages of one such block. Without fixed thresholds glibc maps the first block on
#: its own (its mmap threshold starts at 128 KiB) and moves the threshold only once it is freed,
#: so at least the next one faults all its pages in again.
SCRIPT = """
import ctypes, resource
from bot.ops.heap import keep_freed_memory
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = (ctypes.c_void_p,)
libc.memset.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t)
size = 20 * 2**20
kept = {keep}
def faults(rounds):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(rounds):
        block = libc.malloc(size)
        libc.memset(block, 1, size)
        libc.free(block)
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
faults(1)
print(kept, faults(4), size // resource.getpagesize())
"""


def _run(keep: str) -> tuple[str, int, int]:
    out = subprocess.run([sys.executable, "-c", SCRIPT.format(keep=keep)], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1]), int(out[2])


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the thresholds are glibc's")
def test_freed_memory_is_reused() -> None:
    kept, faults, pages = _run("keep_freed_memory()")
    assert kept == "True"
    assert faults < pages // 10, (faults, pages)
    _, default_faults, _ = _run("None")  # the same without: the check above can fail
    assert default_faults > pages // 2, (default_faults, pages)
