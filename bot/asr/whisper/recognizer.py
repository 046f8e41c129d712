"""The Whisper recognizer: transformers' sequential long-form generation over audio of any length.

Whisper reads 30 s windows. `generate` on longer features runs OpenAI's long-form loop: decode
a window with timestamps, move on to the last complete segment's end, fall back to higher
temperatures when a window's text looks like a hallucination. The audio is fed to it in
blocks of `BLOCK_SECONDS`: each block's features are made when it starts and freed when it
ends, and so is everything `generate` keeps per window (scores, the decoder's cross-attentions;
the encoder's attention maps are never kept: `_keep_encoder_attentions_out`), so memory stays
flat however long the file. A block's last segment may be cut by the block's end, so
it is dropped and the next block starts where it started (the seek that the loop itself
would make). `monitor_progress`, which `generate` calls before each window, reports progress
and stops a cancelled job between windows.

The language is the request's, or detected on the first window (restricted to
`TextOptions.languages` when given) and echoed in the result. Words get their times from
cross-attention alignment (`generation_config.alignment_heads`), for subtitles and exports.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bot.asr.hardware import resolve_device
from bot.asr.loading import LoadedModel
from bot.asr.postprocess import postprocessor
from bot.asr.recognizer import RecognizerConfig
from bot.asr.types import Progress, TextOptions, TimedText, Transcription, TranscriptionOptions, Word
from bot.asr.whisper.language import check_languages, detect_language, language_ids
from bot.errors import JobCancelledError, ModelLoadError

log = logging.getLogger(__name__)

WINDOW_SECONDS = 30.0
#: Audio handed to one `generate` call; a block's last segment is decoded again by the next block.
BLOCK_SECONDS = 120.0
#: Beams per decoder name.
DECODERS = {"greedy": 1, "beam": 5}
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass(frozen=True)
class Fallback:
    """Long-form decoding against hallucination on silence and noise (transformers' recommended settings).

    A window is decoded again at the next temperature when its tokens compress too well
    (`compression_ratio_threshold`, on transformers' scale: zlib over token ids, where 1.35
    matches OpenAI's 2.4 over text) or its mean log-probability is below `logprob_threshold`;
    it is skipped as silence when the no-speech probability exceeds `no_speech_threshold` and
    the log-probability is low too. Windows are not conditioned on the previous window's text
    (`condition_on_prev_tokens`), which keeps one hallucination from seeding the next.
    """

    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
    compression_ratio_threshold: float = 1.35
    logprob_threshold: float = -1.0
    no_speech_threshold: float = 0.6
    condition_on_prev_tokens: bool = False


class WhisperRecognizer:
    """Transcribes 16 kHz mono float32 audio with a loaded Whisper model (`bot.asr.recognizer.Recognizer`)."""

    def __init__(self, loaded: LoadedModel, config: RecognizerConfig, *, fallback: Fallback = Fallback(),
                 max_new_tokens: int | None = None) -> None:
        self.model_name = loaded.name
        self.config = config
        self.fallback = fallback
        #: A cap on tokens per window (benchmarks of random weights); None: the model's own limit.
        self.max_new_tokens = max_new_tokens
        self.feature_extractor = loaded.processor.feature_extractor
        self.tokenizer = loaded.processor.tokenizer
        self.sampling_rate: int = self.feature_extractor.sampling_rate
        self.device = resolve_device(config.device)
        if config.compute_type not in _DTYPES:
            raise ModelLoadError(f"ASR_COMPUTE_TYPE={config.compute_type} is not available for Whisper models; "
                                 f"use one of {', '.join(_DTYPES)}")
        if config.compute_type == "float16" and self.device == "cpu":
            raise ModelLoadError("ASR_COMPUTE_TYPE=float16 needs ASR_DEVICE=cuda; use bfloat16 on the CPU")
        if config.compile:
            log.warning("ASR_COMPILE applies to CTC models; %s runs uncompiled", loaded.name)
        self._dtype = _DTYPES[config.compute_type]
        model: Any = loaded.model
        if self._dtype != torch.float32 or self.device != "cpu":
            model = model.to(device=self.device, dtype=self._dtype)
        self.model: Any = model.eval()
        _keep_encoder_attentions_out(self.model)
        self.languages = language_ids(model.generation_config)
        self.eot = int(model.generation_config.eos_token_id)
        self.default_postprocess: tuple[str, ...] = ()  # Whisper cases and punctuates itself

    def transcribe(
        self,
        audio: np.ndarray,
        options: TextOptions,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Transcription:
        """Transcribe `audio` (16 kHz mono float32) as `options` ask.

        Options are checked before any audio runs (ValueError). `should_stop` is polled before
        every 30 s window and makes the call raise `JobCancelledError`; `on_progress` is called
        at most every `config.progress_interval` seconds, with the text of the finished blocks.
        """
        started = time.perf_counter()
        if options.model != self.model_name:
            raise ValueError(f"this recognizer runs {self.model_name!r}, not {options.model!r}")
        if options.decoder not in DECODERS:
            raise ValueError(f"unknown decoder {options.decoder!r}; the Whisper decoders are: {', '.join(DECODERS)}")
        check_languages(self.languages, [*([options.language] if options.language else []), *options.languages])
        steps = self.default_postprocess if options.postprocess is None else options.postprocess
        postprocess = postprocessor(steps)
        prompt = (self.tokenizer.get_prompt_ids(" " + ", ".join(options.hotwords), return_tensors="pt")
                  .to(self.device) if options.hotwords else None)
        duration = len(audio) / self.sampling_rate
        language = options.language
        words: list[Word] = []
        texts: list[str] = []
        last_report = started

        def between_windows(done_seconds: float) -> None:
            nonlocal last_report
            if should_stop is not None and should_stop():
                raise JobCancelledError("cancelled between windows")
            now = time.perf_counter()
            if on_progress is not None and now - last_report >= self.config.progress_interval:
                last_report = now
                partial = postprocess(TimedText(" ".join(texts), ())).text
                on_progress(Progress(min(done_seconds, duration), duration, partial))

        start = 0
        block = int(BLOCK_SECONDS * self.sampling_rate)
        while start < len(audio):
            end = min(start + block, len(audio))
            features, frames = self._features(audio[start:end])
            if language is None:
                language = detect_language(self.model, features[:, :, :3000], self.languages, options.languages)
            offset = start / self.sampling_rate

            def on_window(seek: float, offset: float = offset) -> None:
                between_windows(offset + seek)

            segments = self._generate(features, frames, language, DECODERS[options.decoder], prompt, on_window)
            del features
            resume = end
            if end < len(audio) and len(segments) > 1 and segments[-1].start > 1.0:
                # cut by the block's end: the next block decodes it whole
                resume = start + int(segments.pop().start * self.sampling_rate)
            for segment in segments:
                texts.append(self.tokenizer.decode(segment.text_tokens(self.eot)).strip())
                words.extend(self._words(segment, offset, duration))
            start = resume
        raw = " ".join(text for text in texts if text)
        final = postprocess(TimedText(raw, tuple(words)))
        return Transcription(
            text=final.text,
            raw_text=raw,
            words=final.words,
            duration=duration,
            model=self.model_name,
            options=TranscriptionOptions(
                chunk_seconds=WINDOW_SECONDS,
                stride_seconds=0.0,
                device=self.device,
                compute_type=self.config.compute_type,
                batch_size=1,
                cpu_kernels="stock",
                language=options.language,
                decoder=options.decoder,
                hotwords=options.hotwords,
                postprocess=steps,
            ),
            processing_seconds=time.perf_counter() - started,
            language=language,
        )

    def detect_language(self, audio: np.ndarray, among: Sequence[str] = ()) -> str:
        """The language `transcribe` would detect in `audio` (among `among` if given), without transcribing:
        one decoder step on the first 30 s window of the first block's features, which are made exactly as
        `transcribe` makes them, so the answer is the same. ValueError for a code the model does not know."""
        check_languages(self.languages, among)
        features, _ = self._features(audio[:int(BLOCK_SECONDS * self.sampling_rate)])
        return detect_language(self.model, features[:, :, :3000], self.languages, among)

    def _features(self, audio: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-mel features of one block (padded to a whole window when shorter, as the model expects)
        and the mask of its real frames."""
        longer = len(audio) > WINDOW_SECONDS * self.sampling_rate
        extracted = self.feature_extractor(
            audio, sampling_rate=self.sampling_rate, return_tensors="pt", return_attention_mask=True,
            truncation=not longer, padding="longest" if longer else "max_length",
        )
        features = extracted["input_features"].to(device=self.device, dtype=self._dtype)
        return features, extracted["attention_mask"].to(self.device)

    def _generate(self, features: torch.Tensor, frames: torch.Tensor, language: str, beams: int,
                  prompt: torch.Tensor | None, on_window: Callable[[float], None]) -> list[_Segment]:
        """One block through transformers' long-form loop; its segments, times from the block's start."""
        fallback = self.fallback
        limit = {} if self.max_new_tokens is None else {"max_new_tokens": self.max_new_tokens}
        with torch.inference_mode():
            output = self.model.generate(
                input_features=features, attention_mask=frames, language=language, task="transcribe",
                return_timestamps=True, return_token_timestamps=True, return_segments=True, num_beams=beams,
                temperature=fallback.temperatures, compression_ratio_threshold=fallback.compression_ratio_threshold,
                logprob_threshold=fallback.logprob_threshold, no_speech_threshold=fallback.no_speech_threshold,
                condition_on_prev_tokens=fallback.condition_on_prev_tokens, prompt_ids=prompt,
                monitor_progress=lambda seeks: on_window(float(seeks[0, 0]) * 0.01), **limit,
            )
        return [_Segment(float(s["start"]), float(s["end"]), [int(t) for t in s["tokens"]],
                         [float(t) for t in s["token_timestamps"]]) for s in output["segments"][0]]

    def _words(self, segment: _Segment, offset: float, duration: float) -> list[Word]:
        """The segment's words: a word starts with the segment or at a token spelled with a leading space
        (byte-level "Ġ"), so the words joined by spaces are the text."""
        groups: list[list[int]] = []  # positions in the segment
        for position, token in enumerate(segment.tokens):
            if token >= self.eot:
                continue
            if not groups or self.tokenizer.convert_ids_to_tokens(token).startswith("Ġ"):
                groups.append([])
            groups[-1].append(position)
        words = []
        previous_end = offset + (segment.times[0] if segment.times else segment.start)
        for group in groups:
            text = self.tokenizer.decode([segment.tokens[p] for p in group]).strip()
            after = group[-1] + 1
            start = segment.times[group[0]]
            end = segment.times[after] if after < len(segment.times) else segment.end
            start = min(max(offset + start, previous_end), duration)
            end = min(max(offset + end, start), duration)
            previous_end = end
            if text:
                words.append(Word(text, start, end))
        return words


def _keep_encoder_attentions_out(model: Any) -> None:
    """Make the encoder never return its self-attention maps.

    Word times need only the decoder's cross-attentions, but `generate` asks for attentions
    with `output_attentions`, which reaches the encoder too: its maps (layers x heads x
    1500 x 1500 floats per 30 s window: 216 MB for whisper-tiny, 1.3 GB for whisper-small)
    would be kept with every window of a block, and the encoder would run the eager attention
    kernel to make them. Registering the hook again (a model shared by several recognizers)
    changes nothing.
    """

    def without_attentions(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        return args, {**kwargs, "output_attentions": False}

    model.get_encoder().register_forward_pre_hook(without_attentions, with_kwargs=True)


@dataclass(frozen=True)
class _Segment:
    """One segment of a block as `generate` returns it: times in seconds from the block's start."""

    start: float
    end: float
    tokens: list[int]
    #: When each token starts (cross-attention alignment), one per token.
    times: list[float]

    def text_tokens(self, eot: int) -> list[int]:
        return [token for token in self.tokens if token < eot]
