"""What the forkserver imports once, for every model worker it forks (`bot.forkserver`).

Imported for that side effect alone: these modules, loaded with the cyclic collector
paused and then frozen (`bot.startup_gc`), so the workers share their pages with the
server and never scan them.
"""

from bot.startup_gc import collector_paused

with collector_paused():
    import transformers.models.wav2vec2.modeling_wav2vec2  # noqa: F401
    import transformers.models.wav2vec2.processing_wav2vec2  # noqa: F401

    import bot.asr.engine  # noqa: F401
    import bot.asr.loading  # noqa: F401
    import bot.audio  # noqa: F401
