"""Whose stored transcripts a command or button shows, and from where.

The scope always comes from the chat the command or button is in and from who sent or
pressed it, never from callback data: in a private chat a user sees all their transcripts,
in a group only their own from that group, so a group never sees what someone sent the bot
privately.
"""

from __future__ import annotations

from dataclasses import dataclass

from telegram import Chat
from telegram.constants import ChatType

from bot.telegram import replies


@dataclass(frozen=True)
class Scope:
    """The caller's own transcripts, from all chats or from one group."""

    user_id: int
    #: None in the user's private chat (all their transcripts), else the group's id.
    chat_id: int | None
    #: The group's name for headers; None in the private view.
    title: str | None

    @property
    def where(self) -> str:
        """` in <group>` for the group view, empty in the private view (plain text)."""
        return "" if self.title is None else replies.in_group(self.title)


def scope_for(chat: Chat, user_id: int) -> Scope | None:
    """The view a command or button in `chat` gets; None in someone else's private chat
    (only reachable with a forged button press)."""
    if chat.type == ChatType.PRIVATE:
        return Scope(user_id, None, None) if chat.id == user_id else None
    return Scope(user_id, chat.id, chat.title or replies.THIS_GROUP)
