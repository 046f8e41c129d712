"""Random token-classification (punctuation) checkpoints, saved like real ones.

The hub is out of reach in tests, so a WordPiece tokenizer is trained here with
`tokenizers` and a `BertForTokenClassification` built around it; both are saved with
`save_pretrained` and loaded back through the production code path
(`bot.asr.punctuation.load_punctuator`).

`tiny` models label each token by a rule the tests can compute on their own
(`expected_label`): the encoder passes every token's embedding through unchanged
(attention and feed-forward outputs zeroed, no position embeddings), and the embedding of
token `t` points at class `t % len(labels)`. `base` has BERT-base's architecture with random
weights (the same compute as a real BERT-base punctuation model) for the bench.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
from transformers import BertConfig, BertForTokenClassification, PreTrainedTokenizerFast

SENTENCES = (
    "hello i am here and this is a test of the punctuation model",
    "where are you going today with your friends from the office",
    "the quick brown fox jumps over the lazy dog near the river bank",
    "please send me the recording of the meeting before noon tomorrow",
    "we transcribe voice messages into text and add commas and full stops",
)
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

_TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)


def train_tokenizer(sentences: Iterable[str], vocab_size: int = 200) -> PreTrainedTokenizerFast:
    """A lower-casing BERT-style WordPiece tokenizer trained on `sentences`."""
    tokenizer = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tokenizer.normalizer = normalizers.BertNormalizer(lowercase=True)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    tokenizer.train_from_iterator(list(sentences), trainers.WordPieceTrainer(vocab_size=vocab_size,
                                                                             special_tokens=list(SPECIAL)))
    cls, sep = tokenizer.token_to_id("[CLS]"), tokenizer.token_to_id("[SEP]")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", cls), ("[SEP]", sep)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]", model_max_length=512,
    )


def build_punctuation_model(directory: Path, labels: Sequence[str], *, size: str = "tiny",
                            sentences: Iterable[str] = SENTENCES, vocab_size: int = 200, seed: int = 0) -> Path:
    """Save a random token-classification model with `labels` as its id2label, and its tokenizer; return it."""
    directory.mkdir(parents=True, exist_ok=True)
    tokenizer = train_tokenizer(sentences, vocab_size)
    tokenizer.save_pretrained(directory)
    config = BertConfig(
        vocab_size=len(tokenizer), id2label=dict(enumerate(labels)), label2id={label: i for i, label in enumerate(labels)},
        **(_TINY if size == "tiny" else {}),
    )
    torch.manual_seed(seed)
    model = BertForTokenClassification(config)
    if size == "tiny":
        _label_by_token(model, len(labels))
    model.save_pretrained(directory)
    return directory


def expected_label(tokenizer: PreTrainedTokenizerFast, word: str, labels: Sequence[str]) -> str:
    """The label a tiny model gives `word`: that of its first sub-word token."""
    first = tokenizer(word, add_special_tokens=False)["input_ids"][0]
    return labels[first % len(labels)]


def _label_by_token(model: BertForTokenClassification, count: int) -> None:
    """Make the logits of every token depend on its id alone: class `id % count` wins."""
    hidden = model.config.hidden_size
    assert hidden >= 2 * count
    with torch.no_grad():
        for layer in model.bert.encoder.layer:
            for dense in (layer.attention.output.dense, layer.output.dense):
                dense.weight.zero_()
                dense.bias.zero_()
        embeddings = model.bert.embeddings
        embeddings.position_embeddings.weight.zero_()
        embeddings.token_type_embeddings.weight.zero_()
        words = embeddings.word_embeddings.weight
        words.zero_()
        for token in range(words.shape[0]):
            words[token, token % count] = 1.0
            words[token, count + token % count] = -1.0
        model.classifier.weight.zero_()
        model.classifier.weight[:, :count] = torch.eye(count)
        model.classifier.bias.zero_()
