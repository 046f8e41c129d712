"""Loading a checkpoint (hub id or local directory) of any model family this bot runs.

The family is read from the checkpoint's config (its model type and the architectures it
was saved as), never from its name: a directory called "whisper-…" holding a CTC model is
a CTC model. Two families exist: CTC (`facebook/wav2vec2-base-960h` by default; XLS-R
fine-tunes, HuBERT or WavLM CTC models work alike) and Whisper (`openai/whisper-*`); a
family is one `Family` entry here plus its recognizer in `bot.asr.recognizer.build_recognizer`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bot.errors import ModelLoadError
from bot.ops import import_table

import_table.install()  # before transformers is first imported, which happens here

from transformers import AutoConfig, AutoModelForCTC, AutoModelForSpeechSeq2Seq, AutoProcessor  # noqa: E402
from transformers.models.auto.modeling_auto import MODEL_FOR_CTC_MAPPING_NAMES  # noqa: E402
from transformers.utils import logging as hf_logging  # noqa: E402

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Family:
    """A family of checkpoints that one recognizer implementation runs."""

    #: How error messages name it.
    description: str
    #: The transformers Auto class that builds its models (from weights or from a config).
    model_class: Any
    #: transformers' own table: model type -> the class name of this family's head for it.
    heads: Mapping[str, str]


FAMILIES: Mapping[str, Family] = {
    "ctc": Family("CTC (a ...ForCTC head, such as Wav2Vec2ForCTC)", AutoModelForCTC, MODEL_FOR_CTC_MAPPING_NAMES),
    "whisper": Family("Whisper (WhisperForConditionalGeneration)", AutoModelForSpeechSeq2Seq,
                      {"whisper": "WhisperForConditionalGeneration"}),
}


@dataclass
class LoadedModel:
    """A processor (feature extractor + tokenizer) and its model, on the CPU (in float32 unless loaded
    in another type), in eval mode."""

    name: str
    #: A key of `FAMILIES`: which recognizer runs it.
    family: str
    processor: Any
    model: torch.nn.Module
    #: The attention implementation it was loaded with; a rebuilt copy uses the same.
    attention: str


def load_model(name_or_path: str, *, attention: str = "sdpa", dtype: str | None = None) -> LoadedModel:
    """`from_pretrained` for the processor and the model of the checkpoint's family.

    Any failure is a `ModelLoadError` that names ASR_MODEL. Weights load on the CPU in
    float32, or in `dtype` ("bfloat16", "float16") for a model that only this process uses;
    the recognizer moves or converts them later, so one float32 copy can be shared by every
    worker process (`SharedModel`).
    """
    family = checkpoint_family(name_or_path)
    as_dtype = {"dtype": getattr(torch, dtype)} if dtype else {}
    try:
        with _no_progress_bars():
            processor = AutoProcessor.from_pretrained(name_or_path)
            model = FAMILIES[family].model_class.from_pretrained(name_or_path, attn_implementation=attention,
                                                                 **as_dtype)
    except Exception as exc:  # any loader failure is the same start-up error
        raise _load_error(name_or_path, f"could not be loaded as a {family.upper()} model", exc) from exc
    if not hasattr(processor, "tokenizer") or not hasattr(processor, "feature_extractor"):
        raise ModelLoadError(f"ASR_MODEL={name_or_path!r} has no tokenizer and feature extractor")
    model.eval()
    log.info("loaded %s (%s, %.1fM parameters)", name_or_path, type(model).__name__,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return LoadedModel(name=name_or_path, family=family, processor=processor, model=model, attention=attention)


def checkpoint_family(name_or_path: str) -> str:
    """The `FAMILIES` key of a checkpoint, from its config; a `ModelLoadError` for any other kind.

    A config saved with its architectures must list the family's head for its model type:
    a wav2vec2 checkpoint saved without a CTC head (pre-training only) is refused here
    rather than loaded with a random one.
    """
    try:
        config = AutoConfig.from_pretrained(name_or_path)
    except Exception as exc:  # a missing or broken config is the same start-up error
        raise _load_error(name_or_path, "could not be loaded", exc) from exc
    architectures = list(getattr(config, "architectures", None) or [])
    for name, family in FAMILIES.items():
        head = family.heads.get(config.model_type)
        if head is not None and (not architectures or head in architectures):
            return name
    kind = ", ".join(architectures) or f"model type {config.model_type!r}"
    supported = "; ".join(family.description for family in FAMILIES.values())
    raise ModelLoadError(f"ASR_MODEL={name_or_path!r} is a {kind} checkpoint; this bot runs: {supported}")


def _load_error(name_or_path: str, what: str, exc: Exception) -> ModelLoadError:
    where = "directory" if Path(name_or_path).exists() else "model id"
    return ModelLoadError(f"ASR_MODEL={name_or_path!r} {what} ({where}): {type(exc).__name__}: {exc}".splitlines()[0])


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
    instead; `rebuild` makes a model of the same family whose parameters *are* those
    shared storages.
    """

    name: str
    family: str
    processor: Any
    config: Any
    state: dict[str, torch.Tensor]
    attention: str
    #: A generating model's generation config (Whisper's language ids, alignment heads...); a config
    #: alone does not carry it.
    generation_config: Any = None

    @classmethod
    def from_loaded(cls, loaded: LoadedModel) -> SharedModel:
        state = {key: tensor.share_memory_() for key, tensor in loaded.model.state_dict().items()}
        return cls(loaded.name, loaded.family, loaded.processor, loaded.model.config, state, loaded.attention,
                   getattr(loaded.model, "generation_config", None))

    def rebuild(self) -> LoadedModel:
        with torch.device("meta"):
            model = FAMILIES[self.family].model_class.from_config(self.config, attn_implementation=self.attention)
        model.load_state_dict(self.state, assign=True, strict=True)
        if self.generation_config is not None:
            model.generation_config = copy.deepcopy(self.generation_config)
        leftovers = [name for name, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
        if leftovers:
            raise ModelLoadError(f"shared weights miss tensors: {leftovers[:3]}")
        model.eval()
        return LoadedModel(name=self.name, family=self.family, processor=self.processor, model=model,
                           attention=self.attention)


def download_model(name_or_path: str) -> Path:
    """Fetch every file of the model into the Hugging Face cache for offline use (HF_HUB_OFFLINE=1)."""
    if Path(name_or_path).is_dir():
        return Path(name_or_path)
    from huggingface_hub import snapshot_download

    return Path(snapshot_download(name_or_path))
