"""What the bot says: message texts and splitting long transcripts.

Kept apart from the handlers so the wording lives in one place and the splitting rule
can be tested as a pure function.
"""

from __future__ import annotations

import re

from telegram import InlineKeyboardButton, InlineKeyboardMarkup

from bot.asr.types import Progress
from bot.errors import format_duration

#: Telegram's limit for one message's text.
MESSAGE_LIMIT = 4096

HELP = (
    "I turn voice messages into text.\n\n"
    "Send or forward me a voice note, audio file, video note or video and I reply with its "
    "transcript. In groups I transcribe voice and video notes automatically (admins: /auto off); "
    "reply /transcribe to any audio or video message to transcribe that one.\n\n"
    "What I store: the transcripts you asked for (text, word timings, the chat and date), so "
    "you can find them again. Audio is deleted as soon as it is transcribed. /privacy off stops "
    "storing; /forget deletes everything.\n\n"
    "Commands:\n"
    "/history – your transcripts, newest first (/history N opens one)\n"
    "/search words – search your transcripts\n"
    "/export – all your transcripts as .txt and .json files\n"
    "/forget – delete everything stored about you\n"
    "/privacy on|off – store my transcripts or not\n"
    "/transcribe – reply to a message to transcribe it\n"
    "/auto on|off – automatic transcription in this group (admins)\n"
    "/help – this message"
)

UNSUPPORTED = "Send me a voice message, audio file, video note or video and I'll transcribe it."
EMPTY = "I couldn't hear any speech in this recording."
TOO_BIG = "This file is too big ({size:.0f} MB): I can download files up to {limit:.0f} MB."
CANCELLED = "Transcription cancelled."
NOT_ALLOWED = "Sorry, this bot is private."
ALREADY = "This message has already been transcribed."
SENT_AS_FILE = "The transcript is long ({words} words), so here it is as a file."
TELEGRAM_FAILED = "I couldn't fetch this file from Telegram. Please send it again."
STORAGE_FAILED_NOTE = "(I couldn't save this one to your history.)"
NOT_YOUR_JOB = "Only the person who sent this file can cancel it."
NOT_YOUR_TRANSCRIPT = "Only the person who asked for this transcript can download it."
ALREADY_FINISHED = "This transcription is already finished."
CANCELLING = "Cancelling…"
STALE_BUTTON = "This button is no longer valid."


def rate_limited(retry_after: float) -> str:
    """The answer to a user over USER_MAX_CONCURRENT_JOBS or USER_JOBS_PER_MINUTE."""
    return f"You're sending files faster than I can take them. Please try again in {max(1, round(retry_after))} s."


def placeholder(duration: float | None, ahead: int) -> str:
    """`Transcribing… 0:42 of audio`, with the queue position when others are ahead."""
    text = "Transcribing…"
    if duration:
        text += f" {format_duration(duration)} of audio"
    if ahead > 0:
        text += f"\n{ahead} {'file' if ahead == 1 else 'files'} ahead of yours in the queue."
    return text


def progress(update: Progress) -> str:
    """`Transcribing… 35%` and the tail of the text so far."""
    text = f"Transcribing… {int(update.fraction * 100)}%"
    if update.partial_text:
        tail = update.partial_text[-(MESSAGE_LIMIT - 200) :]
        text += "\n\n" + ("…" if len(tail) < len(update.partial_text) else "") + tail
    return text


_SENTENCE_END = re.compile(r"[.!?…]\s")


def split_text(text: str, limit: int = MESSAGE_LIMIT) -> list[str]:
    """Split `text` into messages of at most `limit` characters.

    Breaks at the last sentence end before the limit, else at the last space, and only
    inside a word when a single word is longer than a whole message.
    """
    parts: list[str] = []
    rest = text.strip()
    while len(rest) > limit:
        window = rest[: limit + 1]
        ends = [m.end() for m in _SENTENCE_END.finditer(window)]
        cut = ends[-1] if ends and ends[-1] > limit // 2 else window.rfind(" ")
        if cut <= 0:
            cut = limit
        parts.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        parts.append(rest)
    return parts


def format_buttons(transcript_id: int) -> InlineKeyboardMarkup:
    """.txt / .srt / .vtt buttons under a stored transcript (files made from what was stored;
    `bot.telegram.handlers.buttons.FORMAT` parses their data)."""
    return InlineKeyboardMarkup(
        [[InlineKeyboardButton(f".{fmt}", callback_data=f"fmt:{transcript_id}:{fmt}") for fmt in ("txt", "srt", "vtt")]]
    )
