"""The bench's operation count of a wav2vec2 forward equals torch's own count of the ops it runs."""

from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from bench.flops import conv_lengths, forward_flops
from bench.roofline import nominal_peak


def test_conv_lengths_of_the_wav2vec2_front_end() -> None:
    config = Wav2Vec2Config()
    assert conv_lengths(16_000, config.conv_kernel, config.conv_stride)[-1] == 49
    assert conv_lengths(480_000, config.conv_kernel, config.conv_stride)[-1] == 1499


@pytest.mark.parametrize(("samples", "batch", "pos_kernel"), [(16_000, 2, 16), (40_123, 1, 15)])
def test_count_equals_torch_flop_counter(samples: int, batch: int, pos_kernel: int) -> None:
    config = Wav2Vec2Config(vocab_size=32, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                            intermediate_size=128, conv_dim=(32,) * 7, num_conv_pos_embeddings=pos_kernel,
                            num_conv_pos_embedding_groups=4)
    config._attn_implementation = "eager"  # attention as bmm, which the counter counts
    model = Wav2Vec2ForCTC(config).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.randn(batch, samples))
    counted = forward_flops(config, samples, batch=batch)
    assert sum(counted.values()) == counter.get_total_flops()
    by_op = {str(op): flops for op, flops in counter.get_flop_counts()["Global"].items()}
    assert counted["attention"] == by_op["aten.bmm"]
    assert counted["feature encoder"] + counted["positional convolution"] == by_op["aten.convolution"]


def test_nominal_peaks_by_instruction_set_and_datapath_width() -> None:
    sapphire_rapids = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_int8"}
    assert nominal_peak("bfloat16", sapphire_rapids, 2, 2600.0)[0] == pytest.approx(2 * 2.6 * 1024)
    assert nominal_peak("float32", sapphire_rapids, 2, 2600.0)[0] == pytest.approx(2 * 2.6 * 64)
    zen4 = {"avx2", "avx512f", "avx512_bf16", "avx512_vnni"}
    peak, how = nominal_peak("bfloat16", zen4, 2, 2600.0, half_width_avx512=True)
    assert peak == pytest.approx(2 * 2.6 * 64) and "256-bit" in how
    assert nominal_peak("int8", zen4, 2, 2600.0, half_width_avx512=True)[0] == pytest.approx(2 * 2.6 * 128)
    zen3 = {"avx2"}
    assert nominal_peak("float32", zen3, 2, 2450.0, half_width_avx512=False)[0] == pytest.approx(2 * 2.45 * 32)
    assert nominal_peak("bfloat16", zen3, 2, 2450.0) is None
