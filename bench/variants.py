"""Opt-in modes and tuning knobs against the float32/sdpa default, on the 2-minute note.

For each variant (eager attention, bfloat16, dynamic int8, torch.compile, chunk and
stride lengths, thread counts): model-only RTF (audio decoded once beforehand), its
speed relative to the default, and how often its argmax ids agree with the default's
over the whole file, plus whether the text is identical. All in one child process so
every ratio compares runs of the same minutes on the same machine; the default is run
first and last to show drift. Chunking variants are also compared with one pass over
the whole file (what the seed does), which is the output chunking approximates.

Caveat: with the random-weight model a small numeric change flips argmax more easily
than with trained weights, whose logits are peaked; run with --model for real figures.
"""

from __future__ import annotations

import sys

from bench.common import Options, Row, Section, bench_child, fmt_ratio, voice_note

FASTEST_OPT_IN_TARGET = 0.05
#: Variants that change arithmetic (opt-in compute modes), as opposed to tuning knobs.
OPT_IN = ("bfloat16", "int8", "torch.compile", "attention eager")
LENGTH_SECONDS = 120


def run(opts: Options) -> Section:
    n = opts.reps(2, 1)
    print(f"variants: {LENGTH_SECONDS} s note, n={n} per variant (this is the long one)", file=sys.stderr, flush=True)
    data = bench_child("variants", "--model", str(opts.model_dir), "--file", str(voice_note(LENGTH_SECONDS)),
                       "--reps", str(n), "--threads", str(opts.threads), *(["--quick"] if opts.quick else []),
                       timeout=3600, stream_stderr=True).json()
    variants = data["variants"]
    default = variants[0]
    last_default = variants[-1]
    section = Section(data=data)
    drift = last_default["rtf"] / default["rtf"]
    support = data["cpu_support"]
    native = support.get("avx512_bf16") or support.get("amx_tile")
    section.add(Row("variants", "CPU bfloat16 support (torch)",
                    ", ".join(f"{k}={v}" for k, v in support.items())
                    + ("" if native else " — no native bf16: bfloat16 is emulated")))
    for variant in variants:
        speed = default["rtf"] / variant["rtf"]
        text = "same text" if variant["same_text"] else "text differs"
        value = (f"RTF {variant['rtf']:.3f}, {fmt_ratio(speed)} faster, agree {variant['agreement']:.3f}, {text}")
        if "agreement_one_pass" in variant:
            value += f", vs one pass {variant['agreement_one_pass']:.3f}"
        if "compile" in variant["name"]:
            value += f", first call {variant['first_call']:.0f} s"
        reps = len(variant["times"])
        section.add(Row("variants", variant["name"], value, reps))
    opt_in = [v for v in variants if any(v["name"].startswith(k) for k in OPT_IN)]
    fastest = min(opt_in, key=lambda v: v["rtf"])
    section.add(Row("variants", f"fastest opt-in: {fastest['name']}", f"RTF {fastest['rtf']:.3f}", len(fastest["times"]),
                    f"≤ {FASTEST_OPT_IN_TARGET}", fastest["rtf"] <= FASTEST_OPT_IN_TARGET))
    section.add(Row("variants", "drift: default last / default first", fmt_ratio(drift), n))
    section.data["fastest_opt_in"] = fastest["name"]
    return section
