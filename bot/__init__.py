"""voicebot: a self-hosted Telegram bot that transcribes voice notes with a wav2vec2 CTC model."""

import os

# Opt in to python-telegram-bot's future `timedelta` durations now, so media durations
# read the same way today and after PTB's next major version.
os.environ.setdefault("PTB_TIMEDELTA", "1")

__version__ = "0.1.0"
