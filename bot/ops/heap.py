"""glibc's heap thresholds fixed for a process that runs a model on the CPU.

torch takes every tensor from the C allocator and gives it back when its last reference goes.
A forward's intermediates are megabytes each (a 30 s chunk's hidden states, the feature
encoder's blocks), and glibc hands such sizes back to the kernel one of two ways: above its
mmap threshold a block is a mapping of its own, unmapped when freed; below it, free memory at
the top of the heap past the trim threshold is released. Both thresholds start low and move
with the sizes freed, so the next forward of a worker touches fresh pages again: a page fault
per 4 KiB, hundreds of thousands per 2-minute note, kernel time that the forward waits on.

Fixed thresholds (blocks under 32 MiB, glibc's largest threshold on 64-bit, come from the
heap, and up to 64 MiB stay free at its top) let each forward reuse the memory the last one
freed. The peak stays what it was: the forward's largest live set does not change, only
whether its pages are handed back between uses.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from functools import cache

log = logging.getLogger(__name__)

#: mallopt(3) parameters.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD_BYTES = 32 * 2**20
TRIM_THRESHOLD_BYTES = 64 * 2**20


@cache
def keep_freed_memory() -> bool:
    """Fix this process's heap thresholds, once; False where the C library is not glibc."""
    if platform.libc_ver()[0] != "glibc":
        log.debug("heap thresholds left as they are: the C library is not glibc")
        return False
    mallopt = ctypes.CDLL(None).mallopt
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    done = bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES)) and bool(mallopt(M_TRIM_THRESHOLD,
                                                                               TRIM_THRESHOLD_BYTES))
    log.debug("heap thresholds: mmap %d MiB, trim %d MiB%s", MMAP_THRESHOLD_BYTES >> 20, TRIM_THRESHOLD_BYTES >> 20,
              "" if done else " refused by glibc")
    return done
