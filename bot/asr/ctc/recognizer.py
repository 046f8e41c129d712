"""The CTC recognizer: a CTC model run over audio of any length.

Forward -> cropped logits -> decoder -> words -> post-processing. One forward pass per
group of equal chunks (see `chunking`); each pass's logits go to the request's decoder
(`decoders`), which keeps what it needs of them; each chunk's frames outside its strides
are dropped, and all the rest is decoded together once at the end, with word times from
the frames. The post-processing chain (`postprocess`) then runs on the text and the
words. The result is a plain `Transcription` that echoes every option used.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import torch

from bot.asr.chunking import Chunk, align, plan_chunks
from bot.asr.ctc.cpu_kernels import tune_for_cpu
from bot.asr.ctc.decoders import CTCDecoder, make_decoder
from bot.asr.hardware import resolve_device
from bot.asr.loading import LoadedModel
from bot.asr.postprocess import postprocessor
from bot.asr.recognizer import RecognizerConfig
from bot.asr.types import Progress, TextOptions, TimedText, Transcription, TranscriptionOptions
from bot.errors import JobCancelledError, ModelLoadError
from bot.ops.heap import keep_freed_memory

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def emits_bare_capitals(tokenizer: Any) -> bool:
    """Whether every letter the tokenizer can spell is a capital, as in wav2vec2-base-960h's vocabulary.

    Such a model cannot case its own text, so sentence case is its default post-processing;
    a model that spells lower case (or a script without case) is left as it writes.
    """
    special = set(tokenizer.all_special_tokens)
    letters = [c for token in tokenizer.get_vocab() if token not in special for c in token if c.isalpha()]
    return bool(letters) and all(c.isupper() for c in letters)


class CTCRecognizer:
    """Transcribes 16 kHz mono float32 audio with a loaded CTC model (`bot.asr.recognizer.Recognizer`)."""

    def __init__(self, loaded: LoadedModel, config: RecognizerConfig) -> None:
        self.model_name = loaded.name
        self.config = config
        self.feature_extractor = loaded.processor.feature_extractor
        self.tokenizer = loaded.processor.tokenizer
        self.device = resolve_device(config.device)
        self.sampling_rate: int = self.feature_extractor.sampling_rate
        self.samples_per_frame: int = int(getattr(loaded.model.config, "inputs_to_logits_ratio", 320))
        self.cpu_kernels = config.cpu_kernels if self.device == "cpu" and not config.compile else "stock"
        #: The post-processing a request gets when it names none (`TextOptions.postprocess` None).
        self.default_postprocess: tuple[str, ...] = ("sentence_case",) if emits_bare_capitals(self.tokenizer) else ()
        self._chunk = align(config.chunk_seconds, sampling_rate=self.sampling_rate,
                            samples_per_frame=self.samples_per_frame)
        self._stride = align(config.stride_seconds, sampling_rate=self.sampling_rate,
                             samples_per_frame=self.samples_per_frame)
        self.model = self._prepare(loaded.model)
        self._input_dtype = _DTYPES.get(config.compute_type, torch.float32)

    def _prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """Move and convert the model once. float32 leaves shared weights untouched."""
        compute_type = self.config.compute_type
        if compute_type == "int8":
            if self.device != "cpu":
                raise ModelLoadError("ASR_COMPUTE_TYPE=int8 runs on the CPU only")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif compute_type == "float16" and self.device == "cpu":
            raise ModelLoadError("ASR_COMPUTE_TYPE=float16 needs ASR_DEVICE=cuda; use bfloat16 on the CPU")
        elif compute_type != "float32" or self.device != "cpu":
            model = model.to(device=self.device, dtype=_DTYPES[compute_type])
        model.eval()
        if self.cpu_kernels == "tuned":
            keep_freed_memory()
            tune_for_cpu(model, chunk_samples=self._chunk)
        if self.config.compile:  # inductor fuses on its own; it would recompile the tuned encoder's loop per length
            return cast(torch.nn.Module, torch.compile(model, dynamic=True))  # an OptimizedModule
        return model

    def transcribe(
        self,
        audio: np.ndarray,
        options: TextOptions,
        *,
        on_progress: Callable[[Progress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> Transcription:
        """Transcribe `audio` (16 kHz mono float32) as `options` ask.

        Options are checked before any audio runs: a request for another model, an
        unknown decoder or post-processing step is a ValueError. `on_progress` is called
        at most every `config.progress_interval` seconds with the text so far (post-processed
        like the result); `should_stop` is polled between chunks and makes the call raise
        `JobCancelledError`, so a cancelled job frees its worker within one chunk.
        """
        started = time.perf_counter()
        if options.model != self.model_name:
            raise ValueError(f"this recognizer runs {self.model_name!r}, not {options.model!r}")
        decoder = make_decoder(options.decoder, self.tokenizer, hotwords=options.hotwords,
                               seconds_per_frame=self.samples_per_frame / self.sampling_rate)
        steps = self.default_postprocess if options.postprocess is None else options.postprocess
        postprocess = postprocessor(steps)
        duration = len(audio) / self.sampling_rate
        pieces: list[np.ndarray] = []
        last_report = started
        with torch.inference_mode():
            for group in self._batches(plan_chunks(len(audio), chunk=self._chunk, stride_left=self._stride,
                                                   stride_right=self._stride)):
                if should_stop is not None and should_stop():
                    raise JobCancelledError("cancelled between chunks")
                pieces.extend(self._run_group(audio, group, decoder))
                now = time.perf_counter()
                if on_progress is not None and now - last_report >= self.config.progress_interval:
                    last_report = now
                    partial = postprocess(TimedText(decoder.partial_text(pieces), ())).text
                    on_progress(Progress(group[-1].end / self.sampling_rate, duration, partial))
        decoded = decoder.decode(pieces)
        final = postprocess(decoded.timed)
        return Transcription(
            text=final.text,
            raw_text=decoded.raw_text,
            words=final.words,
            duration=duration,
            model=self.model_name,
            options=TranscriptionOptions(
                chunk_seconds=self.config.chunk_seconds,
                stride_seconds=self.config.stride_seconds,
                device=self.device,
                compute_type=self.config.compute_type,
                batch_size=self.config.batch_size,
                cpu_kernels=self.cpu_kernels,
                language=options.language,
                decoder=options.decoder,
                hotwords=options.hotwords,
                postprocess=steps,
            ),
            processing_seconds=time.perf_counter() - started,
            language=options.language,
        )

    def _batches(self, chunks: list[Chunk]) -> Iterator[list[Chunk]]:
        """Group consecutive chunks of equal length, up to `batch_size` each.

        Only equal lengths are batched: wav2vec2-base normalises with group norm and was
        trained without attention masks, so padding would change its output.
        """
        group: list[Chunk] = []
        for item in chunks:
            if group and (len(group) == self.config.batch_size or item.length != group[0].length):
                yield group
                group = []
            group.append(item)
        if group:
            yield group

    def _run_group(self, audio: np.ndarray, group: list[Chunk], decoder: CTCDecoder) -> list[np.ndarray]:
        """One forward pass over equal-length chunks; returns each chunk's kept frames, as the decoder keeps them."""
        features = self.feature_extractor(
            [audio[c.start : c.end] for c in group],
            sampling_rate=self.sampling_rate,
            return_tensors="pt",
        )
        inputs = features["input_values"].to(device=self.device, dtype=self._input_dtype)
        reduced = decoder.reduce(self.model(inputs).logits)
        kept = []
        for row, item in zip(reduced, group, strict=True):
            first, last = item.logit_crop(self.samples_per_frame)
            kept.append(row[first:last])
        return kept
