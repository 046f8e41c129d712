"""The models a worker runs and the one way a request runs on them, the same on every backend.

An `Engine` holds one recognizer per model of its `EngineConfig` (every model of ASR_MODELS,
each loaded once) and, with PUNCTUATION_MODEL set, the "punctuate" step in place of
"sentence_case" in the recognizers' default chains (`bot.asr.punctuation`). A local worker
builds it from the weights its parent shares (`Engine.from_shared`); a Ray replica loads them
itself (`Engine.load`). Either way `transcribe` is what runs a request's samples, so both
backends give the same text.

`transcribe` runs the recognizer that the request's `TextOptions.model` names, after routing
by the detected language (`bot.asr.routing.route_detected`): when the request detects (no
fixed language) on a model that can tell the language first (`LanguageDetector`: Whisper) and
the model table has another model for a language it may find, the language is detected on the
first 30 s window, then the request runs with that language fixed, on the language's own model
if the table has one, else on the detecting model. Otherwise nothing extra runs.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from bot.asr import postprocess
from bot.asr.loading import SharedModel
from bot.asr.punctuation import Punctuator, load_punctuator, with_punctuation
from bot.asr.recognizer import LanguageDetector, Recognizer, RecognizerConfig, build_recognizer, load_recognizer
from bot.asr.routing import ModelTable, Route, detection_may_reroute, route_detected
from bot.asr.types import Progress, TextOptions, Transcription
from bot.errors import VoiceBotError
from bot.execution.config import EngineConfig

log = logging.getLogger(__name__)


class Engine:
    """Recognizers by model key, the model table they are routed by, and the punctuation step."""

    def __init__(self, recognizers: Mapping[str, Recognizer], table: ModelTable,
                 punctuator: Punctuator | None = None) -> None:
        self.recognizers = dict(recognizers)
        self.table = dict(table)
        self.punctuator = punctuator
        if punctuator is not None:
            postprocess.register("punctuate", punctuator)
            for recognizer in self.recognizers.values():
                default = getattr(recognizer, "default_postprocess", None)
                if default is not None:
                    recognizer.default_postprocess = with_punctuation(default)  # type: ignore[attr-defined]

    @classmethod
    def load(cls, config: EngineConfig, recognizer: RecognizerConfig | None = None) -> Engine:
        """Every model of `config` and its punctuation model, loaded in this process (`from_pretrained`);
        `recognizer` overrides `config.recognizer`."""
        settings = recognizer or config.recognizer
        recognizers = {name: load_recognizer(name, settings, attention=config.attention)
                       for name in config.models or (config.model,)}
        punctuator = load_punctuator(config.punctuation_model) if config.punctuation_model else None
        return cls(recognizers, dict(config.table), punctuator)

    @classmethod
    def from_shared(cls, config: EngineConfig, shared: Sequence[SharedModel],
                    punctuator: Punctuator | None) -> Engine:
        """The models a parent process loaded and shares (their weights stay in shared memory)."""
        recognizers = {model.name: build_recognizer(model.rebuild(), config.recognizer) for model in shared}
        return cls(recognizers, dict(config.table), punctuator)

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self.recognizers)

    @property
    def language_detectors(self) -> frozenset[str]:
        """The models that can tell a request's language (`LanguageDetector`: Whisper). A request without
        a fixed language is detected only on these; any other model transcribes it as it is."""
        return frozenset(name for name, recognizer in self.recognizers.items()
                         if isinstance(recognizer, LanguageDetector))

    def recognizer(self, model: str) -> Recognizer:
        """The recognizer of a model key; a `VoiceBotError` naming the loaded ones for any other."""
        recognizer = self.recognizers.get(model)
        if recognizer is None:
            raise VoiceBotError(f"this worker runs {', '.join(map(repr, self.recognizers))}, not {model!r}")
        return recognizer

    def transcribe(
        self,
        audio: np.ndarray,
        options: TextOptions,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Transcription:
        """Transcribe 16 kHz mono float32 `audio` on the model `options.model` names, or on the model its
        detected language routes to (see the module). The result's `model` is the model that ran and its
        `language` the detected one; the detection's time is part of `processing_seconds`."""
        started = time.perf_counter()
        recognizer = self.recognizer(options.model)
        planned = Route(options.model, options.language, options.languages)
        if not (isinstance(recognizer, LanguageDetector)
                and detection_may_reroute(planned, self.table, recognizer.languages)):
            return recognizer.transcribe(audio, options, on_progress=on_progress, should_stop=should_stop)
        detected = recognizer.detect_language(audio, options.languages)
        routed = route_detected(planned, detected, self.table)
        log.info("detected %s on %s: running %s", detected, options.model, routed.model)
        options = dataclasses.replace(options, model=routed.model, language=routed.language,
                                      languages=routed.languages)
        result = self.recognizer(routed.model).transcribe(audio, options, on_progress=on_progress,
                                                          should_stop=should_stop)
        return dataclasses.replace(result, processing_seconds=time.perf_counter() - started)
