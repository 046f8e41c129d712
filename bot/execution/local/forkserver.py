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
import os
import tempfile
from multiprocessing import forkserver

from bot.errors import WorkerStartError

#: Imported once by the forkserver, inherited (copy-on-write) by every worker it forks:
#: torch, transformers' wav2vec2 and the bot's engine and decoder, frozen after loading.
WORKER_PRELOAD = ("bot.execution.local.preload",)
#: The longest path an AF_UNIX socket can be bound to on Linux (`sun_path`, 108 bytes with its NUL).
SOCKET_PATH_BYTES = 107
#: What multiprocessing adds to the temporary directory for the server's socket.
SOCKET_SUFFIX = "/pymp-XXXXXXXX/listener-XXXXXXXX"


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
    The server listens on a socket under the temporary directory: a `WorkerStartError` when
    that path cannot fit (a long TMPDIR), rather than the bind's bare OSError.
    """
    temp = tempfile.gettempdir()
    if len(os.fsencode(temp + SOCKET_SUFFIX)) > SOCKET_PATH_BYTES:
        raise WorkerStartError(
            f"the temporary directory {temp} is too long for the model workers' socket (a Unix socket path fits "
            f"{SOCKET_PATH_BYTES} bytes, and it needs {len(SOCKET_SUFFIX)} more): set TMPDIR to a shorter directory"
        )
    worker_context()
    forkserver.ensure_running()
