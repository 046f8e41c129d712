"""The one exception storage raises for a database that fails."""

from __future__ import annotations


class StorageError(Exception):
    """The database failed: cannot be opened or migrated, is locked, closed or not writable,
    or refused a statement.

    Every public storage method raises this (with the driver's exception as `__cause__`)
    instead of sqlite3's or aiosqlite's own, so code above storage catches one type and
    never imports the driver. Defined here rather than in `bot.errors` because it is an
    operator-facing failure, not something explained to a chat user.
    """
