"""Loading a CTC checkpoint (hub id or local directory) with the Auto classes.

`facebook/wav2vec2-base-960h` is the default; any CTC checkpoint with a processor works:
XLS-R fine-tunes for other languages, HuBERT or WavLM CTC models.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCTC, AutoProcessor
from transformers.utils import logging as hf_logging

from bot.errors import ModelLoadError

log = logging.getLogger(__name__)


@dataclass
class LoadedModel:
    """A processor (feature extractor + CTC tokenizer) and its model, on the CPU, in eval mode."""

    name: str
    processor: Any
    model: torch.nn.Module


def load_ctc_model(name_or_path: str, *, attention: str = "sdpa") -> LoadedModel:
    """`from_pretrained` for the processor and the model; any failure names ASR_MODEL.

    Weights load on the CPU in float32; the engine moves or converts them later, so one
    loaded copy can be shared by every worker process.
    """
    try:
        with _no_progress_bars():
            processor = AutoProcessor.from_pretrained(name_or_path)
            model = AutoModelForCTC.from_pretrained(name_or_path, attn_implementation=attention)
    except Exception as exc:  # noqa: BLE001 - any loader failure is the same start-up error
        where = "directory" if Path(name_or_path).exists() else "model id"
        raise ModelLoadError(
            f"ASR_MODEL={name_or_path!r} could not be loaded as a CTC model ({where}): "
            f"{type(exc).__name__}: {exc}".splitlines()[0]
        ) from exc
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "feature_extractor"):
        raise ModelLoadError(f"ASR_MODEL={name_or_path!r} has no CTC tokenizer and feature extractor")
    model.eval()
    log.info("loaded %s (%s, %.1fM parameters)", name_or_path, type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return LoadedModel(name=name_or_path, processor=processor, model=model)


@contextmanager
def _no_progress_bars() -> Iterator[None]:
    """transformers draws a "Loading weights" bar on stderr: noise in the bot's log and
    around the CLI's output. The log line after loading says the same once."""
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@dataclass
class SharedModel:
    """A loaded model in a form that crosses process boundaries without copying weights.

    Modules with parametrizations (wav2vec2's weight-normed positional convolution) can't
    be pickled, so the config and a state dict whose storages live in shared memory travel
    instead; `rebuild` makes a model whose parameters *are* those shared storages.
    """

    name: str
    processor: Any
    config: Any
    state: dict[str, torch.Tensor]
    attention: str

    @classmethod
    def from_loaded(cls, loaded: LoadedModel, *, attention: str = "sdpa") -> SharedModel:
        state = {key: tensor.share_memory_() for key, tensor in loaded.model.state_dict().items()}
        return cls(loaded.name, loaded.processor, loaded.model.config, state, attention)

    def rebuild(self) -> LoadedModel:
        with torch.device("meta"):
            model = AutoModelForCTC.from_config(self.config, attn_implementation=self.attention)
        model.load_state_dict(self.state, assign=True, strict=True)
        leftovers = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if leftovers:
            raise ModelLoadError(f"shared weights miss tensors: {leftovers[:3]}")
        model.eval()
        return LoadedModel(name=self.name, processor=self.processor, model=model)


def download_model(name_or_path: str) -> Path:
    """Fetch every file of the model into the Hugging Face cache for offline use (HF_HUB_OFFLINE=1)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path))
