"""How close the engine's forward comes to this CPU's limit, per compute type.

For float32, bfloat16 (only where torch reports native bf16: AMX or AVX512-BF16; emulated
bf16 is a few percent of float32's speed) and dynamic int8, in one child process:

* the engine's model-only time on the 2-minute note (`load_recognizer`, as a worker loads
  it, default chunking and CPU kernels), the operations of its forwards over the chunk plan
  (`bench.flops`), and so the GFLOP/s achieved;
* where that time goes: the torch profiler's self time by kind of op (linear layers,
  convolutions, attention, the rest);
* the ceiling of this machine in that type: one large matrix product (2048³) through the
  same library calls, and the nominal peak, computed as

      cores × clock × operations per cycle per core,

  the clock being the one the cores run at under load (`bench.clock`, measured on as many
  cores as the forward uses, right after it; /proc/cpuinfo's "cpu MHz", in a VM the nominal
  clock, where it cannot be measured), and the operations per cycle two FMA units' worth: float32
  64 with AVX-512, 32 with AVX2; bfloat16 1024 with AMX-BF16 (one 16×16×32 tile product
  per 16 cycles), 128 with AVX512-BF16; int8 2048 with AMX-INT8, 256 with AVX-512 VNNI,
  128 with AVX-VNNI, 64 with AVX2. Those are the vendors' per-core figures for two 512-bit
  units; AMD Zen 4 runs AVX-512 on two 256-bit units (each 512-bit instruction in two
  halves), so its AVX-512 figures are halved, as are an SKU's with one FMA unit.

The int8 mode quantises only the linear layers (the convolutions stay float32), so its
"GFLOP/s" is a mixed figure, against the int8 peak for the linear part only.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from typing import Any

from bench.clock import running_ghz
from bench.common import (
    PYTHON,
    Options,
    Row,
    Section,
    child_env,
    cpu_info,
    default_settings,
    machine_info,
    machine_line,
    run_child,
    voice_note,
)
from bench.flops import forward_flops

LENGTH_SECONDS = 120
GEMM_SIZE = 2048
#: Operations per cycle per core, by (compute type, the best /proc/cpuinfo flag present), best first.
OPS_PER_CYCLE: dict[str, tuple[tuple[str, int], ...]] = {
    "float32": (("avx512f", 64), ("avx2", 32)),
    "bfloat16": (("amx_bf16", 1024), ("avx512_bf16", 128)),
    "int8": (("amx_int8", 2048), ("avx512_vnni", 256), ("avx_vnni", 128), ("avx2", 64)),
}
#: Profiler op names by kind; everything else counts as "other".
OP_KINDS = {
    "linear": ("addmm", "linear_pointwise", "mm", "quantized::linear_dynamic", "fbgemm_linear"),
    "convolution": ("convolution",),
    "attention": ("scaled_dot_product", "flash_attention", "bmm"),
}


def nominal_peak(
    compute_type: str, flags: set[str], cores: int, mhz: float, *, half_width_avx512: bool = False
) -> tuple[float, str] | None:
    """(GFLOP/s, how it was computed) for `compute_type`, or None when no listed flag is present."""
    for flag, per_cycle in OPS_PER_CYCLE[compute_type]:
        if flag in flags:
            note = flag
            if half_width_avx512 and flag.startswith("avx512"):
                per_cycle //= 2
                note += ", on 256-bit units"
            return cores * mhz / 1000 * per_cycle, f"{cores} cores × {mhz / 1000:.2f} GHz × {per_cycle} ({note})"
    return None


def run(opts: Options) -> Section:
    machine = machine_info(opts.threads)
    print(f"roofline: {LENGTH_SECONDS} s note; {machine_line(machine)}", file=sys.stderr, flush=True)
    child = run_child([PYTHON, "-m", "bench.roofline", "--model", str(opts.model_dir), "--threads", str(opts.threads),
                       "--file", str(voice_note(LENGTH_SECONDS)), "--reps", str(opts.reps(3, 1))],
                      env=child_env(), timeout=1800, stream_stderr=True)
    data = child.json()
    cpu = cpu_info()
    ghz = running_ghz(opts.threads)
    mhz = ghz * 1000 if ghz else cpu.mhz or 0.0
    section = Section(data=data | {"machine_line": machine_line(machine), "cpu_mhz": cpu.mhz, "running_ghz": ghz})
    section.add(Row("roofline", f"clock under load ({opts.threads} cores; /proc/cpuinfo says "
                                f"{(cpu.mhz or 0) / 1000:.2f} GHz)",
                    f"{ghz:.2f} GHz (dependent-addition loop)" if ghz else "not measurable here: /proc's clock used"))
    for mode, result in data["modes"].items():
        gflops = result["flops"] / result["seconds"] / 1e9
        peak = nominal_peak(mode, set(cpu.flags), opts.threads, mhz, half_width_avx512=cpu.half_width_avx512)
        result["gflops"] = gflops
        share = ""
        if peak and mode == "int8":  # a mixed figure: the peak is the linear layers' only
            share = f"; int8 nominal peak {peak[0]:.0f} ({peak[1]})"
        elif peak:
            share = f"; {gflops / peak[0]:.0%} of nominal {peak[0]:.0f} ({peak[1]})"
        section.add(Row("roofline", f"{mode}: model time 2 min (RTF); GFLOP/s of the forward",
                        f"{result['seconds']:.2f} s ({result['seconds'] / data['duration']:.3f}); {gflops:.0f}{share}",
                        result["reps"]))
        kinds = result["profile"]
        total = sum(kinds.values())
        section.add(Row("roofline", f"{mode}: where the time goes (profiler self time)",
                        ", ".join(f"{kind} {seconds / total:.0%}" for kind, seconds in kinds.items())))
        if result.get("gemm_gflops"):
            section.add(Row("roofline", f"{mode}: {GEMM_SIZE}³ matrix product (this machine's practical ceiling)",
                            f"{result['gemm_gflops']:.0f} GFLOP/s; the forward reaches "
                            f"{gflops / result['gemm_gflops']:.0%} of it"))
    return section


# ----------------------------------------------------------------------------------------
# The child: python -m bench.roofline --model DIR --threads N --file NOTE --reps R
# ----------------------------------------------------------------------------------------


def _kind(name: str) -> str:
    for kind, parts in OP_KINDS.items():
        if any(part in name for part in parts):
            return kind
    return "other"


def _measure(args: argparse.Namespace) -> dict[str, Any]:
    import torch
    from torch.profiler import profile

    from bench.child import _decode
    from bot.asr.chunking import align, plan_chunks
    from bot.asr.hardware import native_bf16
    from bot.asr.recognizer import RecognizerConfig, load_recognizer
    from bot.asr.types import TextOptions

    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message=r"torch\.quantize_per_tensor")
    settings = default_settings()
    audio = _decode(args.file)
    options = TextOptions(model=args.model)
    modes = ["float32", *(["bfloat16"] if native_bf16() else []), "int8"]
    results: dict[str, Any] = {}
    for mode in modes:
        config = RecognizerConfig(device="cpu", compute_type=mode, cpu_kernels=settings.asr_cpu_kernels,
                                  chunk_seconds=settings.asr_chunk_seconds, stride_seconds=settings.asr_stride_seconds)
        recognizer = load_recognizer(args.model, config, attention=settings.asr_attention)
        frame = recognizer.samples_per_frame
        chunk, stride = (align(seconds, sampling_rate=16000, samples_per_frame=frame)
                         for seconds in (config.chunk_seconds, config.stride_seconds))
        chunks = plan_chunks(len(audio), chunk=chunk, stride_left=stride, stride_right=stride)
        flops = sum(sum(forward_flops(recognizer.model.config, item.length).values()) for item in chunks)
        recognizer.transcribe(audio, options)  # every chunk length once: oneDNN builds its kernels per shape
        times = [recognizer.transcribe(audio, options).processing_seconds for _ in range(args.reps)]
        with profile() as prof:
            recognizer.transcribe(audio, options)
        kinds: dict[str, float] = {"linear": 0.0, "convolution": 0.0, "attention": 0.0, "other": 0.0}
        for event in prof.key_averages():
            kinds[_kind(event.key)] += event.self_cpu_time_total / 1e6
        gemm = None
        if mode != "int8":
            dtype = getattr(torch, mode)
            a, b = torch.randn(GEMM_SIZE, GEMM_SIZE, dtype=dtype), torch.randn(GEMM_SIZE, GEMM_SIZE, dtype=dtype)
            a @ b
            started = time.perf_counter()
            for _ in range(5):
                a @ b
            gemm = 5 * 2 * GEMM_SIZE**3 / (time.perf_counter() - started) / 1e9
        results[mode] = {"seconds": min(times), "times": times, "reps": len(times), "flops": flops,
                         "profile": kinds, "gemm_gflops": gemm}
        print(f"roofline: {mode} {min(times):.2f} s, {flops / min(times) / 1e9:.0f} GFLOP/s", file=sys.stderr, flush=True)
        del recognizer
    return {"duration": len(audio) / 16000, "threads": args.threads, "modes": results}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.roofline")
    parser.add_argument("--model", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--file", required=True)
    parser.add_argument("--reps", type=int, required=True)
    print(json.dumps(_measure(parser.parse_args(argv))), flush=True)


if __name__ == "__main__":
    main()
