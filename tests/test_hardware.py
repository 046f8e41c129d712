"""The automatic compute type: the pure choice, and what a recognizer built with "auto" runs and echoes."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from bot.asr.hardware import choose_compute_type, native_bf16
from bot.asr.loading import load_model
from bot.asr.recognizer import RecognizerConfig, build_recognizer
from bot.asr.types import TextOptions


@pytest.mark.parametrize(
    ("device", "bf16_native", "expected"),
    [("cuda", False, "float16"), ("cuda", True, "float16"), ("cpu", True, "bfloat16"), ("cpu", False, "float32")],
)
def test_auto_is_the_fastest_native_type(device: str, bf16_native: bool, expected: str) -> None:
    assert choose_compute_type("auto", device=device, bf16_native=bf16_native) == expected


@pytest.mark.parametrize("requested", ["float32", "bfloat16", "float16", "int8"])
def test_an_explicit_type_is_taken_as_given(requested: str) -> None:
    assert choose_compute_type(requested, device="cpu", bf16_native=False) == requested
    assert choose_compute_type(requested, device="cpu", bf16_native=True) == requested


def test_a_recognizer_built_with_auto_runs_and_echoes_the_concrete_choice(
    tiny_model: Path, caplog: pytest.LogCaptureFixture
) -> None:
    expected = "bfloat16" if native_bf16() else "float32"
    with caplog.at_level(logging.INFO, logger="bot.asr.hardware"):
        recognizer = build_recognizer(load_model(str(tiny_model)), RecognizerConfig(device="cpu", compute_type="auto"))
    assert f"ASR_COMPUTE_TYPE=auto: {expected} on cpu" in caplog.text
    result = recognizer.transcribe(np.zeros(16_000, dtype=np.float32), TextOptions(model=str(tiny_model)))
    assert result.options.compute_type == expected
    assert result.options.device == "cpu"

