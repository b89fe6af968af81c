"""Changes, the unit of replication, and the last-writer-wins merge of entries.

A :class:`Change` is the full state of one ``(namespace, key)`` as one node
holds it: value (``None`` for a tombstone), metadata, expiration and the write
stamp. Replicating whole states rather than operations is what makes the merge
a join: :func:`merge_entries` is commutative, associative and idempotent, so
duplicated, re-ordered and relayed deliveries all converge.
"""

from __future__ import annotations

from typing import NamedTuple

from edgekv_replication.hlc import Stamp


class Change(NamedTuple):
    """The state of one key as a replica holds it, and where it sits in the sender's log."""

    ns: str
    key: bytes
    value: bytes | None
    metadata: str | None
    expiration: int | None
    hlc: int
    node: int
    seq: int = 0
    """Position in the *sending* node's change log (not part of the entry's state)."""

    @property
    def stamp(self) -> Stamp:
        """The write order of this state."""
        return Stamp(self.hlc, self.node)

    @property
    def is_tombstone(self) -> bool:
        """Whether this state is a delete."""
        return self.value is None

    def state(self) -> tuple[object, ...]:
        """The replicated state, without the sender-local ``seq``."""
        return (self.ns, self.key, self.value, self.metadata, self.expiration, self.hlc, self.node)


def _order(change: Change) -> tuple[object, ...]:
    # Stamps are unique per write, so the tail only ever decides between two
    # copies of the same write; it keeps the merge a total order regardless.
    # Absent fields sort below every present value (None vs "" or -1 differ).
    return (
        change.hlc,
        change.node,
        () if change.value is None else (change.value,),
        () if change.metadata is None else (change.metadata,),
        () if change.expiration is None else (change.expiration,),
    )


def wins(incoming: Change, current: Change | None) -> bool:
    """Whether ``incoming`` replaces ``current`` under last-writer-wins."""
    return current is None or _order(incoming) > _order(current)


def merge_entries(a: Change, b: Change) -> Change:
    """Return the winner of two states of the same key (a join: max by write order)."""
    if (a.ns, a.key) != (b.ns, b.key):
        raise ValueError("merge_entries takes two states of the same key")
    winner = a if _order(a) >= _order(b) else b
    return winner._replace(seq=0)


def is_live(change: Change, now_seconds: float) -> bool:
    """Whether the state reads as present at ``now_seconds`` (not deleted, not expired)."""
    return change.value is not None and (
        change.expiration is None or change.expiration > now_seconds
    )
