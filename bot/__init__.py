"""voicebot: a self-hosted Telegram bot that transcribes voice notes with a wav2vec2 CTC model."""

__version__ = "0.1.0"
