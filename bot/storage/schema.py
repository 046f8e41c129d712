"""The database schema, as an ordered list of migrations.

`PRAGMA user_version` records how many migrations a database file has had. At start-up
`Database.open` applies the missing ones, in order, in one transaction, so a file is
always at exactly one known version. Released migrations are never edited: a change
to the schema is a new entry at the end of `MIGRATIONS`, which is what lets an old
database be upgraded in place and a test rebuild "the previous version" faithfully.

Times are UTC unix seconds stored as REAL everywhere (cheap to compare and index,
no time-zone parsing). Booleans are INTEGER 0/1 with a CHECK.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

from bot.asr.postprocess import sentence_case_words
from bot.asr.types import TextOptions, Word
from bot.storage.cache_key import CacheKey


@dataclass(frozen=True)
class SqlFunction:
    """A Python function a migration's statements call, registered on the connection first."""

    name: str
    arguments: int
    function: Callable[..., object]


@dataclass(frozen=True)
class Migration:
    """One schema step: the version it brings the database to, and its statements.

    Statements are kept separate (not one script) so they run through the normal
    `execute` path inside the caller's transaction; `executescript` would commit it.
    `functions` are for values only Python can compute exactly (see version 3).
    """

    version: int
    name: str
    statements: tuple[str, ...]
    functions: tuple[SqlFunction, ...] = ()


_V1_BASE_TABLES = Migration(
    version=1,
    name="base tables",
    statements=(
        """
        CREATE TABLE users (
            id            INTEGER PRIMARY KEY,
            username      TEXT,
            first_name    TEXT,
            store_history INTEGER NOT NULL DEFAULT 1 CHECK (store_history IN (0, 1)),
            created_at    REAL NOT NULL
        )
        """,
        # `type` stays NULL when a setting is saved before the chat's type is known.
        """
        CREATE TABLE chats (
            id              INTEGER PRIMARY KEY,
            type            TEXT,
            title           TEXT,
            auto_transcribe INTEGER NOT NULL DEFAULT 1 CHECK (auto_transcribe IN (0, 1))
        )
        """,
        # AUTOINCREMENT: ids end up in Telegram buttons, so a deleted id is never
        # reused; an old button must not open a different transcript.
        """
        CREATE TABLE transcripts (
            id                 INTEGER PRIMARY KEY AUTOINCREMENT,
            user_id            INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            chat_id            INTEGER NOT NULL,
            message_id         INTEGER NOT NULL,
            forward_origin     TEXT,
            file_unique_id     TEXT NOT NULL,
            duration           REAL NOT NULL,
            text               TEXT NOT NULL,
            raw_text           TEXT NOT NULL,
            words              TEXT NOT NULL DEFAULT '[]',
            model              TEXT NOT NULL,
            options            TEXT NOT NULL DEFAULT '{}',
            processing_seconds REAL NOT NULL,
            created_at         REAL NOT NULL
        )
        """,
        # /history: newest first for one user, optionally within one chat. `id DESC`
        # is spelled out so the index order matches `ORDER BY created_at DESC, id DESC`
        # exactly and the page is read straight off the index, no sort.
        "CREATE INDEX transcripts_user_time ON transcripts (user_id, created_at DESC, id DESC)",
        "CREATE INDEX transcripts_user_chat_time ON transcripts (user_id, chat_id, created_at DESC, id DESC)",
        # Re-forwarded notes are answered from the newest transcript of the same content.
        "CREATE INDEX transcripts_file ON transcripts (file_unique_id, created_at DESC)",
        # Retention purge and the 24-hour figures in stats.
        "CREATE INDEX transcripts_time ON transcripts (created_at)",
        """
        CREATE TABLE jobs (
            id                     INTEGER PRIMARY KEY AUTOINCREMENT,
            chat_id                INTEGER NOT NULL,
            message_id             INTEGER NOT NULL,
            user_id                INTEGER NOT NULL REFERENCES users (id) ON DELETE CASCADE,
            chat_type              TEXT NOT NULL,
            file_id                TEXT NOT NULL,
            file_unique_id         TEXT NOT NULL,
            file_size              INTEGER,
            duration               REAL,
            media_kind             TEXT NOT NULL,
            mime_type              TEXT,
            forward_origin         TEXT,
            placeholder_message_id INTEGER,
            status                 TEXT NOT NULL DEFAULT 'queued'
                CHECK (status IN ('queued', 'running', 'done', 'failed', 'cancelled')),
            attempts               INTEGER NOT NULL DEFAULT 0,
            error                  TEXT,
            transcript_id          INTEGER REFERENCES transcripts (id) ON DELETE SET NULL,
            created_at             REAL NOT NULL,
            updated_at             REAL NOT NULL,
            UNIQUE (chat_id, message_id)
        )
        """,
        "CREATE INDEX jobs_status ON jobs (status, created_at, id)",
        # Foreign-key children are indexed, or every user/transcript delete scans jobs.
        "CREATE INDEX jobs_user ON jobs (user_id)",
        "CREATE INDEX jobs_transcript ON jobs (transcript_id)",
    ),
)

_V2_FULL_TEXT_SEARCH = Migration(
    version=2,
    name="full-text search",
    statements=(
        # External content: the index stores only tokens, the text lives once in
        # `transcripts`. remove_diacritics lets "cafe" find "café".
        """
        CREATE VIRTUAL TABLE transcripts_fts USING fts5(
            text,
            content = 'transcripts',
            content_rowid = 'id',
            tokenize = 'unicode61 remove_diacritics 2'
        )
        """,
        """
        CREATE TRIGGER transcripts_fts_insert AFTER INSERT ON transcripts BEGIN
            INSERT INTO transcripts_fts (rowid, text) VALUES (new.id, new.text);
        END
        """,
        # Deleting from an external-content index needs the old text, exactly.
        """
        CREATE TRIGGER transcripts_fts_delete AFTER DELETE ON transcripts BEGIN
            INSERT INTO transcripts_fts (transcripts_fts, rowid, text)
            VALUES ('delete', old.id, old.text);
        END
        """,
        """
        CREATE TRIGGER transcripts_fts_update AFTER UPDATE OF text ON transcripts BEGIN
            INSERT INTO transcripts_fts (transcripts_fts, rowid, text)
            VALUES ('delete', old.id, old.text);
            INSERT INTO transcripts_fts (rowid, text) VALUES (new.id, new.text);
        END
        """,
        # Index what a version-1 database already holds.
        "INSERT INTO transcripts_fts (transcripts_fts) VALUES ('rebuild')",
    ),
)



def _default_text_options_key(model: str) -> str:
    """The cache key a transcript made before version 3 had: its model, every other text option
    at its default (versions 1 and 2 had no language, decoder, hotwords or post-processing choice)."""
    return TextOptions(model=model).cache_key()


_V3_CACHE_KEYED_ON_TEXT_OPTIONS = Migration(
    version=3,
    name="cache keyed on text options",
    statements=(
        # `TextOptions.cache_key()` of the request that made the transcript: a re-sent file is
        # answered from the cache only when it asks for the same text (same model, language...).
        "ALTER TABLE transcripts ADD COLUMN text_options_key TEXT NOT NULL DEFAULT ''",
        # Computed by the same code the lookup uses, so older transcripts still answer requests
        # for their model with default options: an unchanged ASR_MODEL keeps its cache.
        "UPDATE transcripts SET text_options_key = default_text_options_key(model)",
        # Replaces the file-only index: every lookup now names both.
        "DROP INDEX transcripts_file",
        "CREATE INDEX transcripts_file_options ON transcripts (file_unique_id, text_options_key, created_at DESC)",
    ),
    functions=(SqlFunction("default_text_options_key", 1, _default_text_options_key),),
)

def _sentence_cased_words(words_json: str) -> str:
    """Stored words (`[[word, start, end], ...]`) in sentence case, like the text stored beside them."""
    words = [Word(word, start, end) for word, start, end in json.loads(words_json)]
    cased = [[w.word, w.start, w.end] for w in sentence_case_words(words)]
    return json.dumps(cased, ensure_ascii=False, separators=(",", ":"))


_V4_WORDS_POST_PROCESSED = Migration(
    version=4,
    name="words post-processed like the text",
    statements=(
        # Before version 4 only the text was sentence-cased and the words kept the model's
        # capitals; subtitles and exports re-cased them. Now they are built from the words
        # as stored, so older rows get the words their text had, and say which steps ran.
        """
        UPDATE transcripts
        SET words = sentence_cased_words(words),
            options = json_set(options, '$.postprocess', json('["sentence_case"]'))
        WHERE json_type(options, '$.postprocess') IS NULL
        """,
    ),
    functions=(SqlFunction("sentence_cased_words", 1, _sentence_cased_words),),
)

_V5_CHAT_LANGUAGE = Migration(
    version=5,
    name="chat language",
    statements=(
        # A chat's /language as written (`de`, `en,ru`); NULL is auto (detect).
        "ALTER TABLE chats ADD COLUMN language TEXT",
    ),
)

_TEXT_OPTION_FIELDS = frozenset(field.name for field in fields(TextOptions))


def _cache_key_naming_punctuation(text_options_key: str, options_json: str) -> str:
    """The version-6 cache key of a transcript keyed before keys named the punctuation model.

    Its text options are read from its old key (an option added to `TextOptions` since then
    takes its default, which is what that request got); its punctuation model is None, which
    is exact when its steps (`options.postprocess`) do not include "punctuate": nothing
    punctuated it. A punctuated transcript does not record which model did it, and an old key
    this code cannot read may hold an option it no longer has: both keep their old key, which
    no request makes any more, so they stay in history and /export but answer no cache lookup.
    """
    steps = json.loads(options_json).get("postprocess") or ()
    if "punctuate" in steps:
        return text_options_key
    try:
        old = json.loads(text_options_key)
    except ValueError:
        return text_options_key
    if not isinstance(old, dict) or "model" not in old or not old.keys() <= _TEXT_OPTION_FIELDS:
        return text_options_key
    values: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value for name, value in old.items()}
    return CacheKey(TextOptions(**values), punctuation_model=None).encode()


_V6_TRANSCRIPT_LANGUAGE_AND_PUNCTUATION_KEY = Migration(
    version=6,
    name="transcript language, cache key names the punctuation model",
    statements=(
        # `Transcription.language`: the language of the text, requested or detected; NULL when unknown.
        "ALTER TABLE transcripts ADD COLUMN language TEXT",
        # A requested language is the language of the text (what the result echoed as `options.language`);
        # a detected one was not stored before, so those rows stay NULL.
        """
        UPDATE transcripts SET language = json_extract(options, '$.language')
        WHERE json_type(options, '$.language') = 'text'
        """,
        # Keys are now `CacheKey.encode()`: the text options and the punctuation model.
        "UPDATE transcripts SET text_options_key = cache_key_naming_punctuation(text_options_key, options)",
    ),
    functions=(SqlFunction("cache_key_naming_punctuation", 2, _cache_key_naming_punctuation),),
)

MIGRATIONS: tuple[Migration, ...] = (
    _V1_BASE_TABLES,
    _V2_FULL_TEXT_SEARCH,
    _V3_CACHE_KEYED_ON_TEXT_OPTIONS,
    _V4_WORDS_POST_PROCESSED,
    _V5_CHAT_LANGUAGE,
    _V6_TRANSCRIPT_LANGUAGE_AND_PUNCTUATION_KEY,
)

SCHEMA_VERSION: int = MIGRATIONS[-1].version
