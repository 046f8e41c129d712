"""/history, /search, /export, /forget, /privacy and /stats (being written)."""

from __future__ import annotations

from telegram.ext import Application


def register(application: Application) -> None:  # type: ignore[type-arg]
    """Add the history handlers."""
