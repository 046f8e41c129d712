"""What the forkserver imports once, for every model worker it forks (`bot.execution.local.forkserver`).

Imported for that side effect alone: these modules, loaded with the cyclic collector
paused and then frozen (`bot.ops.startup_gc`), so the workers share their pages with the
server and never scan them.

First, the server stops listening to a group-wide SIGTERM or Ctrl-C (systemd, `docker stop`,
a terminal), as the workers do: those are the bot's to act on, and the server ends when the
bot does (multiprocessing closes its pipe). Killed by one while it imports, it would fail
the worker fork the bot is already waiting on.
"""

import importlib
import signal

from bot.ops.startup_gc import collector_paused

signal.signal(signal.SIGTERM, signal.SIG_IGN)
signal.signal(signal.SIGINT, signal.SIG_IGN)

#: What every worker imports (torch and transformers come in with them).
MODULES = (
    "bot.asr.loading",  # first: it imports transformers, with its import tables read from disk
    "transformers.models.wav2vec2.modeling_wav2vec2",
    "transformers.models.wav2vec2.processing_wav2vec2",
    "bot.asr.ctc.recognizer",
    "bot.audio.decode",
    "bot.execution.local.worker",
)

with collector_paused():
    for name in MODULES:
        importlib.import_module(name)
