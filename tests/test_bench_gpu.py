"""bench.gpu: the one-command GPU run, checked where there is no GPU (its CPU mode, tiny model, real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.common import child_env
from bench.gpu import QUICK, note_lengths, synthetic_note

ROOT = Path(__file__).resolve().parent.parent


def test_synthetic_notes_are_the_same_in_every_process_and_valid_audio() -> None:
    first, again, other = synthetic_note(3.5, seed=7), synthetic_note(3.5, seed=7), synthetic_note(3.5, seed=8)
    assert first.dtype == np.float32 and first.shape == (56_000,)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert np.isfinite(first).all() and np.abs(first).max() <= 1.0
    assert np.abs(first).max() > 0.01  # not silence: the model must have something to work on


def test_note_lengths_stay_in_the_plan_range() -> None:
    lengths = note_lengths(QUICK)
    assert len(lengths) == QUICK.notes
    assert all(QUICK.note_low <= seconds <= QUICK.note_high for seconds in lengths)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without CUDA")
def test_without_cuda_it_stops_with_one_line() -> None:
    run = subprocess.run([sys.executable, "-m", "bench.gpu"], capture_output=True, text=True, cwd=ROOT,
                         env=child_env(), timeout=300)
    assert run.returncode == 2
    assert run.stdout == ""
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--device cpu --quick" in lines[0]
