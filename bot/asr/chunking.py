"""Chunking long audio for a CTC model: pure arithmetic, no model, no I/O.

Attention in wav2vec2 is quadratic in length, so a single forward pass over ten minutes
needs tens of GB. Instead the audio is cut into overlapping chunks; each chunk is run
with some context on the left and right ("stride"), and the logits of that context are
dropped, so every output frame was computed with context on both sides. The kept logits
are concatenated and CTC-decoded once.

This follows transformers' ASR pipeline for CTC models exactly (`chunk_iter` and
`rescale_stride`), so our output can be checked against it: chunk and stride lengths are
rounded to the model's frame (320 samples for wav2vec2: one logit per 20 ms at 16 kHz).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Chunk:
    """One window of the input and the part of its logits that is kept.

    `start`/`end` index samples of the whole input; `left`/`right` are the context
    samples at each edge whose logits are dropped (0 at the ends of the input).
    """

    start: int
    end: int
    left: int
    right: int

    @property
    def length(self) -> int:
        return self.end - self.start

    def logit_crop(self, samples_per_frame: int) -> tuple[int, int]:
        """The [first, last) logit frames of this chunk to keep.

        Same rounding as the pipeline's `rescale_stride`: the frame count is estimated
        from the sample count, and the strides are scaled in proportion.
        """
        frames = int(round(self.length / samples_per_frame))
        left = int(round(self.left / self.length * frames))
        right = int(round(self.right / self.length * frames))
        return left, frames - right


def align(seconds: float, *, sampling_rate: int, samples_per_frame: int) -> int:
    """Seconds to a sample count that is a whole number of model frames."""
    return int(round(seconds * sampling_rate / samples_per_frame) * samples_per_frame)


def plan_chunks(num_samples: int, *, chunk: int, stride_left: int, stride_right: int) -> list[Chunk]:
    """Cut `num_samples` into overlapping chunks of `chunk` samples.

    Consecutive chunks start `chunk - stride_left - stride_right` samples apart, so the
    kept parts tile the input without gap or overlap. The first chunk has no left
    context and the last no right context. A trailing window that would hold nothing
    but left context is skipped. Input shorter than one chunk gives one chunk.
    """
    step = chunk - stride_left - stride_right
    if step <= 0:
        raise ValueError(
            f"chunk length ({chunk} samples) must be longer than both strides together "
            f"({stride_left} + {stride_right})"
        )
    if num_samples <= 0:
        return []
    chunks: list[Chunk] = []
    for start in range(0, num_samples, step):
        end = min(start + chunk, num_samples)
        is_last = start + chunk >= num_samples
        left = 0 if start == 0 else stride_left
        right = 0 if is_last else stride_right
        if end - start > left:
            chunks.append(Chunk(start=start, end=end, left=left, right=right))
        if is_last:
            break
    return chunks
