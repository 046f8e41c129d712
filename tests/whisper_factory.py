"""Randomly initialised Whisper checkpoints with the real multilingual vocabulary, saved like real ones.

The hub is out of reach in tests, so the tokenizer is rebuilt from `multilingual.tiktoken`, the
byte-level BPE ranks that the `openai-whisper` package ships (installed `--no-deps`: only that
file is used): vocab.json and merges.txt as transformers' `convert_openai_to_hf` writes them,
then the special tokens in Whisper's layout (<|endoftext|> 50257 ... <|notimestamps|> 50363,
then the 1501 timestamps <|0.00|>..<|30.00|>), 51865 ids in all, as openai/whisper-tiny..-medium.
The generation config (language and task ids, alignment heads, suppressed tokens) is written
here as those checkpoints carry it. `tiny` is two 32-wide layers; `whisper-tiny`, `-base` and
`-small` have those checkpoints' sizes (the same compute as the real models) for benchmarks.
"""

from __future__ import annotations

import base64
import functools
import json
from pathlib import Path

import torch
from transformers import (
    GenerationConfig,
    WhisperConfig,
    WhisperFeatureExtractor,
    WhisperForConditionalGeneration,
    WhisperProcessor,
    WhisperTokenizer,
)
from transformers.models.whisper.tokenization_whisper import LANGUAGES

#: The 99 languages of the multilingual checkpoints before large-v3 (which adds "yue"), in id order.
WHISPER_LANGUAGES: tuple[str, ...] = tuple(code for code in LANGUAGES if code != "yue")
EOT = 50257
SOT = EOT + 1
FIRST_LANGUAGE = SOT + 1
TRANSLATE = FIRST_LANGUAGE + len(WHISPER_LANGUAGES)
TRANSCRIBE, START_OF_LM, START_OF_PREV, NO_SPEECH, NO_TIMESTAMPS = range(TRANSLATE + 1, TRANSLATE + 6)
FIRST_TIMESTAMP = NO_TIMESTAMPS + 1
VOCAB_SIZE = FIRST_TIMESTAMP + 1501

#: Encoder/decoder sizes of the real checkpoints (layers, width, heads).
SIZES: dict[str, tuple[int, int, int]] = {
    "tiny": (2, 32, 2),
    "whisper-tiny": (4, 384, 6),
    "whisper-base": (6, 512, 8),
    "whisper-small": (12, 768, 12),
}


def tiktoken_file() -> Path:
    """`multilingual.tiktoken` of the installed openai-whisper package (found without importing it)."""
    import importlib.util

    spec = importlib.util.find_spec("whisper")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("openai-whisper is not installed: pip install --no-deps openai-whisper==20250625")
    return Path(spec.origin).parent / "assets" / "multilingual.tiktoken"


@functools.lru_cache(maxsize=1)
def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible map of bytes to printable characters (byte-level BPE)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return {byte: chr(code) for byte, code in zip(printable, codes, strict=True)}


def _split(ranks: dict[bytes, int], token: bytes, max_rank: int) -> list[bytes]:
    """The BPE parts `token` reaches using only merges ranked below `max_rank`: its last merge is the two parts."""
    parts = [bytes([byte]) for byte in token]
    while True:
        best: tuple[int, int] | None = None
        for index in range(len(parts) - 1):
            rank = ranks.get(parts[index] + parts[index + 1])
            if rank is not None and rank < max_rank and (best is None or rank < best[1]):
                best = (index, rank)
        if best is None:
            return parts
        index = best[0]
        parts = [*parts[:index], parts[index] + parts[index + 1], *parts[index + 2 :]]


@functools.lru_cache(maxsize=1)
def vocabulary_and_merges() -> tuple[dict[str, int], tuple[str, ...]]:
    """vocab.json and merges.txt of the tiktoken ranks, as transformers' converter derives them."""
    ranks: dict[bytes, int] = {}
    for line in tiktoken_file().read_text().splitlines():
        if line:
            token, rank = line.split()
            ranks[base64.b64decode(token)] = int(rank)
    to_unicode = _bytes_to_unicode()

    def spell(token: bytes) -> str:
        return "".join(to_unicode[byte] for byte in token)

    vocab = {spell(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda item: item[1]):
        if len(token) > 1:
            left, right = _split(ranks, token, rank)
            merges.append(f"{spell(left)} {spell(right)}")
    return vocab, tuple(merges)


def special_tokens() -> list[str]:
    """Whisper's special tokens from id 50257 on, in order."""
    return [
        "<|endoftext|>", "<|startoftranscript|>", *(f"<|{code}|>" for code in WHISPER_LANGUAGES),
        "<|translate|>", "<|transcribe|>", "<|startoflm|>", "<|startofprev|>", "<|nospeech|>", "<|notimestamps|>",
        *(f"<|{index * 0.02:.2f}|>" for index in range(1501)),
    ]


def build_tokenizer(directory: Path) -> WhisperTokenizer:
    vocab, merges = vocabulary_and_merges()
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
    tokenizer = WhisperTokenizer(
        vocab=str(directory / "vocab.json"), merges=str(directory / "merges.txt"),
        unk_token="<|endoftext|>", bos_token="<|endoftext|>", eos_token="<|endoftext|>", pad_token="<|endoftext|>",
    )
    specials = special_tokens()
    tokenizer.add_tokens(specials[:-1501], special_tokens=True)
    tokenizer.add_tokens(specials[-1501:])  # timestamps are plain added tokens, as in the hub's tokenizers
    if len(tokenizer) != VOCAB_SIZE or tokenizer.convert_tokens_to_ids("<|30.00|>") != VOCAB_SIZE - 1:
        raise AssertionError(f"Whisper layout not reproduced: {len(tokenizer)} tokens")
    return tokenizer


def _suppressed(tokenizer: WhisperTokenizer) -> list[int]:
    """Symbols Whisper never emits as speech (openai-whisper's `non_speech_tokens`, by the same rules)."""
    symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
    symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
    miscellaneous = set("♩♪♫♬♭♮♯")
    result = {tokenizer.encode(" -", add_special_tokens=False)[0], tokenizer.encode(" '", add_special_tokens=False)[0]}
    for symbol in symbols + list(miscellaneous):
        for ids in (tokenizer.encode(symbol, add_special_tokens=False),
                    tokenizer.encode(" " + symbol, add_special_tokens=False)):
            if len(ids) == 1 or symbol in miscellaneous:
                result.add(ids[0])
    # and the control tokens, as in the hub's generation configs
    return sorted(result | {SOT, TRANSLATE, TRANSCRIBE, START_OF_LM, START_OF_PREV, NO_SPEECH})


def _favour(model: WhisperForConditionalGeneration, token: int, margin: float = 30.0) -> None:
    """Add `margin` to one token's logit at every decoder step, whatever the audio.

    The decoder's last layer norm is made to output 1 in its first dimension, and the output
    projection (tied to the embeddings) reads that dimension for this token only: its logit
    gains the margin, every other logit keeps the rest of its random weights.
    """
    with torch.no_grad():
        norm = model.model.decoder.layer_norm
        norm.weight[0], norm.bias[0] = 0.0, 1.0
        rows = model.get_output_embeddings().weight
        rows[:, 0] = 0.0
        rows[token, 0] = margin


def build_random_whisper_model(directory: Path, *, size: str = "tiny", seed: int = 0,
                               favour_language: str | None = None, max_length: int = 448) -> Path:
    """Save a random Whisper model, its processor and generation config into `directory`; return it.

    `favour_language` raises that language token's output bias, so detection picks it on any audio
    and the other languages keep their random order (a restricted detection picks the best of them).
    Random weights rarely end a window early: `max_length` (the checkpoint's own limit on tokens
    per window, 448 in the hub's configs) keeps tests short.
    """
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(directory)
    feature_extractor = WhisperFeatureExtractor(feature_size=80)
    WhisperProcessor(feature_extractor=feature_extractor, tokenizer=tokenizer).save_pretrained(directory)
    layers, width, heads = SIZES[size]
    config = WhisperConfig(
        vocab_size=VOCAB_SIZE, num_mel_bins=80, d_model=width,
        encoder_layers=layers, decoder_layers=layers, encoder_attention_heads=heads, decoder_attention_heads=heads,
        encoder_ffn_dim=4 * width, decoder_ffn_dim=4 * width, max_source_positions=1500, max_target_positions=448,
        pad_token_id=EOT, bos_token_id=EOT, eos_token_id=EOT, decoder_start_token_id=SOT,
        architectures=["WhisperForConditionalGeneration"],
    )
    torch.manual_seed(seed)
    model = WhisperForConditionalGeneration(config)
    suppress = _suppressed(tokenizer)
    if favour_language is not None:
        _favour(model, FIRST_LANGUAGE + WHISPER_LANGUAGES.index(favour_language))
        # Text decoding must not pick the favoured token up: no language token is ever text.
        suppress = sorted({*suppress, *range(FIRST_LANGUAGE, TRANSLATE)})
    model.generation_config = GenerationConfig(
        decoder_start_token_id=SOT, bos_token_id=EOT, eos_token_id=EOT, pad_token_id=EOT,
        max_length=max_length, begin_suppress_tokens=[220, EOT], suppress_tokens=suppress,
        is_multilingual=True, no_timestamps_token_id=NO_TIMESTAMPS, prev_sot_token_id=START_OF_PREV,
        max_initial_timestamp_index=50, return_timestamps=False,
        lang_to_id={f"<|{code}|>": FIRST_LANGUAGE + index for index, code in enumerate(WHISPER_LANGUAGES)},
        task_to_id={"translate": TRANSLATE, "transcribe": TRANSCRIBE},
        # Cross-attention heads that align text with audio: here every head of the last decoder layer.
        alignment_heads=[[layers - 1, head] for head in range(heads)],
    )
    model.save_pretrained(directory)
    return directory
