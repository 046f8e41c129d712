"""The cyclic garbage collector paused while torch and transformers load, then frozen.

Importing torch and transformers and loading a model creates millions of long-lived
objects and almost no garbage, yet every few thousand allocations the collector runs,
and its full collections walk all of them again: on a 2-core box that is ~1.5 s of
the ~8 s those imports take. At interpreter exit the final collection walks them once
more (~1.7 s for `python -m bot transcribe`). And in processes forked from one that
imported them (the model workers), a collection writes to every object's header,
turning pages the parent shared into private copies.

So start-up runs with the collector paused, and what it built is then frozen
(`gc.freeze`: moved to a generation the collector never scans), as the Python docs
advise for a parent process that forks. Frozen objects are never freed by the cyclic
collector; those are modules, classes and model weights that live as long as the
process anyway.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def collector_paused() -> Iterator[None]:
    """Run the block with the collector off, then freeze everything alive and restore it."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()
