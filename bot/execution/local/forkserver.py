"""The forkserver that every model worker process is forked from.

Workers must not be forked from the bot itself (PyTorch, threads and an event loop do
not survive fork), and spawning each from scratch means importing torch and
transformers again per worker: seconds of start-up and a private copy of every
imported module. A multiprocessing forkserver imports them once, and the workers it
forks share those pages. This module is deliberately light (no torch) so that the
commands can start the server first thing: its imports then run on one core while the
bot's own imports run on another, rather than one after the other.
"""

from __future__ import annotations

import multiprocessing as mp
from multiprocessing import forkserver

#: Imported once by the forkserver, inherited (copy-on-write) by every worker it forks:
#: torch, transformers' wav2vec2 and the bot's engine and decoder, frozen after loading.
WORKER_PRELOAD = ("bot.execution.local.preload",)


def worker_context() -> mp.context.ForkServerContext:
    """The forkserver start method, its server preloading `WORKER_PRELOAD`.

    The preload list is global to the process's one forkserver; it only takes effect when
    that server starts, and a module missing from it is imported by the worker itself,
    so this is an optimisation and never a requirement.
    """
    context = mp.get_context("forkserver")
    context.set_forkserver_preload(list(WORKER_PRELOAD))
    return context


def start_forkserver() -> None:
    """Start the forkserver now (it returns at once; the server imports in the background).

    Idempotent, and restarts a server that died; the pool calls it again before forking.
    """
    worker_context()
    forkserver.ensure_running()
