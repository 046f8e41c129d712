"""Faster CPU forward paths for wav2vec2-style CTC models that compute the same function.

The stock forward spends much of a chunk's time on things other than arithmetic, and these
replacements remove that (figures: one 30 s chunk of the full base architecture, two
Zen 3 cores, `python -m bench --only variants` reports the whole-model effect):

* **Feature encoder in blocks of frames.** The stock encoder runs each convolution over the
  whole chunk: layer 0 alone writes 512 × 96,000 floats (196 MB) three times (conv, group
  norm, GELU), layer 1 another 98 MB twice, and so on. Each of those tensors is above
  glibc's mmap threshold, so every one is fresh memory: ~1.5 GB of page faults (1.4 s of
  kernel time) per chunk, and all of it streams through RAM. Every encoder layer but the
  first group norm is local in time, so the encoder can run on short slices of audio (each
  layer-0 output at most `BLOCK_BYTES`, 13 MB: heap memory that is reused, and cache-sized),
  provided that group norm's per-channel mean and variance over the whole chunk are known
  first. They are exact and cheap: layer 0 is a linear map of the 10-sample frames, so its
  mean is `w·mean(frames)` and its variance `wᵀ Σ w`, Σ being the frames' 10×10 covariance
  (computed in float64). Encoder 2.3 → 1.4 s. The blocks stay time-major (frames ×
  channels) throughout, the layout of oneDNN's channels-last convolution: a channels-first
  conv1d in bfloat16 copies its input and output to that layout and back, and so the
  time-major encoder is ~2.4× the blocked channels-first one in bfloat16 on an AMX CPU
  (the same speed in float32). With those statistics the group norm is a per-channel
  affine map that folds into layer 0's weights, and each GELU runs inside its convolution
  (a oneDNN post-op): otherwise each would be one more pass over the largest tensors of the
  forward, which in bfloat16, where the arithmetic is fast, is about a tenth of the model's
  time. In bfloat16 the layers after the first run as matrix products over overlapping
  frames, on weights packed once: oneDNN's bfloat16 product is faster than its convolution
  kernel for them (~10 % of the whole model on a 30 s chunk with AMX).
* **`nn.Linear` through oneDNN** (`torch.ops.mkldnn._linear_pointwise`, the kernel that
  torch.compile's CPU backend emits): in float32 on the model's own (shared) weight tensors,
  10–20 % more GFLOP/s than the MKL `addmm` that eager mode calls for these shapes; in
  bfloat16 on weights packed once into oneDNN's blocked layout (AMX tiles), up to twice the
  GFLOP/s of eager bfloat16 for the 768×768 projections, ~7 % of the whole model.
* **The positional convolution in channels-last layout** (768 channels, kernel 128, 16
  groups): its input already lies time-major in memory, and oneDNN's grouped kernel for
  that layout is ~1.6× faster than the channels-first one.
* **In bfloat16, lengths rounded up to a few recurring shapes** (`LengthRounding`): oneDNN
  builds its bfloat16 kernels per input shape, and voice notes come in every length.

Each replacement sets a forward on this one model instance and uses its float32 parameters
as they are, so workers still share one copy of the weights. In float32 the results differ
from the stock forward only by rounding (summation order, like a different thread count):
`tests/test_cpu_kernels.py` checks the logits against the stock forward and the transcript;
in bfloat16 it checks that the tuned forward is as close to float32 as the stock one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache, partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

#: Bytes of layer 0's output per feature-encoder block: under glibc's largest mmap threshold
#: (32 MB), so blocks reuse heap memory. For wav2vec2-base that is 100 frames in float32
#: (512 × 6,400 floats) and 200 in bfloat16; half or twice that measured slower.
BLOCK_BYTES = 13 * 2**20
#: In bfloat16, lengths (frames) that do not recur run rounded up to a multiple of this (see
#: `LengthRounding`).
SHAPE_BUCKET = 32


@dataclass(frozen=True)
class LengthRounding:
    """The length (frames, or rows of a linear layer) to run a length at, in bfloat16.

    oneDNN builds its bfloat16 kernels (JIT code) for each input shape it meets: on a new length,
    ~25 ms for wav2vec2-base's linear layers on an AMX CPU and several ms more for the
    convolutions, a quarter of a 5 s note's model time. Voice notes come in every length, so
    without rounding nearly every note pays it. Rounded up to `SHAPE_BUCKET`, a few dozen shapes
    cover all lengths, each built once per process; the rows added are zeros and their results
    are dropped (no row's result depends on another row, and no output frame on samples past its
    receptive field). `steady`, a full chunk's frames, recurs anyway and runs as it is, as does
    any multiple of it (a batch of full chunks). float32 runs every length as it is: its kernels
    cost little to build, and the copy that rounding takes cost more than it saved.
    """

    steady: int | None = None

    def __call__(self, length: int) -> int:
        if length % SHAPE_BUCKET == 0 or (self.steady is not None and length % self.steady == 0):
            return length
        return -(-length // SHAPE_BUCKET) * SHAPE_BUCKET


def tune_for_cpu(model: nn.Module, *, chunk_samples: int | None = None) -> list[str]:
    """Install the faster forwards that apply to `model`; returns what was installed.

    `chunk_samples`: the length of a full chunk, the length every long input repeats (see
    `LengthRounding`)."""
    installed = []
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "feature_extractor", None)
    blockable = encoder is not None and _blockable(encoder, model.config)
    bfloat16 = next(model.parameters()).dtype == torch.bfloat16
    rounding = None
    if bfloat16:
        steady = None
        if blockable and chunk_samples is not None:
            field, hop = _encoder_field(encoder)
            steady = max(1, (chunk_samples - field) // hop + 1)
        rounding = LengthRounding(steady)
    packed_bf16 = bfloat16 and _packed_bf16_linear_available()  # a probe: only where there is bfloat16 to pack
    if blockable:
        products = _matrix_product_weights(encoder, packed=packed_bf16)
        _install(encoder, partial(_blocked_feature_encoder, encoder, _fusable_gelus(encoder), rounding, products))
        installed.append("blocked feature encoder"
                         + (", convolutions as matrix products" if any(p is not None for p in products) else ""))
    linears = [module for module in model.modules() if type(module) is nn.Linear]
    fp32 = [module for module in linears if module.weight.dtype == torch.float32]
    if fp32 and _onednn_linear_available():
        for module in fp32:
            _install(module, partial(_onednn_linear, module, rounding))
        installed.append("oneDNN linear")
    bf16 = [module for module in linears if module.weight.dtype == torch.bfloat16]
    if bf16 and packed_bf16:
        for module in bf16:
            _pack(module)
            _install(module, partial(_onednn_linear, module, rounding))
        installed.append("oneDNN linear, packed bfloat16 weights")
    conv = getattr(getattr(getattr(base, "encoder", None), "pos_conv_embed", None), "conv", None)
    if isinstance(conv, nn.Conv1d) and not isinstance(conv.padding, str):
        _install(conv, partial(_conv1d_channels_last, conv, rounding))
        installed.append("channels-last positional convolution")
    log.info("CPU kernels: %s", ", ".join(installed) or "stock")
    return installed


def _install(module: Any, forward: Callable[[torch.Tensor], torch.Tensor]) -> None:
    """Give this one module instance its own forward; the class's, and so every other instance, stay stock."""
    module.forward = forward


# ----------------------------------------------------------------------------------------
# Feature encoder
# ----------------------------------------------------------------------------------------


def receptive_field(kernels: list[int], strides: list[int]) -> tuple[int, int]:
    """(samples seen by one output frame, samples between frames) of a stack of convolutions."""
    field, hop = 1, 1
    for kernel, stride in zip(kernels, strides, strict=True):
        field += (kernel - 1) * hop
        hop *= stride
    return field, hop


def _blockable(encoder: nn.Module, config: object) -> bool:
    """True for the wav2vec2 encoder layouts whose only non-local step is layer 0's group norm.

    "layer" models (wav2vec2-large, XLS-R) normalise each frame over channels: local.
    "group" models (wav2vec2-base, HuBERT-base) normalise layer 0 per channel over time.
    """
    layers = getattr(encoder, "conv_layers", None)
    norm = getattr(config, "feat_extract_norm", None)
    if layers is None or norm not in ("group", "layer"):
        return False
    if not all(isinstance(getattr(layer, "conv", None), nn.Conv1d) and layer.conv.padding == (0,)
               and layer.conv.dilation == (1,) for layer in layers):
        return False
    first, rest = layers[0], layers[1:] if norm == "group" else layers
    if not all(isinstance(getattr(layer, "layer_norm", None), nn.LayerNorm | None) for layer in rest):
        return False
    if norm == "group":
        group_norm = getattr(first, "layer_norm", None)
        return (first.conv.in_channels == 1 and isinstance(group_norm, nn.GroupNorm)
                and group_norm.num_groups == group_norm.num_channels and group_norm.affine)
    return True


def _blocked_feature_encoder(encoder: Any, fused_gelu: tuple[bool, ...], rounding: LengthRounding | None,
                             products: tuple[torch.Tensor | None, ...], input_values: torch.Tensor) -> torch.Tensor:
    """The encoder's (batch, channels, frames) output, computed a block of frames at a time.

    Hidden states stay time-major, (batch, frames, channels), from layer 0 to the output:
    each convolution runs as oneDNN's channels-last kernel, whose input and output are
    exactly that layout, so no layer converts its input or output, or, where `products` (per
    layer) holds a packed weight for it, as one matrix product (`_conv1d_as_matrix_product`).
    Each input of the batch runs alone: its own layer-0 group norm folds into its own layer-0
    weights, and a GELU straight after a convolution (`fused_gelu`, per layer) runs inside it
    as a oneDNN post-op, so neither makes one more pass over the largest tensors of the
    forward. With `rounding`, a last block shorter than the others runs at a rounded length,
    on zeros past the end.
    """
    layers = encoder.conv_layers
    field, hop = _encoder_field(encoder)
    audio = input_values.contiguous()
    frames = (audio.shape[1] - field) // hop + 1
    if frames < 1:
        return encoder.__class__.forward(encoder, input_values)  # the stock error for too-short input
    group_norm = isinstance(getattr(layers[0], "layer_norm", None), nn.GroupNorm)
    weights = [None if product is not None else (_channels_last_weight(layer.conv), layer.conv.bias)
               for layer, product in zip(layers, products, strict=True)]
    norms = [_channel_norm(layer) for layer in layers]  # layer 0's group norm is not one: it folds
    block = block_frames(layers[0].conv, hop, audio.element_size())
    out = torch.empty(audio.shape[0], frames, layers[-1].conv.out_channels, dtype=audio.dtype, device=audio.device)
    for item in range(audio.shape[0]):
        samples = audio[item : item + 1]
        if group_norm:
            weights[0] = _folded_first_layer(layers[0], samples)
        for first in range(0, frames, block):
            last = min(first + block, frames)
            run = min(block, rounding(last - first)) if rounding is not None else last - first
            needed = (run - 1) * hop + field  # samples under `run` output frames
            span = samples[:, first * hop : first * hop + needed]
            if span.shape[1] < needed:
                span = F.pad(span, (0, needed - span.shape[1]))
            hidden = span[:, :, None]
            for layer, weight, product, norm, fused in zip(layers, weights, products, norms, fused_gelu, strict=True):
                activation = "gelu" if fused else "none"
                if product is not None:
                    hidden = _conv1d_as_matrix_product(layer.conv, product, hidden, activation=activation)
                else:
                    assert weight is not None  # a layer without a product keeps its convolution's weight
                    hidden = _conv1d_time_major(layer.conv, *weight, hidden, activation=activation)
                if norm is not None:
                    hidden = norm(hidden)  # over channels: the last dimension here
                if not fused:
                    hidden = layer.activation(hidden)
            out[item : item + 1, first:last] = hidden[:, : last - first]
    return out.transpose(1, 2)


def _encoder_field(encoder: Any) -> tuple[int, int]:
    layers = encoder.conv_layers
    return receptive_field([layer.conv.kernel_size[0] for layer in layers], [layer.conv.stride[0] for layer in layers])


def _channel_norm(layer: Any) -> nn.LayerNorm | None:
    norm = getattr(layer, "layer_norm", None)
    return norm if isinstance(norm, nn.LayerNorm) else None


def _fusable_gelus(encoder: Any) -> tuple[bool, ...]:
    """Per encoder layer: does an exact GELU follow its convolution with nothing between (no
    norm over channels), and can oneDNN fuse it here? Layer 0's group norm folds into its
    convolution, so it does not stand between."""
    fusable = _fused_gelu_available(next(encoder.parameters()).dtype)
    return tuple(fusable and _channel_norm(layer) is None and _is_exact_gelu(layer.activation)
                 for layer in encoder.conv_layers)


def _is_exact_gelu(activation: Callable[[torch.Tensor], torch.Tensor]) -> bool:
    """True for an activation that computes the erf GELU (transformers' "gelu", nn.GELU()), the
    one oneDNN's gelu post-op computes. Probed, not looked up by class, so a tanh or a python
    variant is never fused."""
    probe = torch.linspace(-6.0, 6.0, 97, dtype=torch.float64)
    try:
        return bool(torch.equal(activation(probe), F.gelu(probe)))
    except (RuntimeError, TypeError):
        return False


@cache
def _fused_gelu_available(dtype: torch.dtype) -> bool:
    """oneDNN's convolution with a GELU post-op in `dtype`, on channels-last input as the encoder
    gives it. In bfloat16 oneDNN refuses CPUs without AVX512-BW/VL/DQ or AVX-NE-CONVERT (an
    AVX2-only one), where the plain convolution still runs (emulated) and the GELU runs after it."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = torch.ones(1, 3, 1, 4, dtype=dtype).contiguous(memory_format=torch.channels_last)
        weight = torch.ones(2, 3, 1, 2, dtype=dtype).contiguous(memory_format=torch.channels_last)
        out = torch.ops.mkldnn._convolution_pointwise(probe, weight, None, [0, 0], [1, 1], [1, 1], 1, "gelu", [], "none")
        return bool(torch.allclose(out.float(), F.gelu(torch.full((1, 2, 1, 3), 6.0))))
    except (AttributeError, RuntimeError):
        return False


def _matrix_product_weights(encoder: Any, *, packed: bool) -> tuple[torch.Tensor | None, ...]:
    """Per encoder layer, its weight packed for `_conv1d_as_matrix_product`, or None where the layer
    stays a convolution: every layer unless `packed` (bfloat16 weights oneDNN can pack), and layer
    0 always, whose single input channel leaves a product of depth 10."""
    return tuple(_packed_product_weight(layer.conv) if packed and layer.conv.in_channels > 1 and layer.conv.groups == 1
                 else None for layer in encoder.conv_layers)


def _packed_product_weight(conv: nn.Conv1d) -> torch.Tensor:
    """(out, in, kernel) → (out, kernel × in): the order of a row of the input's overlapping frames."""
    weight = conv.weight.detach().permute(0, 2, 1).reshape(conv.out_channels, -1)
    return torch.ops.mkldnn._reorder_linear_weight(weight.contiguous())


def _conv1d_as_matrix_product(conv: nn.Conv1d, packed: torch.Tensor, hidden: torch.Tensor, *,
                              activation: str = "none") -> torch.Tensor:
    """`conv` (no padding, no dilation, one group) on one time-major (1, length, channels) input, as
    one matrix product: each output frame's `kernel` input frames lie side by side in memory, so the
    rows are an overlapping view of the input (a copy only where the kernel is wider than the
    stride). For the encoder's 512-channel layers oneDNN's bfloat16 matrix product beats its
    bfloat16 convolution kernel; in float32 the convolution is the faster, so float32 keeps it."""
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    source = hidden[0].contiguous()
    length, channels = source.shape
    frames = (length - kernel) // stride + 1
    rows = source.as_strided((frames, kernel * channels), (stride * channels, 1))
    algorithm = "none" if activation == "gelu" else ""  # "none": the erf GELU, not its tanh approximation
    return torch.ops.mkldnn._linear_pointwise(rows.contiguous(), packed, conv.bias, activation, [], algorithm)[None]


def block_frames(first_conv: nn.Conv1d, hop: int, itemsize: int) -> int:
    """Output frames per block: layer 0's output for a block then fits in `BLOCK_BYTES`."""
    samples_per_frame = hop // first_conv.stride[0]  # layer 0 outputs per encoder output frame
    return max(1, BLOCK_BYTES // (first_conv.out_channels * samples_per_frame * itemsize))


def _folded_first_layer(layer: Any, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer 0's convolution and its group norm over the whole of `audio` (one input, shape
    (1, samples)) as one convolution: its (channels-last weight, bias).

    The norm sees conv outputs y_c = w_c · frame + b_c over all frames, so mean_c =
    w_c · mean(frame) + b_c and var_c = w_cᵀ Σ w_c, Σ the frames' covariance: no need to hold
    the 512-channel output of the whole input at once. Normalising is then the per-channel
    affine map s_c (y_c − mean_c) + β_c = (s_c w_c) · frame + β_c − s_c w_c · mean(frame), in
    which the conv bias cancels.
    """
    conv, norm = layer.conv, layer.layer_norm
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    count = (audio.shape[1] - kernel) // stride + 1
    frames = audio[0].as_strided((count, kernel), (stride, 1)).double()
    frame_mean = frames.mean(dim=0)
    centred = frames - frame_mean
    covariance = centred.t() @ centred / count
    weight = conv.weight[:, 0].double()
    variance = torch.einsum("ck,kl,cl->c", weight, covariance, weight)
    scale = norm.weight.double() / torch.sqrt(variance + norm.eps)
    bias = norm.bias.double() - scale * (weight @ frame_mean)
    folded = (weight * scale[:, None])[:, None, None, :].to(audio.dtype)
    return folded.contiguous(memory_format=torch.channels_last), bias.to(audio.dtype)


# ----------------------------------------------------------------------------------------
# Linear layers and the positional convolution
# ----------------------------------------------------------------------------------------


def _onednn_linear_available() -> bool:
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        probe = torch.ones(2, 3)
        return bool(torch.ops.mkldnn._linear_pointwise(probe, torch.ones(4, 3), None, "none", [], "")
                    .eq(3).all())
    except (AttributeError, RuntimeError):  # a build without the op, or a CPU oneDNN refuses
        return False


def _packed_bf16_linear_available() -> bool:
    if not (torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()):
        return False
    try:
        probe = torch.ones(2, 3, dtype=torch.bfloat16)
        packed = torch.ops.mkldnn._reorder_linear_weight(torch.ones(4, 3, dtype=torch.bfloat16))
        return bool(torch.ops.mkldnn._linear_pointwise(probe, packed, None, "none", [], "").eq(3).all())
    except (AttributeError, RuntimeError):
        return False


def _pack(module: nn.Linear) -> None:
    """Replace a bfloat16 weight by oneDNN's blocked layout of it, reordered once (the packing
    torch.compile's freezing does). bfloat16 weights are this process's own (loaded as such, or
    converted from shared float32 ones), so the packed copy takes their place at no cost."""
    module.weight = nn.Parameter(torch.ops.mkldnn._reorder_linear_weight(module.weight.detach()), requires_grad=False)


def _onednn_linear(module: nn.Linear, rounding: LengthRounding | None, hidden: torch.Tensor) -> torch.Tensor:
    """The linear layer on `hidden`'s rows, as many as `rounding` says, then the real ones."""
    rows = hidden.numel() // hidden.shape[-1]
    run = rounding(rows) if rounding is not None else rows
    if run == rows:
        return torch.ops.mkldnn._linear_pointwise(hidden, module.weight, module.bias, "none", [], "")
    padded = F.pad(hidden.reshape(rows, hidden.shape[-1]), (0, 0, 0, run - rows))
    out = torch.ops.mkldnn._linear_pointwise(padded, module.weight, module.bias, "none", [], "")
    return out[:rows].view(*hidden.shape[:-1], out.shape[-1])


def _channels_last_weight(conv: nn.Conv1d) -> torch.Tensor:
    """The weight as a channels-last 2-D kernel: one small copy per forward (the positional
    convolution recomputes its weight from the weight norm at every call anyway)."""
    return conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _conv1d_time_major(conv: nn.Conv1d, weight: torch.Tensor, bias: torch.Tensor | None, hidden: torch.Tensor,
                       *, activation: str = "none") -> torch.Tensor:
    """`conv`'s convolution with this weight and bias on time-major (batch, length, channels)
    input, giving time-major output; `activation` "gelu" applies the erf GELU inside it.

    The input seen as (batch, channels, 1, length) is a channels-last 2-D tensor, which
    oneDNN convolves in place of layout; a channels-first conv1d would copy it twice.
    """
    planar = hidden.transpose(1, 2).unsqueeze(2)
    padding, stride, dilation = (0, int(conv.padding[0])), (1, conv.stride[0]), (1, conv.dilation[0])
    if activation == "none":
        out = F.conv2d(planar, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=conv.groups)
    else:
        out = torch.ops.mkldnn._convolution_pointwise(planar, weight, bias, padding, stride, dilation, conv.groups,
                                                      activation, [], "none")
    return out.squeeze(2).transpose(1, 2)


def _conv1d_channels_last(conv: nn.Conv1d, rounding: LengthRounding | None, hidden: torch.Tensor) -> torch.Tensor:
    """`conv(hidden)` on (batch, channels, length) input that lies time-major in memory, at the
    length `rounding` says: the zeros added lie where the convolution's own zero padding would
    be, so the frames kept are the same."""
    length = hidden.shape[2]
    time_major = hidden.transpose(1, 2)
    run = rounding(length) if rounding is not None else length
    if run != length:
        time_major = F.pad(time_major, (0, 0, 0, run - length))
    out = _conv1d_time_major(conv, _channels_last_weight(conv), conv.bias, time_major)
    kept = (length + 2 * int(conv.padding[0]) - conv.dilation[0] * (conv.kernel_size[0] - 1) - 1) // conv.stride[0] + 1
    return out[:, :kept].transpose(1, 2)
