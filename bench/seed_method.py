"""The seed tutorial's way of transcribing, kept verbatim as the baseline to beat.

librosa loads and resamples the whole file, the processor normalises it, and ONE forward
pass runs over the whole recording. Attention is quadratic in length, so memory and time
explode on long files (past ~2 minutes it needs tens of GB): that is why the bot chunks.

    python -m bench.seed_method FILE MODEL_DIR     # prints the transcript
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any


def load_seed(model_dir: str | Path) -> tuple[Any, Any]:
    """The tutorial's loading: `Wav2Vec2Processor` and `Wav2Vec2ForCTC` from the same weights."""
    from transformers import Wav2Vec2ForCTC, Wav2Vec2Processor

    processor = Wav2Vec2Processor.from_pretrained(str(model_dir))
    model = Wav2Vec2ForCTC.from_pretrained(str(model_dir))
    model.eval()
    return processor, model


def seed_transcribe_loaded(path: str | Path, processor: Any, model: Any) -> str:
    """Transcribe with an already loaded model (so a benchmark can time load and run apart)."""
    import librosa
    import torch

    audio, _ = librosa.load(str(path), sr=16000)
    input_values = processor(audio, sampling_rate=16000, return_tensors="pt").input_values
    with torch.inference_mode():
        logits = model(input_values).logits
    predicted_ids = torch.argmax(logits, dim=-1)
    return processor.batch_decode(predicted_ids)[0]


def seed_transcribe(path: str | Path, model_dir: str | Path) -> str:
    """The whole tutorial: load the model, load the audio, one forward pass, greedy decode."""
    processor, model = load_seed(model_dir)
    return seed_transcribe_loaded(path, processor, model)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m bench.seed_method FILE MODEL_DIR")
    print(seed_transcribe(sys.argv[1], sys.argv[2]))
