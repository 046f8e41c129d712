"""Every rendering of stored data into Telegram HTML (the bot's default parse mode)."""

from __future__ import annotations

import html
import re

from bot.storage.db import MARK_CLOSE, MARK_OPEN

_MARK_SPLIT = re.compile(f"([{MARK_OPEN}{MARK_CLOSE}])")


def snippet_html(raw: str) -> str:
    """Escape a search snippet for Telegram HTML and turn its match markers into balanced <b> tags."""
    parts: list[str] = []
    bold = False
    for piece in _MARK_SPLIT.split(raw):
        if piece == MARK_OPEN:
            if not bold:
                parts.append("<b>")
                bold = True
        elif piece == MARK_CLOSE:
            if bold:
                parts.append("</b>")
                bold = False
        else:
            parts.append(html.escape(piece, quote=False))
    if bold:
        parts.append("</b>")
    return "".join(parts)
