"""Layouts of stored transcripts (`bot.telegram.render`): the language tag of each entry."""

from __future__ import annotations

from bot.storage import MARK_CLOSE, MARK_OPEN, Page, SearchHit, TranscriptRecord, TranscriptSummary
from bot.telegram import render
from bot.telegram.scope import Scope
from tests.storage_support import ALICE, GROUP, START, make_transcription

PRIVATE = Scope(user_id=ALICE, chat_id=None, title=None)
IN_GROUP = Scope(user_id=ALICE, chat_id=GROUP, title="Team <&>")


def summary(transcript_id: int, language: str | None, *, chat_id: int = ALICE) -> TranscriptSummary:
    return TranscriptSummary(
        id=transcript_id, user_id=ALICE, chat_id=chat_id, message_id=transcript_id, forward_origin=None,
        duration=42.0, text=f"note {transcript_id}", language=language, created_at=START, chat_title=None,
    )


def test_history_and_search_tag_each_entry_with_its_language_and_leave_unknown_out() -> None:
    page = Page((summary(1, "de"), summary(2, None), summary(3, "<b>", chat_id=GROUP)), total=3, offset=0, limit=5)
    listed = render.history_html(page, PRIVATE)
    assert "\n#1 · 2023-11-14 22:13 · private · 0:42 · de\nnote 1" in listed
    assert "\n#2 · 2023-11-14 22:13 · private · 0:42\nnote 2" in listed
    # Whatever a backend reported is escaped like every other stored value.
    assert "\n#3 · 2023-11-14 22:13 · a group · 0:42 · &lt;b&gt;\nnote 3" in listed

    hit = SearchHit(**vars(summary(4, "uk", chat_id=GROUP)), snippet=f"{MARK_OPEN}note{MARK_CLOSE} 4")
    found = render.search_html(Page((hit,), total=1, offset=0, limit=5), IN_GROUP, "note")
    assert "\n#4 · 2023-11-14 22:13 · 0:42 · uk\n<b>note</b> 4" in found


def test_an_opened_transcript_and_the_export_name_its_language() -> None:
    def record(transcript_id: int, language: str | None) -> TranscriptRecord:
        return TranscriptRecord(
            id=transcript_id, user_id=ALICE, chat_id=ALICE, message_id=transcript_id, file_unique_id="f",
            forward_origin=None, created_at=START, transcription=make_transcription("hallo welt", language=language),
            chat_title=None,
        )

    header, body = render.opened_transcript(record(5, "de"), PRIVATE)
    assert header == "#5 · 2023-11-14 22:13 · private · 0:03 · de" and body == f"{header}\n\nhallo welt"
    readable = render.export_txt([record(5, "de"), record(6, None)])
    assert "#5 · 2023-11-14 22:13:20 UTC · private chat · 0:03 · de\n" in readable
    assert "#6 · 2023-11-14 22:13:20 UTC · private chat · 0:03\n" in readable
