"""A cache of hot entries for reads, kept exact by the writer.

A point read from SQLite costs tens of microseconds inside a busy node (cold
CPU caches, two ``fcntl`` calls per read transaction); a dict lookup costs
well under one. The cache holds what SQLite held at some commit, and the
writer thread invalidates every key a commit touched *after* that commit and
*before* it acknowledges the writes, so a read never sees a value older than
the newest acknowledged write.

The one race -- a reader fetches a row from SQLite just before a commit and
stores it just after -- is closed by a generation number: every invalidation
bumps it, and a fill is refused if the generation moved since the reader
looked at it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import Generic, TypeVar

Slot = tuple[str, bytes]
V = TypeVar("V")


class _Miss:
    """Marks a key the cache knows nothing about."""


MISS = _Miss()


class ReadCache(Generic[V]):
    """Up to ``max_entries`` entries by ``(namespace, key)``; ``None`` means absent."""

    def __init__(self, max_entries: int) -> None:
        """Create an empty cache (``max_entries`` 0 disables it)."""
        self.max_entries = max_entries
        self._entries: dict[Slot, V | None] = {}
        self._lock = threading.Lock()
        self.generation = 0

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, slot: Slot) -> V | _Miss | None:
        """The cached entry (None: known absent), or MISS."""
        return self._entries.get(slot, MISS)

    def fill(self, slot: Slot, entry: V | None, generation: int) -> None:
        """Remember what a read found, unless a commit has invalidated keys since."""
        if not self.max_entries:
            return
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.max_entries:
                # Drop the oldest entry: cheap, and good enough for hot keys.
                del self._entries[next(iter(self._entries))]
            self._entries[slot] = entry

    def invalidate(self, slots: Iterable[Slot]) -> None:
        """Forget ``slots`` (called by the writer after a commit, before acknowledging)."""
        with self._lock:
            self.generation += 1
            entries = self._entries
            if entries:
                # The intersection runs in C: a catch-up commit touches thousands of keys.
                for slot in entries.keys() & slots:
                    del entries[slot]
