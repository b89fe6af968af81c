"""A stream's batches are applied ahead of each other's commits, yet never past a failure."""

from __future__ import annotations

import asyncio

import pytest

from edgekv.store.peer_state import CursorMoved
from edgekv.store.store import Store
from edgekv_replication.changes import Change
from edgekv_replication.session import PeerCursor

PEER = 0x5EED
INCARNATION = 7


def _change(store: Store, key: bytes, seq: int) -> Change:
    return Change("ns", key, b"v", None, None, store.clock.now(), PEER, seq)


async def test_batches_submitted_back_to_back_all_commit_in_order(store: Store) -> None:
    applying = [
        store.apply_changes(
            [_change(store, b"k%d" % i, i)],
            PEER,
            PeerCursor(INCARNATION, i),
            max_offset_ms=500,
            after=PeerCursor(INCARNATION, i - 1),
        )
        for i in range(1, 6)
    ]
    results = await asyncio.gather(*applying)
    assert [r.applied for r in results] == [1] * 5
    assert store.peer_cursor(PEER) == PeerCursor(INCARNATION, 5)
    assert all(store.get("ns", b"k%d" % i) is not None for i in range(1, 6))


async def test_a_batch_behind_a_failed_one_applies_nothing(store: Store) -> None:
    good = _change(store, b"first", 1)
    broken = _change(store, b"second", 2)._replace(key=None)  # type: ignore[arg-type]  # violates NOT NULL in SQLite
    behind = _change(store, b"third", 3)
    futures = [
        store.apply_changes(
            [c], PEER, PeerCursor(INCARNATION, c.seq), 500, after=PeerCursor(INCARNATION, c.seq - 1)
        )
        for c in (good, broken, behind)
    ]
    outcomes = await asyncio.gather(*futures, return_exceptions=True)
    assert outcomes[0].applied == 1  # type: ignore[union-attr]
    assert isinstance(outcomes[1], Exception)
    assert not isinstance(outcomes[1], CursorMoved)
    assert isinstance(outcomes[2], CursorMoved)
    # The cursor stays before the failed batch; nothing after it was applied.
    assert store.peer_cursor(PEER) == PeerCursor(INCARNATION, 1)
    assert store.get("ns", b"third") is None


async def test_another_incarnation_starts_from_zero(store: Store) -> None:
    await store.save_peer_cursor(PEER, PeerCursor(INCARNATION, 40))
    fresh = PeerCursor(INCARNATION + 1, 0)
    await store.apply_changes(
        [_change(store, b"k", 3)], PEER, PeerCursor(INCARNATION + 1, 3), 500, after=fresh
    )
    assert store.peer_cursor(PEER) == PeerCursor(INCARNATION + 1, 3)
    with pytest.raises(CursorMoved):
        await store.save_peer_cursor(PEER, PeerCursor(INCARNATION + 1, 9), after=fresh)
