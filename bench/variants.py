"""Opt-in modes and tuning knobs against the float32/sdpa default, on the 2-minute note.

For each variant (one pass without chunking, stock CPU kernels, eager attention, bfloat16,
dynamic int8, torch.compile, chunk and stride lengths, thread counts): model-only RTF (audio decoded
once beforehand), its speed relative to the default, and how often its argmax ids agree
with the default's over the whole file, plus whether the text is identical. Chunkings
are also compared with the one-pass output, which chunking approximates.

Everything runs in one child process and every variant run is followed by a default
run; a variant's speed-up is against the default runs on either side of it, because on
a shared machine the load changes from minute to minute (see bench.child).

Caveat: with the random-weight model a small numeric change flips argmax more easily
than with trained weights, whose logits are peaked; run with --model for real figures.
"""

from __future__ import annotations

import sys
import tempfile

from bench.common import (
    CACHE,
    Options,
    Row,
    Section,
    bench_child,
    child_env,
    fmt_ratio,
    median,
    native_bf16,
    voice_note,
)

FASTEST_OPT_IN_TARGET = 0.05
#: Variants that change arithmetic (opt-in compute modes), as opposed to tuning knobs.
OPT_IN = ("bfloat16", "int8", "torch.compile", "attention eager")
LENGTH_SECONDS = 120


def run(opts: Options) -> Section:
    n = opts.reps(1, 1)
    print(f"variants: {LENGTH_SECONDS} s note, n={n} per variant, each followed by a default run",
          file=sys.stderr, flush=True)
    # An empty inductor cache: torch.compile's first call is then what a fresh container pays.
    with tempfile.TemporaryDirectory(prefix="inductor-", dir=CACHE) as inductor_cache:
        data = bench_child("variants", "--model", str(opts.model_dir), "--file", str(voice_note(LENGTH_SECONDS)),
                           "--reps", str(n), "--threads", str(opts.threads), *(["--quick"] if opts.quick else []),
                           timeout=3600, stream_stderr=True,
                           env=child_env(TORCHINDUCTOR_CACHE_DIR=inductor_cache)).json()
    variants = data["variants"]
    default = variants[0]
    duration = data["duration"]
    default_rtf = median(default["times"]) / duration
    section = Section(data=data)
    support = data["cpu_support"]
    native = native_bf16(support)
    section.add(Row("variants", "CPU bfloat16 support (torch)",
                    ", ".join(f"{k}={v}" for k, v in support.items())
                    + ("" if native else " — no native bf16 (emulated): bfloat16 modes not run")))
    spread = max(default["times"]) / min(default["times"])
    section.add(Row("variants", f"fp32 sdpa tuned kernels, {default['chunk']:g} s / {default['stride']:g} s chunks "
                                f"(default): RTF; slowest/fastest of its {len(default['times'])} runs",
                    f"RTF {default_rtf:.3f}; {fmt_ratio(spread)}", len(default["times"])))
    for variant in variants[1:]:
        speedup = median(variant["speedups"])
        variant["rtf"] = median(variant["times"]) / duration
        variant["rtf_at_default_speed"] = default_rtf / speedup
        text = "same text" if variant["same_text"] else "text differs"
        value = f"{fmt_ratio(speedup)} speed, agree {variant['agreement']:.3f}, {text}"
        if "agreement_one_pass" in variant:
            value += f"; vs one pass {variant['agreement_one_pass']:.3f}"
        if any("quantiz" in w.lower() and "deprecat" in w.lower() for w in variant.get("warnings", [])):
            value += "; torch: quantization API deprecated"
        if "compile" in variant["name"]:
            value += f"; first call (compiling, cold cache) {variant['first_call']:.0f} s"
        section.add(Row("variants", variant["name"], value, len(variant["times"])))
    if "agreement_one_pass" in default:
        section.add(Row("variants", "default vs one pass (agreement)", f"{default['agreement_one_pass']:.3f}"))
    opt_in = [v for v in variants[1:] if v["name"].startswith(OPT_IN)]
    fastest = max(opt_in, key=lambda v: median(v["speedups"]))
    # The RTF the fastest mode would have at the default's median speed in this run.
    rtf = fastest["rtf_at_default_speed"]
    section.add(Row("variants", f"fastest opt-in ({fastest['name']}): RTF", f"{rtf:.3f}", len(fastest["times"]),
                    f"≤ {FASTEST_OPT_IN_TARGET}", rtf <= FASTEST_OPT_IN_TARGET))
    section.data["fastest_opt_in"] = fastest["name"]
    return section
