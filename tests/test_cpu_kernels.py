"""The tuned CPU forward paths compute what the stock transformers forward computes.

Stock and tuned models are built from the same random weights; their logits may differ
only by float32 rounding, and their argmax (the transcript) not at all. Both encoder
layouts that the tuned encoder accepts are covered: "group" (wav2vec2-base, layer 0
normalised over time) and "layer" (wav2vec2-large / XLS-R, every frame normalised alone).
"""

from __future__ import annotations

import ast
import copy
import math
from collections.abc import Callable
from functools import partial

import numpy as np
import pytest
import torch
from torch import nn
from transformers import Wav2Vec2Config, Wav2Vec2ForCTC

from bot.asr.ctc.cpu_kernels import (
    BLOCK_BYTES,
    SHAPE_BUCKET,
    LengthRounding,
    _blocked_feature_encoder,
    _conv1d_as_matrix_product,
    _conv1d_channels_last,
    _folded_first_layer,
    _fusable_gelus,
    _matrix_product_weights,
    _onednn_linear,
    _packed_product_weight,
    block_frames,
    receptive_field,
    tune_for_cpu,
)
from bot.asr.ctc.recognizer import CTCRecognizer
from bot.asr.recognizer import Recognizer
from bot.asr.types import TextOptions
from bot.audio.decode import decode_audio
from tests.conftest import CORPUS
from tests.model_factory import VOCAB_960H

#: Frames per encoder block of the test models below (64 channels, float32).
BLOCK = block_frames(torch.nn.Conv1d(1, 64, 10, stride=5), 320, 4)
#: Lengths in samples: one frame, under one block, several blocks with a partial last one.
LENGTHS = (400, 16_000 * 1 + 123, 320 * (2 * BLOCK + 17) + 80)


def _model_pair(norm: str) -> tuple[nn.Module, nn.Module]:
    """(stock, tuned) copies of one random small model with the real conv front end."""
    config = Wav2Vec2Config(
        vocab_size=len(VOCAB_960H), hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=128, conv_dim=(64,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=4, feat_extract_norm=norm, do_stable_layer_norm=norm == "layer",
        conv_bias=norm == "layer",  # large checkpoints have conv biases: cover the bias term too
    )
    torch.manual_seed(1)
    stock = Wav2Vec2ForCTC(config).eval()
    with torch.no_grad():
        stock.lm_head.weight.mul_(40.0)  # spread the logits, as the test model does
        for layer in stock.wav2vec2.feature_extractor.conv_layers:  # non-trivial norm parameters
            norm_layer = getattr(layer, "layer_norm", None)
            if norm_layer is not None:
                norm_layer.weight.uniform_(0.5, 1.5)
                norm_layer.bias.uniform_(-0.5, 0.5)
    tuned = copy.deepcopy(stock)
    assert tune_for_cpu(tuned)[0] == "blocked feature encoder"
    return stock, tuned


def _speechlike(batch: int, length: int, seed: int) -> torch.Tensor:
    """Noise with a DC offset and a slow envelope: the group norm's mean and variance both matter."""
    generator = torch.Generator().manual_seed(seed)
    envelope = 0.2 + torch.sin(torch.linspace(0, 12, length)).abs()
    return 0.3 + envelope * torch.randn(batch, length, generator=generator)


def test_blocks_are_sized_by_bytes() -> None:
    base_layer0 = torch.nn.Conv1d(1, 512, 10, stride=5)
    assert block_frames(base_layer0, 320, 4) == BLOCK_BYTES // (512 * 64 * 4) == 104
    assert block_frames(base_layer0, 320, 2) == 2 * 104  # bfloat16: twice the frames in the same bytes
    assert LENGTHS[-1] // 320 > 2 * BLOCK


def test_receptive_field_of_the_wav2vec2_front_end() -> None:
    config = Wav2Vec2Config()
    assert receptive_field(list(config.conv_kernel), list(config.conv_stride)) == (400, 320)
    assert receptive_field([10], [5]) == (10, 5)
    assert receptive_field([3, 3], [2, 2]) == (7, 4)


@pytest.mark.parametrize("norm", ["group", "layer"])
@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("batch", [1, 2])
def test_tuned_forward_equals_stock(norm: str, length: int, batch: int) -> None:
    stock, tuned = _model_pair(norm)
    audio = _speechlike(batch, length, seed=length + batch)
    with torch.inference_mode():
        expected_features = stock.wav2vec2.feature_extractor(audio)
        features = tuned.wav2vec2.feature_extractor(audio)
        expected = stock(audio).logits
        logits = tuned(audio).logits
    assert features.shape == expected_features.shape == (batch, 64, (length - 400) // 320 + 1)
    torch.testing.assert_close(features, expected_features, rtol=1e-4, atol=1e-4)
    assert logits.shape == expected.shape
    torch.testing.assert_close(logits, expected, rtol=1e-4, atol=2e-3)
    assert torch.equal(logits.argmax(-1), expected.argmax(-1))


@pytest.mark.parametrize("conv_bias", [False, True])
def test_first_layer_group_norm_folds_into_its_convolution(conv_bias: bool) -> None:
    stock, _ = _model_pair("group")
    layer = copy.deepcopy(stock.wav2vec2.feature_extractor.conv_layers[0])
    if conv_bias:  # the norm removes a conv bias: the folded layer must give the same output with one
        layer.conv.bias = nn.Parameter(torch.linspace(-1, 1, layer.conv.out_channels))
    audio = _speechlike(1, 48_000, seed=7)
    with torch.inference_mode():
        expected = layer.layer_norm(layer.conv(audio[:, None]))
        weight, bias = _folded_first_layer(layer, audio)
        folded = torch.nn.functional.conv2d(audio[:, None, None], weight, bias, stride=(1, layer.conv.stride[0]))
    torch.testing.assert_close(folded[:, :, 0], expected, rtol=1e-4, atol=1e-4)


def test_gelu_fuses_only_where_it_follows_the_convolution() -> None:
    stock, _ = _model_pair("group")
    if not torch.backends.mkldnn.is_available():
        pytest.skip("no oneDNN in this torch build")
    encoder = stock.wav2vec2.feature_extractor
    assert _fusable_gelus(encoder) == (True,) * 7  # layer 0's group norm folds into its convolution
    assert _fusable_gelus(_model_pair("layer")[0].wav2vec2.feature_extractor) == (False,) * 7  # norm between
    tanh = copy.deepcopy(encoder)
    tanh.conv_layers[3].activation = nn.GELU(approximate="tanh")
    assert _fusable_gelus(tanh) == (True,) * 3 + (False,) + (True,) * 3


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bfloat16 here")
@pytest.mark.parametrize(("kernel", "stride"), [(3, 2), (2, 2), (4, 1)])
@pytest.mark.parametrize("activation", ["none", "gelu"])
def test_convolution_as_one_matrix_product(kernel: int, stride: int, activation: str) -> None:
    """The encoder's convolutions as one product over the input's overlapping frames (bfloat16): the
    same output as the convolution, up to bfloat16's rounding of a sum in another order."""
    torch.manual_seed(kernel * 10 + stride)
    conv = nn.Conv1d(48, 40, kernel, stride=stride, bias=True).to(torch.bfloat16)
    hidden = torch.randn(1, 101, 48, dtype=torch.bfloat16)  # time-major, as the blocked encoder holds it
    with torch.inference_mode():
        expected = conv(hidden.transpose(1, 2)).transpose(1, 2).float()
        if activation == "gelu":
            expected = torch.nn.functional.gelu(expected)
        out = _conv1d_as_matrix_product(conv, _packed_product_weight(conv), hidden, activation=activation)
    assert out.shape == expected.shape == (1, (101 - kernel) // stride + 1, 40)
    torch.testing.assert_close(out.float(), expected, rtol=2e-2, atol=2e-2)


def test_input_shorter_than_one_frame_fails_like_stock() -> None:
    stock, tuned = _model_pair("group")
    audio = _speechlike(1, 300, seed=3)
    with torch.inference_mode():
        with pytest.raises(RuntimeError) as stock_error:
            stock(audio)
        with pytest.raises(RuntimeError) as tuned_error:
            tuned(audio)
    assert str(tuned_error.value) == str(stock_error.value)


def test_setting_chooses_the_forward_paths(make_recognizer: Callable[..., Recognizer]) -> None:
    tuned = make_recognizer(cpu_kernels="tuned", compute_type="float32")
    stock = make_recognizer(cpu_kernels="stock", compute_type="float32")
    assert isinstance(tuned, CTCRecognizer) and isinstance(stock, CTCRecognizer)
    linears = [m for m in tuned.model.modules() if type(m) is nn.Linear]
    assert linears and all("forward" in m.__dict__ for m in linears)
    assert "forward" in tuned.model.wav2vec2.feature_extractor.__dict__
    assert not any("forward" in m.__dict__ for m in stock.model.modules())
    audio = _speechlike(1, 16_000, seed=5).numpy()[0]
    assert tuned.transcribe(audio, TextOptions(model=tuned.model_name)).options.cpu_kernels == "tuned"
    assert stock.transcribe(audio, TextOptions(model=stock.model_name)).options.cpu_kernels == "stock"


@pytest.mark.parametrize("compute_type", ["float32", "int8"])
def test_real_speech_same_transcript_tuned_and_stock(make_recognizer: Callable[..., Recognizer],
                                                      compute_type: str) -> None:
    names = ["jfk.wav", "ldc93s1.wav", "lj_LJ001-0001.flac"]
    if not all((CORPUS / name).exists() for name in names):
        pytest.skip("../shared/corpus is not available")
    audio = np.concatenate([decode_audio(CORPUS / name, max_seconds=600) for name in names])
    texts = {}
    for kernels in ("tuned", "stock"):
        recognizer = make_recognizer(compute_type=compute_type, cpu_kernels=kernels, chunk_seconds=10, stride_seconds=2)
        texts[kernels] = recognizer.transcribe(audio, TextOptions(model=recognizer.model_name)).raw_text
    assert len(audio) > 20 * 16_000 and texts["tuned"]
    assert texts["tuned"] == texts["stock"]


def test_tuned_bfloat16_is_as_close_to_float32_as_stock_bfloat16() -> None:
    """bfloat16 rounds differently on each path, so the check is against float32: the tuned forward
    (time-major encoder; packed oneDNN linears where the CPU has bf16 instructions) is no further
    from it than transformers' own bfloat16 forward."""
    stock, _ = _model_pair("group")
    stock_bf16 = copy.deepcopy(stock).to(torch.bfloat16)
    tuned_bf16 = copy.deepcopy(stock_bf16)
    installed = tune_for_cpu(tuned_bf16)
    if torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert installed[:2] == ["blocked feature encoder, convolutions as matrix products",
                                 "oneDNN linear, packed bfloat16 weights"]
    else:
        assert installed[0] == "blocked feature encoder"
    audio = _speechlike(2, LENGTHS[-1], seed=11)
    with torch.inference_mode():
        exact = stock(audio).logits
        errors = {name: (model(audio.bfloat16()).logits.float() - exact).abs().mean().item()
                  for name, model in (("stock", stock_bf16), ("tuned", tuned_bf16))}
    assert 0 < errors["tuned"] <= 1.25 * errors["stock"], errors



def test_length_rounding() -> None:
    rounding = LengthRounding(steady=1499)
    assert [rounding(n) for n in (1, 31, 32, 33, 250, 1498, 1499, 1500, 2998)] == [
        SHAPE_BUCKET, SHAPE_BUCKET, 32, 64, 256, 1504, 1499, 1504, 2998]  # full chunks, one or a batch, as they are
    assert LengthRounding()(1499) == 1504


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_each_rounded_forward_equals_the_unrounded_one(dtype: torch.dtype) -> None:
    """Rounding a length up adds zero rows, or zero samples past the end, and drops their results:
    the linear layers, the positional convolution and the feature encoder (in bfloat16 with its
    convolutions as matrix products) give what they give at the length itself."""
    if dtype == torch.bfloat16 and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        pytest.skip("no native bfloat16 here")
    stock, _ = _model_pair("group")
    model = copy.deepcopy(stock).to(dtype)
    encoder = model.wav2vec2.feature_extractor
    rounding = LengthRounding()
    audio = _speechlike(1, 320 * (BLOCK + 45) + 80, seed=13).to(dtype)
    fused = _fusable_gelus(encoder)
    # Bitwise equal where measured; a kernel may still sum a row in another order for another row count.
    same = partial(torch.testing.assert_close, **({"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32
                                                   else {"rtol": 1e-2, "atol": 1e-2}))
    with torch.inference_mode():
        products = _matrix_product_weights(encoder, packed=dtype == torch.bfloat16)  # as tune_for_cpu does
        features = _blocked_feature_encoder(encoder, fused, rounding, products, audio)
        same(features, _blocked_feature_encoder(encoder, fused, None, products, audio))
        hidden = features.transpose(1, 2) @ torch.randn(64, 64, dtype=dtype)  # 1 × frames × 64, not a bucket multiple
        assert hidden.shape[1] % SHAPE_BUCKET
        linear = model.wav2vec2.encoder.layers[0].feed_forward.intermediate_dense
        rounded, exact = (_onednn_linear(linear, r, hidden) for r in (rounding, None))
        assert rounded.shape == exact.shape
        same(rounded, exact)
        conv = model.wav2vec2.encoder.pos_conv_embed.conv
        rounded, exact = (_conv1d_channels_last(conv, r, hidden.transpose(1, 2)) for r in (rounding, None))
        assert rounded.shape == exact.shape == conv(hidden.transpose(1, 2)).shape
        same(rounded, exact)


def _kernel_shapes(model: nn.Module, audio: torch.Tensor) -> set[tuple[str, str]]:
    """The oneDNN ops a forward ran, with their input shapes (oneDNN builds kernels per shape)."""
    with torch.inference_mode(), torch.profiler.profile(record_shapes=True) as prof:
        model(audio)
    return {(event.key, str(event.input_shapes)) for event in prof.key_averages(group_by_input_shape=True)
            if event.key.startswith(("mkldnn::", "aten::mkldnn_convolution"))}


def _rows_and_depth(shapes: str) -> tuple[int, int]:
    """(rows, depth) of the first input in a profiler's input-shapes string."""
    first = ast.literal_eval(shapes)[0]
    return math.prod(first[:-1]), first[-1]


@pytest.mark.skipif(not torch.ops.mkldnn._is_mkldnn_bf16_supported(), reason="no native bfloat16 here")
def test_bfloat16_lengths_in_one_bucket_run_the_same_kernel_shapes() -> None:
    """Voice notes come in every length: in bfloat16, two lengths in one bucket meet the same oneDNN
    shapes (each built once), while a full chunk runs as it is."""
    stock, _ = _model_pair("group")
    chunk = 320 * 150 + 80  # 150 frames
    tuned = copy.deepcopy(stock).to(torch.bfloat16)
    tune_for_cpu(tuned, chunk_samples=chunk)
    lengths = (3 * SHAPE_BUCKET + 2, 3 * SHAPE_BUCKET + 29)
    first, second = (_speechlike(1, 320 * frames + 80, seed=frames).bfloat16() for frames in lengths)
    # (rows, depth) of each linear kernel: the transformer's (depth 64, the hidden size) run at the
    # bucket, never at a length itself; the encoder's products follow its rounded blocks.
    linears = {_rows_and_depth(shape) for kind, shape in _kernel_shapes(tuned, first) if "linear" in kind}
    assert (4 * SHAPE_BUCKET, 64) in linears and not linears & {(frames, 64) for frames in lengths}, linears
    assert _kernel_shapes(tuned, first) == _kernel_shapes(tuned, second)
    assert any("[1, 150," in shape for _, shape in _kernel_shapes(tuned, _speechlike(1, chunk, seed=1).bfloat16()))


def test_float32_runs_every_length_as_it_is() -> None:
    stock, tuned = _model_pair("group")
    frames = 3 * SHAPE_BUCKET + 2
    shapes = {shape for kind, shape in _kernel_shapes(tuned, _speechlike(1, 320 * frames + 80, seed=2)) if "linear" in kind}
    assert shapes and all(f"[1, {frames}," in shape for shape in shapes), shapes
