"""Bookmarks wait for a cursor that moves only once every read sees its batch."""

from __future__ import annotations

import asyncio

from edgekv.store.store import Store
from edgekv_replication.changes import Change
from edgekv_replication.session import PeerCursor

PEER = 0x1234


async def test_settled_cursor_moves_after_the_cache_is_cleared(store: Store) -> None:
    await store.write_value("ns", b"k", b"old")
    assert store.get("ns", b"k") is not None  # now cached
    newer = Change("ns", b"k", b"new", None, None, store.clock.now() + (1 << 20), PEER)
    applying = store.apply_changes([newer], PEER, PeerCursor(7, 5), max_offset_ms=10**9)
    seen: list[tuple[int, bytes | None]] = []

    def look() -> None:
        # Whenever the settled cursor says the batch is in, reads must see it.
        entry = store.get("ns", b"k")
        seen.append((store.settled_cursor(PEER), entry.value if entry else None))
        if not applying.done() or store.settled_cursor(PEER) < 5:
            asyncio.get_running_loop().call_soon(look)

    look()
    await applying  # the cursor's callback was registered first, so it has run
    assert store.settled_cursor(PEER) == 5
    await asyncio.sleep(0)  # let look() run once more
    assert store.peer_cursor(PEER).cursor == 5
    assert all(value == b"new" for cursor, value in seen if cursor >= 5)
    assert store.get("ns", b"k").value == b"new"  # type: ignore[union-attr]


async def test_settled_cursor_survives_a_restart(store: Store) -> None:
    await store.save_peer_cursor(PEER, PeerCursor(7, 42))
    assert store.settled_cursor(PEER) == 42
    store.close()
    reopened = Store(store.path.parent)
    try:
        assert reopened.settled_cursor(PEER) == 42
    finally:
        reopened.close()
