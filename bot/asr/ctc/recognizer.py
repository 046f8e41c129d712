"""The speech recognizer: a CTC model run over audio of any length.

One forward pass per chunk (see `chunking`), logits cropped and concatenated, greedy CTC
decoding once at the end, word times from the CTC frames. The result is a plain
`Transcription` that echoes the options used.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from bot.asr.chunking import Chunk, align, plan_chunks
from bot.asr.ctc.cpu_kernels import tune_for_cpu
from bot.asr.ctc.loading import LoadedModel
from bot.asr.postprocess import sentence_case, strip_special_tokens
from bot.asr.types import Progress, Transcription, TranscriptionOptions, Word
from bot.errors import JobCancelledError, ModelLoadError

log = logging.getLogger(__name__)

ComputeType = str  # "float32" | "bfloat16" | "float16" | "int8"
_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str) -> str:
    """`auto` means CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("ASR_DEVICE=cuda but torch sees no CUDA device (is a CUDA build of torch installed?)")
    return device


class SpeechRecognizer:
    """Transcribes 16 kHz mono float32 audio with a loaded CTC model."""

    def __init__(
        self,
        loaded: LoadedModel,
        *,
        device: str = "auto",
        compute_type: ComputeType = "float32",
        batch_size: int = 1,
        compile: bool = False,
        cpu_kernels: str = "tuned",
    ) -> None:
        self.model_name = loaded.name
        self.processor = loaded.processor
        self.feature_extractor = loaded.processor.feature_extractor
        self.tokenizer = loaded.processor.tokenizer
        self.device = resolve_device(device)
        self.compute_type = compute_type
        self.batch_size = batch_size
        self.sampling_rate: int = self.feature_extractor.sampling_rate
        self.samples_per_frame: int = int(getattr(loaded.model.config, "inputs_to_logits_ratio", 320))
        self.cpu_kernels = cpu_kernels if self.device == "cpu" and not compile else "stock"
        self.model = self._prepare(loaded.model, compile=compile)
        self._input_dtype = _DTYPES.get(compute_type, torch.float32)

    def _prepare(self, model: torch.nn.Module, *, compile: bool) -> torch.nn.Module:
        """Move and convert the model once. float32 leaves shared weights untouched."""
        if self.compute_type == "int8":
            if self.device != "cpu":
                raise ModelLoadError("ASR_COMPUTE_TYPE=int8 runs on the CPU only")
            model = torch.ao.quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        elif self.compute_type == "float16" and self.device == "cpu":
            raise ModelLoadError("ASR_COMPUTE_TYPE=float16 needs ASR_DEVICE=cuda; use bfloat16 on the CPU")
        elif self.compute_type != "float32" or self.device != "cpu":
            model = model.to(device=self.device, dtype=_DTYPES[self.compute_type])
        model.eval()
        if self.cpu_kernels == "tuned":
            tune_for_cpu(model)
        if compile:  # inductor fuses on its own; it would recompile the tuned encoder's loop per length
            model = torch.compile(model, dynamic=True)
        return model

    @property
    def options_template(self) -> dict[str, Any]:
        return {"device": self.device, "compute_type": self.compute_type, "batch_size": self.batch_size,
                "cpu_kernels": self.cpu_kernels}

    def transcribe(
        self,
        audio: np.ndarray,
        *,
        chunk_seconds: float,
        stride_seconds: float,
        on_progress: Callable[[Progress], None] | None = None,
        progress_interval: float = 2.0,
        should_stop: Callable[[], bool] | None = None,
    ) -> Transcription:
        """Transcribe `audio` (16 kHz mono float32).

        `on_progress` is called at most every `progress_interval` seconds with the text so
        far; `should_stop` is polled between chunks and makes the call raise
        `JobCancelledError`, so a cancelled job frees its worker within one chunk.
        """
        started = time.perf_counter()
        options = TranscriptionOptions(
            chunk_seconds=chunk_seconds, stride_seconds=stride_seconds, **self.options_template
        )
        duration = len(audio) / self.sampling_rate
        chunk = align(chunk_seconds, sampling_rate=self.sampling_rate, samples_per_frame=self.samples_per_frame)
        stride = align(stride_seconds, sampling_rate=self.sampling_rate, samples_per_frame=self.samples_per_frame)
        pieces: list[np.ndarray] = []
        last_report = started
        with torch.inference_mode():
            for group in self._batches(plan_chunks(len(audio), chunk=chunk, stride_left=stride, stride_right=stride)):
                if should_stop is not None and should_stop():
                    raise JobCancelledError("cancelled between chunks")
                pieces.extend(self._run_group(audio, group))
                now = time.perf_counter()
                if on_progress is not None and now - last_report >= progress_interval:
                    last_report = now
                    partial = self.tokenizer.decode(np.concatenate(pieces).tolist())
                    on_progress(Progress(group[-1].end / self.sampling_rate, duration, sentence_case(partial)))
        ids = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.int64)
        raw_text, words = self._decode(ids)
        return Transcription(
            text=sentence_case(raw_text),
            raw_text=raw_text,
            words=words,
            duration=duration,
            model=self.model_name,
            options=options,
            processing_seconds=time.perf_counter() - started,
        )

    def _batches(self, chunks: list[Chunk]) -> Iterator[list[Chunk]]:
        """Group consecutive chunks of equal length, up to `batch_size` each.

        Only equal lengths are batched: wav2vec2-base normalises with group norm and was
        trained without attention masks, so padding would change its output.
        """
        group: list[Chunk] = []
        for item in chunks:
            if group and (len(group) == self.batch_size or item.length != group[0].length):
                yield group
                group = []
            group.append(item)
        if group:
            yield group

    def _run_group(self, audio: np.ndarray, group: list[Chunk]) -> list[np.ndarray]:
        """One forward pass over equal-length chunks; returns each chunk's kept token ids."""
        features = self.feature_extractor(
            [audio[c.start : c.end] for c in group],
            sampling_rate=self.sampling_rate,
            return_tensors="pt",
        )
        inputs = features["input_values"].to(device=self.device, dtype=self._input_dtype)
        ids = self.model(inputs).logits.argmax(dim=-1).cpu().numpy()
        kept = []
        for row, item in zip(ids, group, strict=True):
            first, last = item.logit_crop(self.samples_per_frame)
            kept.append(row[first:last])
        return kept

    def _decode(self, ids: np.ndarray) -> tuple[str, tuple[Word, ...]]:
        """Greedy CTC decoding once over the whole sequence, with word times from frame offsets."""
        if ids.size == 0:
            return "", ()
        decoded = self.tokenizer.decode(ids.tolist(), output_word_offsets=True)
        seconds_per_frame = self.samples_per_frame / self.sampling_rate
        words = tuple(
            Word(
                word=word,
                start=round(float(item["start_offset"]) * seconds_per_frame, 3),
                end=round(float(item["end_offset"]) * seconds_per_frame, 3),
            )
            for item in decoded.word_offsets
            if (word := strip_special_tokens(item["word"]))
        )
        return decoded.text, words
