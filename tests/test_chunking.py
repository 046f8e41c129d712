"""Chunk and stride arithmetic (pure): the same windows as transformers' ASR pipeline."""

from __future__ import annotations

import pytest

from bot.asr.chunking import Chunk, align, plan_chunks


def kept_samples(chunks: list[Chunk]) -> list[tuple[int, int]]:
    """The sample range each chunk contributes once its strides are dropped."""
    return [(c.start + c.left, c.end - c.right) for c in chunks]


def test_alignment_to_the_320_sample_frame() -> None:
    assert align(20.0, sampling_rate=16_000, samples_per_frame=320) == 320_000
    assert align(2.5, sampling_rate=16_000, samples_per_frame=320) == 40_000
    # 1.01 s = 16160 samples = 50.5 frames -> rounds to a whole number of frames
    assert align(1.01, sampling_rate=16_000, samples_per_frame=320) % 320 == 0


def test_exact_boundaries_and_last_chunk() -> None:
    chunks = plan_chunks(100, chunk=40, stride_left=10, stride_right=10)
    assert chunks == [
        Chunk(0, 40, 0, 10),
        Chunk(20, 60, 10, 10),
        Chunk(40, 80, 10, 10),
        Chunk(60, 100, 10, 0),
    ]
    # The kept parts tile the input: no gap, no overlap, nothing past the end.
    assert kept_samples(chunks) == [(0, 30), (30, 50), (50, 70), (70, 100)]


def test_audio_shorter_than_one_chunk_is_one_chunk_without_strides() -> None:
    assert plan_chunks(30, chunk=40, stride_left=10, stride_right=10) == [Chunk(0, 30, 0, 0)]


def test_exact_multiple_has_no_empty_tail() -> None:
    assert plan_chunks(40, chunk=40, stride_left=10, stride_right=10) == [Chunk(0, 40, 0, 0)]
    chunks = plan_chunks(60, chunk=40, stride_left=10, stride_right=10)
    assert chunks == [Chunk(0, 40, 0, 10), Chunk(20, 60, 10, 0)]
    assert kept_samples(chunks) == [(0, 30), (30, 60)]


def test_tail_that_would_be_all_left_context_is_skipped() -> None:
    # The window starting at 80 would hold 5 samples, all of them left context.
    chunks = plan_chunks(85, chunk=40, stride_left=10, stride_right=10)
    assert chunks[-1].end == 85
    assert kept_samples(chunks)[-1][1] == 85


@pytest.mark.parametrize("length", [1, 319, 320, 16_000, 123_457, 960_000, 9_600_000])
def test_kept_parts_always_tile_the_input(length: int) -> None:
    chunk = align(20, sampling_rate=16_000, samples_per_frame=320)
    stride = align(2.5, sampling_rate=16_000, samples_per_frame=320)
    kept = kept_samples(plan_chunks(length, chunk=chunk, stride_left=stride, stride_right=stride))
    assert kept[0][0] == 0 and kept[-1][1] == length
    assert all(a[1] == b[0] for a, b in zip(kept, kept[1:], strict=False))


def test_logit_crop_matches_pipeline_rescale_stride() -> None:
    from transformers.pipelines.automatic_speech_recognition import rescale_stride

    for item in plan_chunks(1_000_000, chunk=320_000, stride_left=40_000, stride_right=40_000):
        frames, left, right = rescale_stride([(item.length, item.left, item.right)], 1 / 320)[0]
        assert item.logit_crop(320) == (left, frames - right)


def test_strides_must_leave_room() -> None:
    with pytest.raises(ValueError, match="longer than both strides"):
        plan_chunks(100, chunk=20, stride_left=10, stride_right=10)
    assert plan_chunks(0, chunk=40, stride_left=10, stride_right=10) == []
