"""The cluster execution backend: model workers behind an OpenAI-compatible transcription endpoint (`ASR_BACKEND=ray`)."""
