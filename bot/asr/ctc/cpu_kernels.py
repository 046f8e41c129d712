"""Faster CPU forward paths for wav2vec2-style CTC models that compute the same function.

The stock forward spends much of a chunk's time on things other than arithmetic, and these
three replacements remove that (figures: one 30 s chunk of the full base architecture, two
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
  (the same speed in float32).
* **`nn.Linear` through oneDNN** (`torch.ops.mkldnn._linear_pointwise`, the kernel that
  torch.compile's CPU backend emits): in float32 on the model's own (shared) weight tensors,
  10–20 % more GFLOP/s than the MKL `addmm` that eager mode calls for these shapes; in
  bfloat16 on weights packed once into oneDNN's blocked layout (AMX tiles), up to twice the
  GFLOP/s of eager bfloat16 for the 768×768 projections, ~7 % of the whole model.
* **The positional convolution in channels-last layout** (768 channels, kernel 128, 16
  groups): its input already lies time-major in memory, and oneDNN's grouped kernel for
  that layout is ~1.6× faster than the channels-first one.

Each replacement sets a forward on this one model instance and uses its float32 parameters
as they are, so workers still share one copy of the weights. In float32 the results differ
from the stock forward only by rounding (summation order, like a different thread count):
`tests/test_cpu_kernels.py` checks the logits against the stock forward and the transcript;
in bfloat16 it checks that the tuned forward is as close to float32 as the stock one.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

log = logging.getLogger(__name__)

#: Bytes of layer 0's output per feature-encoder block: under glibc's largest mmap threshold
#: (32 MB), so blocks reuse heap memory. For wav2vec2-base that is 100 frames in float32
#: (512 × 6,400 floats) and 200 in bfloat16; half or twice that measured slower.
BLOCK_BYTES = 13 * 2**20


def tune_for_cpu(model: nn.Module) -> list[str]:
    """Install the faster float32 forwards that apply to `model`; returns what was installed."""
    installed = []
    base = getattr(model, "base_model", model)
    encoder = getattr(base, "feature_extractor", None)
    if encoder is not None and _blockable(encoder, model.config):
        _install(encoder, partial(_blocked_feature_encoder, encoder))
        installed.append("blocked feature encoder")
    linears = [module for module in model.modules() if type(module) is nn.Linear]
    fp32 = [module for module in linears if module.weight.dtype == torch.float32]
    if fp32 and _onednn_linear_available():
        for module in fp32:
            _install(module, partial(_onednn_linear, module))
        installed.append("oneDNN linear")
    bf16 = [module for module in linears if module.weight.dtype == torch.bfloat16]
    if bf16 and _packed_bf16_linear_available():
        for module in bf16:
            _pack(module)
            _install(module, partial(_onednn_linear, module))
        installed.append("oneDNN linear, packed bfloat16 weights")
    conv = getattr(getattr(getattr(base, "encoder", None), "pos_conv_embed", None), "conv", None)
    if isinstance(conv, nn.Conv1d) and not isinstance(conv.padding, str):
        _install(conv, partial(_conv1d_channels_last, conv))
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


def _blocked_feature_encoder(encoder: Any, input_values: torch.Tensor) -> torch.Tensor:
    """The encoder's (batch, channels, frames) output, computed a block of frames at a time.

    Hidden states stay time-major, (batch, frames, channels), from layer 0 to the output:
    each convolution runs as oneDNN's channels-last kernel, whose input and output are
    exactly that layout, so no layer converts its input or output.
    """
    layers = encoder.conv_layers
    field, hop = receptive_field([layer.conv.kernel_size[0] for layer in layers],
                                 [layer.conv.stride[0] for layer in layers])
    audio = input_values.contiguous()
    frames = (audio.shape[1] - field) // hop + 1
    if frames < 1:
        return encoder.__class__.forward(encoder, input_values)  # the stock error for too-short input
    group_norm = isinstance(getattr(layers[0], "layer_norm", None), nn.GroupNorm)
    scale_shift = _first_layer_norm(layers[0], audio) if group_norm else None
    weights = [_channels_last_weight(layer.conv) for layer in layers]
    block = block_frames(layers[0].conv, hop, audio.element_size())
    out = torch.empty(audio.shape[0], frames, layers[-1].conv.out_channels, dtype=audio.dtype, device=audio.device)
    for first in range(0, frames, block):
        last = min(first + block, frames)
        hidden = audio[:, first * hop : (last - 1) * hop + field, None]
        for index, (layer, weight) in enumerate(zip(layers, weights, strict=True)):
            hidden = _conv1d_time_major(layer.conv, weight, hidden)
            if index == 0 and scale_shift is not None:
                hidden = torch.addcmul(scale_shift[1], hidden, scale_shift[0])
            elif isinstance(getattr(layer, "layer_norm", None), nn.LayerNorm):
                hidden = layer.layer_norm(hidden)  # over channels: the last dimension here
            hidden = layer.activation(hidden)
        out[:, first:last] = hidden
    return out.transpose(1, 2)


def block_frames(first_conv: nn.Conv1d, hop: int, itemsize: int) -> int:
    """Output frames per block: layer 0's output for a block then fits in `BLOCK_BYTES`."""
    samples_per_frame = hop // first_conv.stride[0]  # layer 0 outputs per encoder output frame
    return max(1, BLOCK_BYTES // (first_conv.out_channels * samples_per_frame * itemsize))


def _first_layer_norm(layer: Any, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Layer 0's group norm as a per-channel (scale, shift) of shape (batch, 1, channels), for
    time-major output, from the whole input's statistics.

    The norm sees conv outputs y_c = w_c · frame (+ b_c) over all frames, so mean_c =
    w_c · mean(frame) (+ b_c) and var_c = w_cᵀ Σ w_c, Σ the frames' covariance: no need
    to hold the 512-channel output of the whole input at once.
    """
    conv, norm = layer.conv, layer.layer_norm
    kernel, stride = conv.kernel_size[0], conv.stride[0]
    batch, length = audio.shape
    count = (length - kernel) // stride + 1
    frames = audio.as_strided((batch, count, kernel), (audio.stride(0), stride, 1)).double()
    frame_mean = frames.mean(dim=1)
    centred = frames - frame_mean[:, None]
    covariance = centred.transpose(1, 2) @ centred / count
    weight = conv.weight[:, 0].double()
    mean = frame_mean @ weight.t()
    if conv.bias is not None:
        mean = mean + conv.bias.double()
    variance = torch.einsum("ck,bkl,cl->bc", weight, covariance, weight)
    scale = norm.weight.double() / torch.sqrt(variance + norm.eps)
    shift = norm.bias.double() - mean * scale
    return scale[:, None].to(audio.dtype), shift[:, None].to(audio.dtype)


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


def _onednn_linear(module: nn.Linear, hidden: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(hidden, module.weight, module.bias, "none", [], "")


def _channels_last_weight(conv: nn.Conv1d) -> torch.Tensor:
    """The weight as a channels-last 2-D kernel: one small copy per forward (the positional
    convolution recomputes its weight from the weight norm at every call anyway)."""
    return conv.weight.unsqueeze(2).contiguous(memory_format=torch.channels_last)


def _conv1d_time_major(conv: nn.Conv1d, weight: torch.Tensor, hidden: torch.Tensor) -> torch.Tensor:
    """`conv` on time-major (batch, length, channels) input, giving time-major output.

    The input seen as (batch, channels, 1, length) is a channels-last 2-D tensor, which
    oneDNN convolves in place of layout; a channels-first conv1d would copy it twice.
    """
    out = F.conv2d(hidden.transpose(1, 2).unsqueeze(2), weight, conv.bias, stride=(1, conv.stride[0]),
                   padding=(0, int(conv.padding[0])), dilation=(1, conv.dilation[0]), groups=conv.groups)
    return out.squeeze(2).transpose(1, 2)


def _conv1d_channels_last(conv: nn.Conv1d, hidden: torch.Tensor) -> torch.Tensor:
    """`conv(hidden)` on (batch, channels, length) input that lies time-major in memory."""
    return _conv1d_time_major(conv, _channels_last_weight(conv), hidden.transpose(1, 2)).transpose(1, 2)
