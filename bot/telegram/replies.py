"""Everything the bot says in a chat: every sentence, label and button caption.

Kept in one place so the wording can be read (and changed) as a whole; the layouts that put
stored data around these words are in `bot.telegram.render`. Domain errors (`bot.errors`) carry
only facts; `failure` says them.
"""

from __future__ import annotations

from collections.abc import Mapping

from bot.asr.types import Progress
from bot.errors import (
    AudioDecodeError,
    AudioTooLongError,
    ExecutorOverloadedError,
    FFmpegMissingError,
    FileTooBigError,
    JobCancelledError,
    JobTimeoutError,
    ModelLoadError,
    RateLimitedError,
    WorkerCrashedError,
)
from bot.telegram.delivery import MESSAGE_LIMIT

# --- files and jobs -----------------------------------------------------------------------

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
    "/language – the language I transcribe in this chat: /language de, /language en,ru (detect among "
    "these) or /language auto (groups: admins)\n"
    "/help – this message"
)

UNSUPPORTED = "Send me a voice message, audio file, video note or video and I'll transcribe it."
TRANSCRIBE_USAGE = "Reply /transcribe to a voice, audio or video message."
EMPTY = "I couldn't hear any speech in this recording."
NOT_ALLOWED = "Sorry, this bot is private."
ALREADY = "This message has already been transcribed."
TELEGRAM_FAILED = "I couldn't fetch this file from Telegram. Please send it again."
STORAGE_FAILED_NOTE = "(I couldn't save this one to your history.)"
NOT_YOUR_JOB = "Only the person who sent this file can cancel it."
NOT_YOUR_TRANSCRIPT = "Only the person who asked for this transcript can download it."
ALREADY_FINISHED = "This transcription is already finished."
CANCELLING = "Cancelling…"
STALE_BUTTON = "This button is no longer valid."
CANCEL_BUTTON = "Cancel"


def too_big(size_bytes: int, limit_mb: float) -> str:
    """The answer to a file over MAX_FILE_MB (or the Bot API's download limit)."""
    return f"This file is too big ({size_bytes / 2**20:.0f} MB): I can download files up to {limit_mb:.0f} MB."


def rate_limited(retry_after: float) -> str:
    """The answer to a user over USER_MAX_CONCURRENT_JOBS or USER_JOBS_PER_MINUTE."""
    return f"You're sending files faster than I can take them. Please try again in {max(1, round(retry_after))} s."


def sent_as_file(words: int) -> str:
    """The placeholder's last text when the transcript went out as a .txt file."""
    return f"The transcript is long ({words} words), so here it is as a file."


GENERIC_FAILURE = "Sorry, something went wrong while transcribing this file."
UNREADABLE = "I couldn't read any audio in this file. Is it a valid voice note, audio or video file?"
NO_AUDIO_TRACK = "This file has no audio track, so there is nothing to transcribe."
DECODE_TOO_SLOW = "Reading this file took too long, so I stopped. Please try a shorter or simpler recording."
CANCELLED = "Transcription cancelled."
TIMED_OUT = "This transcription took too long and was stopped. Please try a shorter recording."
WORKER_FAILED = "The transcription worker failed on this file. Please try again later."
MISCONFIGURED = "The transcription service is misconfigured (ffmpeg is missing)."
MODEL_FAILED = "The speech model could not be loaded."


def too_long(duration: float, limit: float) -> str:
    """The answer to audio over MAX_AUDIO_SECONDS; "over the limit" when decoding stopped there."""
    length = f"({format_duration(duration)})" if duration > limit + 1 else f"(over {format_duration(limit)})"
    return f"This recording is too long {length}; I transcribe up to {format_duration(limit)}."


def busy(retry_after: float) -> str:
    """The answer when every worker is busy and the queue is full."""
    return f"I'm busy right now. Please try again in {max(1, round(retry_after))} s."


def failure(error: BaseException | None) -> str:
    """What to tell the user about a failure, from what the domain error says; else an apology."""
    match error:
        case AudioTooLongError(duration=duration, limit=limit):
            return too_long(duration, limit)
        case AudioDecodeError(problem="no_audio"):
            return NO_AUDIO_TRACK
        case AudioDecodeError(problem="too_slow"):
            return DECODE_TOO_SLOW
        case AudioDecodeError():
            return UNREADABLE
        case FileTooBigError(size_bytes=size, limit_mb=limit):
            return too_big(size, limit)
        case RateLimitedError(retry_after=wait):
            return rate_limited(wait)
        case ExecutorOverloadedError(retry_after=wait):
            return busy(wait)
        case JobCancelledError():
            return CANCELLED
        case JobTimeoutError():
            return TIMED_OUT
        case WorkerCrashedError():
            return WORKER_FAILED
        case FFmpegMissingError():
            return MISCONFIGURED
        case ModelLoadError():
            return MODEL_FAILED
    return GENERIC_FAILURE


def format_duration(seconds: float) -> str:
    """`42` -> `0:42`, `3725` -> `1:02:05`: how durations are shown in chats."""
    total = max(0, int(round(seconds)))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def placeholder(duration: float | None, ahead: int) -> str:
    """`Transcribing… 0:42 of audio`, with the queue position when others are ahead."""
    text = "Transcribing…"
    if duration:
        text += f" {format_duration(duration)} of audio"
    if ahead > 0:
        text += f"\n{ahead} {'file' if ahead == 1 else 'files'} ahead of yours in the queue."
    return text


def progress(update: Progress) -> str:
    """`Transcribing… 35%` and the end of the text so far, as much as fits in one message."""
    text = f"Transcribing… {int(update.fraction * 100)}%"
    if update.partial_text:
        tail = update.partial_text[-(MESSAGE_LIMIT - 200) :]
        text += "\n\n" + ("…" if len(tail) < len(update.partial_text) else "") + tail
    return text


# --- /auto --------------------------------------------------------------------------------

AUTO_IN_PRIVATE = "/auto works in groups: I always transcribe what you send me here."
AUTO_ADMINS_ONLY = "Only group admins can change this."
AUTO_ON = "Automatic transcription is on."
AUTO_OFF = "Automatic transcription is off; reply /transcribe to a message to transcribe it."


def auto_state(enabled: bool) -> str:
    return f"Automatic transcription is {'on' if enabled else 'off'}. Admins: /auto on or /auto off."


LANGUAGE_HOW = "Change it with /language de (one language), /language en,ru (detect among these) or /language auto."


def language_state(choice: str, model: str, own_models: Mapping[str, str] | None = None, *, detects: bool) -> str:
    """The answer to a bare /language: the chat's choice (`auto`, `de`, `en,ru`), the model it runs on,
    whether that model detects the language when the choice fixes none (`detects`), and the detected
    languages that go on to a model of their own (`own_models`)."""
    return f"{_language_sentence(choice, detects)} {_models_sentence(model, own_models)}\n{LANGUAGE_HOW}"


def language_set(choice: str, model: str, own_models: Mapping[str, str] | None = None, *, detects: bool) -> str:
    """The answer once /language changed the chat's choice."""
    return f"Done. {_language_sentence(choice, detects)} {_models_sentence(model, own_models)}"


def _models_sentence(model: str, own_models: Mapping[str, str] | None) -> str:
    if not own_models:
        return f"Model: {model}."
    elsewhere = "; ".join(f"{language}: {name}" for language, name in own_models.items())
    return f"Model: {model}; a language it detects that has a model of its own goes on to that one: {elsewhere}."


def unknown_language(code: str) -> str:
    """The answer to /language with a code that is not one of Whisper's."""
    return (
        f"I don't know the language code “{code[:20]}”. Write languages as two-letter codes, such as en, de, "
        "fr, es, ru, uk, zh or ar (a few have three letters: haw, yue), several separated by commas "
        "(/language en,ru), or /language auto to detect."
    )


def _language_sentence(choice: str, detects: bool) -> str:
    if choice != "auto" and "," not in choice:
        return f"Language: {choice}."
    if not detects:
        asked = "auto" if choice == "auto" else f"one of {choice.replace(',', ', ')}"
        return (f"Language: {asked}, but this model does not detect languages: it transcribes every message "
                "in the language it was trained on.")
    if choice == "auto":
        return "Language: detected for each message."
    return f"Language: detected among {choice.replace(',', ', ')}."


# --- stored transcripts: /history, /search, /export -----------------------------------------

NOT_YOURS = "This list belongs to someone else. Send the command yourself to see yours."
HISTORY_USAGE = "Usage: /history, or /history N to open transcript #N."
SEARCH_USAGE = "Usage: /search words, e.g. /search meeting tomorrow"
#: The first line of a search result message; paging reads the query back from it, so the
#: query never has to fit in 64 bytes of callback data.
SEARCH_HEADER = "Search: "
HISTORY_FOOTER = "Tap a number to open it, or send /history N."
NEWER, OLDER = "« Newer", "Older »"
PREVIOUS, NEXT = "« Previous", "Next »"
NOTHING_TO_EXPORT = "You have no saved transcripts to export."
EXPORT_JSON_CAPTION = "The same with word timings, as JSON."
NO_SPEECH = "(no speech)"
PRIVATE_CHAT_LABEL = "private"
UNNAMED_GROUP = "a group"
THIS_GROUP = "this group"
NO_HISTORY_IN_GROUP = "You have no saved transcripts from this group."
NO_HISTORY_YET = "You have no saved transcripts yet. Send me a voice message to make one."
HISTORY_OFF_HERE = "History is turned off on this bot."
STORING_OFF = "You turned storing off; /privacy on turns it back on."


def plural(count: int, word: str) -> str:
    """`word` as it goes after `count`: transcript/transcripts, match/matches."""
    if count == 1:
        return word
    return word + ("es" if word.endswith("ch") else "s")


def in_group(title: str) -> str:
    """` in Team`: where a group view's items come from."""
    return f" in {title}"


def private_only(command: str) -> str:
    return f"Use /{command} in a private chat with me."


def not_found(transcript_id: int, where: str) -> str:
    return f"I can't find transcript #{transcript_id} in your history{where}."


def history_heading(where: str, shown: str, total: int) -> str:
    return f"Your transcripts{where}, newest first ({shown} of {total}):"


def search_heading(total: int, where: str, shown: str) -> str:
    return f"{total} {plural(total, 'match')}{where}, best first ({shown}):"


def nothing_found(where: str) -> str:
    return f"Nothing found in your transcripts{where}."


def forwarded_from(name: str, *, short: bool) -> str:
    """`from Alice` in a list's item header, `Forwarded from Alice` in an export."""
    return f"from {name}" if short else f"Forwarded from {name}"


def export_chat(chat_id: int) -> str:
    """Which chat an exported transcript came from (group ids are negative in Telegram)."""
    return "private chat" if chat_id > 0 else f"group {chat_id}"


def export_caption(count: int) -> str:
    return f"{count} {plural(count, 'transcript')}, oldest first."


# --- /privacy and /forget -------------------------------------------------------------------

PRIVACY_ON = "OK, I'll keep your new transcripts for /history and /search."
PRIVACY_OFF = "OK, I won't store your new transcripts. What is already stored stays until you /forget it."
PRIVACY_USAGE = "Usage: /privacy on or /privacy off."
HISTORY_OFF_NOTE = "Note: history is turned off on this bot, so nothing is stored for anyone."
FORGET_YES = "Yes, delete everything"
FORGET_NO = "Cancel"
NOTHING_DELETED = "OK, nothing was deleted."


def privacy_state(enabled: bool) -> str:
    return f"Storing your transcripts is {'on' if enabled else 'off'}. /privacy on or /privacy off changes it."


def forget_prompt(total: int) -> str:
    return (
        f"Delete your {total} {plural(total, 'transcript')} and everything else I stored about you? "
        "This can't be undone."
    )


def forgotten(deleted: int, *, had_opted_out: bool) -> str:
    text = f"Done: I deleted {deleted} {plural(deleted, 'transcript')} and everything else I stored about you."
    if had_opted_out:
        text += " That included your /privacy off choice: send it again to keep new transcripts from being stored."
    return text


# --- /stats -----------------------------------------------------------------------------------

STATS_OPERATORS_ONLY = "/stats is only for the bot's operators."


def stats(
    *, users: int, chats: int, transcripts: int, audio_seconds: float, queued_jobs: int, running_jobs: int,
    workers_ready: int, queue_depth: int, median_real_time_factor: float | None,
) -> str:
    rtf = "n/a" if median_real_time_factor is None else f"{median_real_time_factor:.2f}"
    return (
        f"Users: {users}\n"
        f"Chats: {chats}\n"
        f"Transcripts: {transcripts} ({audio_seconds / 3600:.1f} h of audio)\n"
        f"Jobs: {queued_jobs} queued, {running_jobs} running\n"
        f"Workers ready: {workers_ready}\n"
        f"Queue depth: {queue_depth}\n"
        f"Median real-time factor, last 24 h: {rtf}"
    )
