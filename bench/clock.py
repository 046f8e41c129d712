"""The clock the cores actually run at under load, for the roofline's nominal peak.

/proc/cpuinfo's "cpu MHz" is, in a VM, the nominal clock; under load the cores boost well
above it (or throttle below it), and a peak computed from it can be exceeded by a plain
matrix product. A chain of dependent register-to-register additions retires one per cycle
on every x86-64 core, so timing one gives the running clock: a few bytes of machine code in an
executable page, called through ctypes (which releases the GIL) from one thread per core
at once, as the forward loads them. The addend is a register, not an immediate: Intel's
Golden Cove-class cores (Sapphire Rapids) fold chains of `add reg, imm` in the renamer and
retire several per cycle, which made a 4 GHz core look like 22 GHz.
"""

from __future__ import annotations

import ctypes
import mmap
import platform
import statistics
import threading
import time

#: Dependent additions per loop iteration: the loop's own decrement and branch run beside them.
ADDS = 8
_ADD_RAX_RDX = bytes.fromhex("4801d0")
_LOOP = _ADD_RAX_RDX * ADDS + bytes.fromhex("48ffc9")  # ... ; dec rcx
# xor eax, eax ; mov edx, 1 ; mov rcx, rdi ; loop: (8 × add rax, rdx ; dec rcx) ; jnz loop ; ret
_CODE = (bytes.fromhex("31c0ba010000004889f9") + _LOOP + bytes([0x75, 256 - (len(_LOOP) + 2)])
         + bytes.fromhex("c3"))
#: Loop iterations per thread: ~0.25 s at 3 GHz.
ITERATIONS = 100_000_000


def running_ghz(threads: int, *, iterations: int = ITERATIONS) -> float | None:
    """The median clock (GHz) of `threads` cores busy at once; None where this cannot be
    measured (not x86-64, or a policy that forbids executable memory)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return None
    try:
        page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    except (OSError, ValueError, AttributeError):
        return None
    page.write(_CODE)
    loop = ctypes.CFUNCTYPE(ctypes.c_long, ctypes.c_long)(ctypes.addressof(ctypes.c_char.from_buffer(page)))
    loop(1000)  # first call: page faults
    rates: list[float] = []

    def measure() -> None:
        began = time.perf_counter()
        done = loop(iterations)
        rates.append(done / (time.perf_counter() - began) / 1e9)  # one addition per cycle

    workers = [threading.Thread(target=measure) for _ in range(threads)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    return statistics.median(rates)
