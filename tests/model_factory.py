"""Randomly initialised wav2vec2 CTC checkpoints, saved like real ones.

The Hugging Face hub is out of reach in tests, so we build a model with the real
32-symbol vocabulary of facebook/wav2vec2-base-960h, save it with `save_pretrained`,
and load it back through the production code path (`bot.asr.loading`). `base` has the
full wav2vec2-base architecture (the same compute as the real model) for benchmarks;
`tiny` keeps the same conv front end (320 samples per frame) with a very small encoder.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import (
    Wav2Vec2Config,
    Wav2Vec2CTCTokenizer,
    Wav2Vec2FeatureExtractor,
    Wav2Vec2ForCTC,
    Wav2Vec2Processor,
)

#: The compute type of every test that does not test compute types: float32, the exact mode. Tests
#: compare transcripts exactly across processes, code paths and thread counts, and the default
#: (auto) is bfloat16 on an AMX or AVX512-BF16 CPU, whose rounding flips the argmax of random
#: weights' flat logits from one summation order to another.
EXACT_COMPUTE_TYPE = "float32"

# The vocabulary of facebook/wav2vec2-base-960h, id by id.
VOCAB_960H: dict[str, int] = {
    token: index
    for index, token in enumerate(
        ["<pad>", "<s>", "</s>", "<unk>", "|", "E", "T", "A", "O", "N", "I", "H", "S", "R", "D", "L",
         "U", "M", "W", "C", "F", "G", "Y", "P", "B", "V", "K", "'", "X", "J", "Q", "Z"]
    )
}

_TINY = dict(
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=2,
    intermediate_size=64,
    conv_dim=(32,) * 7,
    num_conv_pos_embeddings=16,
    num_conv_pos_embedding_groups=2,
)


def build_random_ctc_model(directory: Path, *, size: str = "tiny", seed: int = 0) -> Path:
    """Save a random wav2vec2 CTC model and its processor into `directory`; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    vocab_file = directory / "vocab.json"
    vocab_file.write_text(json.dumps(VOCAB_960H))
    tokenizer = Wav2Vec2CTCTokenizer(
        str(vocab_file), unk_token="<unk>", pad_token="<pad>", word_delimiter_token="|"
    )
    feature_extractor = Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16_000, padding_value=0.0, do_normalize=True, return_attention_mask=False
    )
    Wav2Vec2Processor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(directory)
    # Base settings as in facebook/wav2vec2-base-960h's config (group norm, no stable layer norm).
    config = Wav2Vec2Config(
        vocab_size=len(VOCAB_960H),
        pad_token_id=0,
        ctc_loss_reduction="sum",
        feat_extract_norm="group",
        do_stable_layer_norm=False,
        **(_TINY if size == "tiny" else {}),
    )
    torch.manual_seed(seed)
    model = Wav2Vec2ForCTC(config)
    # A random head predicts one symbol everywhere; widen it so outputs vary with the input
    # and a wrong crop or chunk boundary shows up as different text.
    with torch.no_grad():
        model.lm_head.weight.mul_(40.0)
    model.save_pretrained(directory)
    return directory
