"""What the forkserver imports once, for every model worker it forks (`bot.execution.local.forkserver`).

Imported for that side effect alone: these modules, loaded with the cyclic collector
paused and then frozen (`bot.ops.startup_gc`), so the workers share their pages with the
server and never scan them.
"""

from bot.ops.startup_gc import collector_paused

with collector_paused():
    import transformers.models.wav2vec2.modeling_wav2vec2  # noqa: F401
    import transformers.models.wav2vec2.processing_wav2vec2  # noqa: F401

    import bot.asr.ctc.recognizer  # noqa: F401
    import bot.asr.ctc.loading  # noqa: F401
    import bot.audio.decode  # noqa: F401
