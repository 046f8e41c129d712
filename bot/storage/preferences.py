"""Users' and chats' settings (automatic transcription, keeping history, language), and forgetting a user.

Unknown users and chats have the defaults (both settings on), so a first message needs
no row; a row is written when a setting or a chat's title is saved.
"""

from __future__ import annotations

from bot.storage.db import Connection, Database


class Preferences:
    """The `users` and `chats` tables."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def upsert_chat(self, chat_id: int, *, chat_type: str, title: str | None = None) -> None:
        """Record a chat's type and title (shown in the private history view), keeping its settings."""

        async def upsert(tx: Connection) -> None:
            await tx.execute(
                "INSERT INTO chats (id, type, title) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET type = excluded.type, title = excluded.title",
                (chat_id, chat_type, title),
            )

        await self._db.write(upsert)

    async def auto_transcribe(self, chat_id: int) -> bool:
        """Whether voice notes in the chat are transcribed unasked (True for unknown chats)."""
        value = await self._db.scalar("SELECT auto_transcribe FROM chats WHERE id = ?", (chat_id,))
        return True if value is None else bool(value)

    async def set_auto_transcribe(self, chat_id: int, enabled: bool) -> None:
        """Turn automatic transcription in a chat on or off."""

        async def upsert(tx: Connection) -> None:
            await tx.execute(
                "INSERT INTO chats (id, auto_transcribe) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET auto_transcribe = excluded.auto_transcribe",
                (chat_id, int(enabled)),
            )

        await self._db.write(upsert)

    async def language(self, chat_id: int) -> str | None:
        """The chat's /language as written (`de`, `en,ru`), or None for auto (also for unknown chats).

        A private chat's id is its user's id, so there it is the user's own choice.
        """
        value = await self._db.scalar("SELECT language FROM chats WHERE id = ?", (chat_id,))
        return None if value is None else str(value)

    async def set_language(self, chat_id: int, language: str | None) -> None:
        """Fix the chat's language (or set, `en,ru`); None goes back to auto."""

        async def upsert(tx: Connection) -> None:
            await tx.execute(
                "INSERT INTO chats (id, language) VALUES (?, ?)"
                " ON CONFLICT (id) DO UPDATE SET language = excluded.language",
                (chat_id, language),
            )

        await self._db.write(upsert)

    async def store_history(self, user_id: int) -> bool:
        """Whether the user's transcripts are kept (True for unknown users).

        Storage does not enforce it: the caller decides not to store a transcript.
        """
        value = await self._db.scalar("SELECT store_history FROM users WHERE id = ?", (user_id,))
        return True if value is None else bool(value)

    async def set_store_history(self, user_id: int, enabled: bool) -> None:
        """Opt the user in or out of history. Opting out keeps what is stored; see `forget_user`."""
        now = self._db.clock()

        async def upsert(tx: Connection) -> None:
            await tx.execute(
                "INSERT INTO users (id, store_history, created_at) VALUES (?, ?, ?)"
                " ON CONFLICT (id) DO UPDATE SET store_history = excluded.store_history",
                (user_id, int(enabled), now),
            )

        await self._db.write(upsert)

    async def forget_user(self, user_id: int) -> int:
        """Delete every row about the user: transcripts (and their index entries), jobs,
        settings, the user row and their private chat's row. Returns transcripts deleted.

        The private chat's id equals the user's id in Telegram (group ids are negative),
        so its settings row is theirs too. One transaction: all of it or nothing.
        """

        async def delete(tx: Connection) -> int:
            await tx.execute("DELETE FROM jobs WHERE user_id = ? OR chat_id = ?", (user_id, user_id))
            deleted = await tx.execute("DELETE FROM transcripts WHERE user_id = ?", (user_id,))
            await tx.execute("DELETE FROM users WHERE id = ?", (user_id,))
            await tx.execute("DELETE FROM chats WHERE id = ?", (user_id,))
            return deleted

        return await self._db.write(delete)
