"""Every layout the bot shows: stored data as Telegram HTML or plain text, and the inline keyboards.

The sentences come from `bot.telegram.replies`; the callback data of each keyboard is parsed
back by the strict pattern of the handler that answers it (named at each builder). Texts
meant for HTML (`*_html`) escape everything that came from users or from speech.
"""

from __future__ import annotations

import html
import json
import re
from datetime import UTC, datetime
from typing import TypeVar

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.asr.formats import build_cues
from bot.storage import MARK_CLOSE, MARK_OPEN, Page, SearchHit, TranscriptRecord, TranscriptSummary
from bot.telegram import replies
from bot.telegram.attachments import origin_name
from bot.telegram.scope import Scope

T = TypeVar("T")

#: Transcripts per /history or /search page.
PAGE_SIZE = 5
#: Characters of a transcript's first line shown in a list.
PREVIEW_CHARS = 80
#: The formats a stored transcript can be downloaded in (`bot.asr.formats`).
FORMATS = ("txt", "srt", "vtt")

_MARK_SPLIT = re.compile(f"([{MARK_OPEN}{MARK_CLOSE}])")


# --- lists of stored transcripts ---------------------------------------------------------------


def history_html(page: Page[TranscriptSummary], scope: Scope) -> str:
    """A /history page: a heading, then two lines per transcript (header and first line)."""
    lines = [html.escape(replies.history_heading(scope.where, _shown(page), page.total))]
    for item in page.items:
        header = item_header(
            item.id, item.created_at, item.chat_id, item.chat_title, item.duration, item.language, item.forward_origin,
            scope,
        )
        lines.append(f"\n{html.escape(header)}\n{html.escape(preview(item.text))}")
    lines.append("\n" + html.escape(replies.HISTORY_FOOTER))
    return "\n".join(lines)


def search_html(page: Page[SearchHit], scope: Scope, query: str) -> str:
    """A /search page; its first line is `SEARCH_HEADER` and the query, read back for paging."""
    if not page.total:
        return html.escape(f"{replies.SEARCH_HEADER}{query}\n{replies.nothing_found(scope.where)}")
    lines = [
        html.escape(f"{replies.SEARCH_HEADER}{query}"),
        html.escape(replies.search_heading(page.total, scope.where, _shown(page))),
    ]
    for hit in page.items:
        header = item_header(
            hit.id, hit.created_at, hit.chat_id, hit.chat_title, hit.duration, hit.language, hit.forward_origin, scope
        )
        lines.append(f"\n{html.escape(header)}\n{snippet_html(hit.snippet)}")
    return "\n".join(lines)


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


def item_header(
    transcript_id: int,
    created_at: float,
    chat_id: int,
    chat_title: str | None,
    duration: float,
    language: str | None,
    forward_origin: str | None,
    scope: Scope,
    *,
    chat_label: bool = False,
) -> str:
    """`#12 · 2025-01-31 09:30 · private · 0:42 · de · from Alice` (plain text).

    The chat is named in the private view, where transcripts from several chats mix (a
    group by its stored title, "a group" if none is known); in a group list every item is
    from that group, so it is left out unless `chat_label`. The language of the text
    (requested or detected) follows the duration; unknown, it is left out.
    """
    parts = [f"#{transcript_id}", _utc(created_at)]
    if scope.chat_id is None:
        parts.append(replies.PRIVATE_CHAT_LABEL if chat_id > 0 else chat_title or replies.UNNAMED_GROUP)
    elif chat_label and scope.title is not None:
        parts.append(scope.title)
    parts.append(replies.format_duration(duration))
    if language:
        parts.append(language)
    name = origin_name(forward_origin)
    if name:
        parts.append(replies.forwarded_from(name, short=True))
    return " · ".join(parts)


def preview(text: str) -> str:
    """The first line of a transcript, cut at a word near PREVIEW_CHARS."""
    lines = text.strip().splitlines()
    if not lines:
        return replies.NO_SPEECH
    first = lines[0]
    if len(first) > PREVIEW_CHARS:
        return first[:PREVIEW_CHARS].rsplit(" ", 1)[0] + "…"
    return first + "…" if len(lines) > 1 else first


def opened_transcript(record: TranscriptRecord, scope: Scope) -> tuple[str, str]:
    """One transcript opened from a list or with /history N: its header, and the whole
    message (header, blank line, text) in plain text."""
    header = item_header(
        record.id, record.created_at, record.chat_id, record.chat_title, record.transcription.duration,
        record.transcription.language, record.forward_origin, scope, chat_label=True,
    )
    return header, f"{header}\n\n{record.transcription.text or replies.EMPTY}"


# --- /export ---------------------------------------------------------------------------------


def export_txt(records: list[TranscriptRecord]) -> str:
    """The readable export: a header per transcript (its language when known), then its text in timed lines."""
    blocks = []
    for record in records:
        transcription = record.transcription
        language = f" · {transcription.language}" if transcription.language else ""
        header = [
            f"#{record.id} · {_utc(record.created_at, seconds=True)} UTC · {replies.export_chat(record.chat_id)} · "
            f"{replies.format_duration(transcription.duration)}{language}"
        ]
        name = origin_name(record.forward_origin)
        if name:
            header.append(replies.forwarded_from(name, short=False))
        cues = build_cues(transcription.words)
        body = [f"[{replies.format_duration(cue.start)}] {cue.text}" for cue in cues] or [transcription.text]
        blocks.append("\n".join(header + [""] + body))
    return "\n\n\n".join(blocks) + "\n"


def export_json(records: list[TranscriptRecord]) -> str:
    """The complete export: every stored field, word timings included."""
    return json.dumps([record.to_dict() for record in records], ensure_ascii=False, indent=1)


# --- keyboards -------------------------------------------------------------------------------


def cancel_keyboard(job_id: int) -> InlineKeyboardMarkup:
    """Cancel under a long job's placeholder (`handlers.buttons.CANCEL`)."""
    return InlineKeyboardMarkup([[InlineKeyboardButton(replies.CANCEL_BUTTON, callback_data=f"cancel:{job_id}")]])


def format_keyboard(transcript_id: int) -> InlineKeyboardMarkup:
    """.txt / .srt / .vtt under a stored transcript, made from what was stored (`handlers.buttons.FORMAT`)."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(f".{fmt}", callback_data=f"fmt:{transcript_id}:{fmt}") for fmt in FORMATS]]
    )


def forget_keyboard(user_id: int) -> InlineKeyboardMarkup:
    """Confirm or cancel /forget (`handlers.privacy.FORGET`)."""
    return InlineKeyboardMarkup([[
        InlineKeyboardButton(replies.FORGET_YES, callback_data=f"forget:yes:{user_id}"),
        InlineKeyboardButton(replies.FORGET_NO, callback_data="forget:no"),
    ]])


def history_keyboard(page: Page[TranscriptSummary], scope: Scope) -> InlineKeyboardMarkup | None:
    """Open buttons and «Newer»/«Older» under a /history page (`handlers.history.HISTORY_PAGE`, `SHOW`)."""
    return _list_keyboard("hist", page, scope, (replies.NEWER, replies.OLDER))


def search_keyboard(page: Page[SearchHit], scope: Scope) -> InlineKeyboardMarkup | None:
    """Open buttons and «Previous»/«Next» under a /search page (`handlers.search.SEARCH_PAGE`)."""
    return _list_keyboard("srch", page, scope, (replies.PREVIOUS, replies.NEXT))


def _list_keyboard(
    prefix: str, page: Page[TranscriptSummary] | Page[SearchHit], scope: Scope, labels: tuple[str, str]
) -> InlineKeyboardMarkup | None:
    """A button per item to open it, then back/forward; the owner's id goes in every button."""
    rows = []
    if page.items:
        rows.append([
            InlineKeyboardButton(f"#{item.id}", callback_data=f"show:{scope.user_id}:{item.id}") for item in page.items
        ])
    nav = []
    if page.offset > 0:
        back = max(0, page.offset - PAGE_SIZE)
        nav.append(InlineKeyboardButton(labels[0], callback_data=f"{prefix}:{scope.user_id}:{back}"))
    if page.has_more:
        forward = page.offset + len(page.items)
        nav.append(InlineKeyboardButton(labels[1], callback_data=f"{prefix}:{scope.user_id}:{forward}"))
    if nav:
        rows.append(nav)
    return InlineKeyboardMarkup(rows) if rows else None


def _utc(timestamp: float, *, seconds: bool = False) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")


def _shown(page: Page[T]) -> str:
    """`6–10`: which items of the list a page shows."""
    return f"{page.offset + 1}–{page.offset + len(page.items)}"
