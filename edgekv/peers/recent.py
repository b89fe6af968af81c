"""Stamps of key-value changes applied lately: relayed copies are known losers.

In a mesh every change reaches a node more than once -- from its origin and
relayed by each other peer. Every copy after the first loses last-writer-wins
and changes nothing, yet offering it to SQLite costs as much as an insert.
This remembers, for recently applied keys, the newest stamp a committed
batch offered; a change stamped no newer for the same key cannot win here and
is dropped before SQLite sees it.

Why that is safe: a stamp is remembered only after the transaction that
offered it committed, and from then on the key's state here is at least that
stamp (states only move forward; a held-back change is applied later, never
dropped; a collected tombstone must not be resurrected by an older copy
anyway). Equal stamps are one write, which the upsert also ignores. Document
changes are Y updates merged by content, not by stamp, so they always pass.
"""

from __future__ import annotations

from collections.abc import Sequence
from itertools import compress
from operator import itemgetter

from edgekv_replication.changes import Change
from edgekv_replication.documents import is_document

DEFAULT_KEYS = 200_000
"""Keys remembered (about 30 MiB at most): a catch-up's worth of pages."""


class RecentStamps:
    """The newest ``(hlc, node)`` offered per ``(namespace, key)`` in committed batches.

    Two generations bound the memory: when the young one is full it becomes
    the old one and the previous old one is forgotten. The bulk of both
    methods runs in C (set and dict operations over ``map``): a catch-up
    passes hundreds of thousands of keys through here.
    """

    def __init__(self, keys: int = DEFAULT_KEYS) -> None:
        """Remember up to ``2 * keys`` keys (plus one batch)."""
        self._limit = keys
        self._young: dict[tuple[str, bytes], tuple[int, int]] = {}
        self._old: dict[tuple[str, bytes], tuple[int, int]] = {}

    def unseen(self, changes: Sequence[Change]) -> Sequence[Change]:
        """The changes that may still win here (``changes`` itself when all may)."""
        young, old = self._young, self._old
        if not young and not old:
            return changes
        slots = list(map(_slot, changes))
        if not any(map(young.__contains__, slots)) and not any(map(old.__contains__, slots)):
            return changes  # none of these keys applied lately: all may win
        keep = []
        for change in changes:
            slot = (change.ns, change.key)
            known = young.get(slot) or old.get(slot)
            if known is None or (change.hlc, change.node) > known or is_document(change):
                keep.append(change)
        return changes if len(keep) == len(changes) else keep

    def remember(self, changes: Sequence[Change], sender: int) -> None:
        """Note the stamps of ``changes`` from ``sender``, offered by a committed transaction.

        Only relayed changes (written by another node than ``sender``) are
        remembered. With relay suppression a change comes straight from its
        origin once and is relayed only where that origin is not pulled
        directly -- and there it may come by several relays, or by its origin
        when the link returns: those later copies are the ones dropped. A
        catch-up from the origin itself then costs nothing here.

        A stamp replaces whatever was remembered for its key, even a newer
        one (a page holds each key once; two pages may repeat one): that only
        forgets something, and forgetting is always safe here.
        """
        relayed = list(compress(changes, map(sender.__ne__, map(_node, changes))))
        if not relayed:
            return
        young = self._young
        young.update(zip(map(_slot, relayed), map(_stamp, relayed), strict=True))
        if len(young) >= self._limit:
            self._old, self._young = young, {}


_slot = itemgetter(0, 1)
_stamp = itemgetter(5, 6)
_node = itemgetter(6)
