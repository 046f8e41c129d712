"""Floating-point operations of a wav2vec2-style CTC forward, counted from its config.

The GFLOP/s figures divide by these. A multiply-add is two operations; only matrix
products and convolutions are counted (what `torch.utils.flop_counter` counts), since
norms, activations and the softmax are a few operations per element beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def conv_lengths(samples: int, kernels: Sequence[int], strides: Sequence[int]) -> list[int]:
    """Output length of each layer of an unpadded convolution stack."""
    lengths = []
    for kernel, stride in zip(kernels, strides, strict=True):
        samples = (samples - kernel) // stride + 1
        lengths.append(samples)
    return lengths


def forward_flops(config: Any, samples: int, *, batch: int = 1) -> dict[str, int]:
    """Operations of one forward over `batch` inputs of `samples` each, by part of the model."""
    lengths = conv_lengths(samples, config.conv_kernel, config.conv_stride)
    channels_in = [1, *config.conv_dim[:-1]]
    encoder = sum(2 * length * out * inp * kernel for length, out, inp, kernel
                  in zip(lengths, config.conv_dim, channels_in, config.conv_kernel, strict=True))
    frames, hidden, kernel = lengths[-1], config.hidden_size, config.num_conv_pos_embeddings
    positional_frames = frames + 2 * (kernel // 2) - kernel + 1  # padded by kernel // 2; an even kernel's extra frame is dropped after
    positional = 2 * positional_frames * hidden * (hidden // config.num_conv_pos_embedding_groups) * kernel
    per_layer = 2 * frames * (4 * hidden * hidden + 2 * hidden * config.intermediate_size)
    linear = (2 * frames * config.conv_dim[-1] * hidden  # feature projection
              + config.num_hidden_layers * per_layer
              + 2 * frames * hidden * config.vocab_size)  # CTC head
    attention = config.num_hidden_layers * 2 * (2 * frames * frames * hidden)  # QKᵀ and its product with V
    parts = {"feature encoder": encoder, "positional convolution": positional, "linear layers": linear,
             "attention": attention}
    return {name: batch * value for name, value in parts.items()}
