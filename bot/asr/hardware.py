"""Where a recognizer runs and in which number type: chosen once, from what torch reports.

`ASR_COMPUTE_TYPE=auto` (the default) is the fastest type the hardware runs natively:
float16 on a CUDA GPU, bfloat16 on a CPU with AMX-BF16 or AVX512-BF16 (torch's own
capability checks, never the CPU's name), float32 elsewhere. Without native bf16, torch
emulates it at a small fraction of float32's speed, so auto never picks it there.
float32 stays the exact mode; any explicit type is taken as given.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch

from bot.errors import ModelLoadError

log = logging.getLogger(__name__)


def resolve_device(device: str) -> str:
    """`auto` means CUDA when torch sees a GPU, else the CPU."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError("ASR_DEVICE=cuda but torch sees no CUDA device (is a CUDA build of torch installed?)")
    return device


def native_bf16() -> bool:
    """Whether torch reports bfloat16 matrix instructions on this CPU (AMX tiles or AVX512-BF16)."""
    checks: list[Callable[[], bool] | None] = [
        getattr(torch.cpu, "_is_amx_tile_supported", None),
        getattr(torch.cpu, "_is_avx512_bf16_supported", None),
    ]
    return any(bool(check()) for check in checks if check is not None)


def choose_compute_type(requested: str, *, device: str, bf16_native: bool) -> str:
    """The compute type `requested` means on `device` (a resolved one: "cpu" or "cuda")."""
    if requested != "auto":
        return requested
    if device == "cuda":
        return "float16"
    return "bfloat16" if bf16_native else "float32"


def resolve_compute_type(requested: str, device: str) -> str:
    """`choose_compute_type` with this machine's capabilities; an automatic choice is logged."""
    bf16_native = native_bf16() if device == "cpu" else False
    chosen = choose_compute_type(requested, device=device, bf16_native=bf16_native)
    if requested == "auto":
        log.info("ASR_COMPUTE_TYPE=auto: %s on %s (torch CPU capability %s, native bf16: %s)",
                 chosen, device, torch.backends.cpu.get_cpu_capability(), bf16_native)
    return chosen
