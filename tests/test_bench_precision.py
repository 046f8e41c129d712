"""bench.precision's summary of transcripts (no corpus, no model: the child's output is given)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.precision import RANDOM_WEIGHTS_NOTE, summarise

MACHINE = {"cpu_model": "Test CPU", "cpu_id": "GenuineTest family 6 model 1", "cpu_flags": ["avx2"],
           "torch_cpu_capability": "AVX2", "logical_cpus": 2, "torch": "2.x"}


def _data(texts: list[dict[str, str]], references: list[str]) -> dict[str, Any]:
    return {
        "native_bf16": False, "capability": "AVX2", "threads": 2, "max_seconds": 4.0,
        "modes": ["float32", "bfloat16", "int8"],
        "files": [{"file": f"f{i}.wav", "reference": reference, "duration": 2.0, "texts": text,
                   "times": {"float32": 0.2, "bfloat16": 5.0, "int8": 0.1}}
                  for i, (text, reference) in enumerate(zip(texts, references, strict=True))],
    }


def _values(section: Any) -> dict[str, str]:
    return {row.metric: row.value for row in section.rows}


def test_word_changes_are_counted_against_float32_and_wer_against_the_references() -> None:
    data = _data(
        [{"float32": "A CAT SAT", "bfloat16": "A CAT SAT", "int8": "A HAT SAT"},
         {"float32": "ON THE MAT", "bfloat16": "ON MAT", "int8": "IN A MAT TOO"}],
        ["a cat sat.", "On the mat!"],
    )
    section = summarise(data, MACHINE, random_weights=True)
    values = _values(section)
    assert values["bfloat16 vs float32: word changes (edits / float32 words); files changed"] == (
        "16.7% (1/6); 1/2 files (50%)")
    assert values["int8 vs float32: word changes (edits / float32 words); files changed"] == (
        "66.7% (4/6); 2/2 files (100%)")
    assert values["float32: WER against the corpus references (random weights: meaningless)"] == "0%"
    assert section.data["wer_vs_reference"]["int8"]["edits"] == 4
    assert section.data["changes_vs_float32"]["bfloat16"]["rate"] == pytest.approx(1 / 6)
    assert values["bfloat16: RTF (engine, decoded audio; all files)"] == "2.500"
    assert values["native bf16 (torch: AMX tiles or AVX512-BF16)"].startswith("no: bfloat16 is emulated")
    assert values["note"] == RANDOM_WEIGHTS_NOTE


def test_a_real_model_gets_no_random_weights_labels() -> None:
    data = _data([{"float32": "HELLO", "bfloat16": "HELLO", "int8": "HELLO"}], ["hello"])
    values = _values(summarise(data, MACHINE, random_weights=False))
    assert values["float32: WER against the corpus references"] == "0%"
    assert "note" not in values
