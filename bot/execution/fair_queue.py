"""A queue that is fair across owners: items are taken round-robin by owner, in order within each.

One owner (a user) with fifty items queued waits its turn like everyone else: an owner
with one item gets it taken within one round, however long the others' lines are.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Generic, Protocol, TypeVar


class Owned(Protocol):
    """Anything queued here: it belongs to an owner (the user who asked for it)."""

    @property
    def owner(self) -> int: ...


T = TypeVar("T", bound=Owned)


class FairQueue(Generic[T]):
    """Queued items, taken round-robin across their owners."""

    def __init__(self) -> None:
        self._by_owner: dict[int, deque[T]] = {}
        self._turn: deque[int] = deque()

    def __len__(self) -> int:
        return sum(len(items) for items in self._by_owner.values())

    def push(self, item: T, *, front: bool = False) -> None:
        """Queue `item` last in its owner's line, or (a retry) first in it."""
        items = self._by_owner.setdefault(item.owner, deque())
        if not items:
            if front:
                self._turn.appendleft(item.owner)
            else:
                self._turn.append(item.owner)
        if front:
            items.appendleft(item)
        else:
            items.append(item)

    def pop(self) -> T | None:
        if not self._turn:
            return None
        owner = self._turn.popleft()
        items = self._by_owner[owner]
        item = items.popleft()
        if items:
            self._turn.append(owner)
        else:
            del self._by_owner[owner]
        return item

    def remove(self, item: T) -> bool:
        items = self._by_owner.get(item.owner)
        if not items or item not in items:
            return False
        items.remove(item)
        if not items:
            del self._by_owner[item.owner]
            self._turn.remove(item.owner)
        return True

    def in_order(self) -> Iterator[T]:
        """The order in which queued items will be taken."""
        owners = list(self._turn)
        depth = max((len(self._by_owner[o]) for o in owners), default=0)
        for round_index in range(depth):
            for owner in owners:
                items = self._by_owner[owner]
                if round_index < len(items):
                    yield items[round_index]

    def drain(self) -> list[T]:
        items = list(self.in_order())
        self._by_owner.clear()
        self._turn.clear()
        return items
