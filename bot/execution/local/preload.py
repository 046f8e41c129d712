"""What the forkserver imports once, for every model worker it forks (`bot.execution.local.forkserver`).

Imported for that side effect alone: these modules, loaded with the cyclic collector
paused and then frozen (`bot.ops.startup_gc`), so the workers share their pages with the
server and never scan them.
"""

import importlib

from bot.ops.startup_gc import collector_paused

#: What every worker imports (torch and transformers come in with them).
MODULES = (
    "transformers.models.wav2vec2.modeling_wav2vec2",
    "transformers.models.wav2vec2.processing_wav2vec2",
    "bot.asr.ctc.recognizer",
    "bot.asr.loading",
    "bot.audio.decode",
    "bot.execution.local.worker",
)

with collector_paused():
    for name in MODULES:
        importlib.import_module(name)
