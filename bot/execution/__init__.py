"""Running transcription jobs: the backend-neutral protocol and scheduler, and the backends."""
