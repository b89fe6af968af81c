"""Counters and sets in a real store: the counter read cache stays exact, rows are the log's."""

from __future__ import annotations

import time

import pytest

from edgekv.store.crdts import RowTooLarge, SetFull
from edgekv.store.store import Store
from edgekv_replication import counters, orsets
from edgekv_replication.changes import Change
from edgekv_replication.session import PeerCursor


def remote_row(node: int, p: int, hlc: int, expiration: int | None = None) -> Change:
    return Change(
        counters.counter_ns("ns"),
        counters.row_key(b"c", node),
        counters.encode_row(counters.Row(1, p, 0)),
        None,
        expiration,
        hlc,
        node,
    )


async def test_a_cached_counter_follows_local_adds_remote_rows_and_expiry(store: Store) -> None:
    assert store.crdts.counter("ns", b"c").value == 0  # cached as absent
    assert (await store.crdts.counter_add("ns", b"c", 4)).value == 4
    assert store.crdts.counter("ns", b"c").value == 4
    assert store.crdts.counter("ns", b"c") is store.crdts.counter("ns", b"c")  # from the cache
    soon = int(time.time()) + 100
    await store.apply_changes([remote_row(77, 10, 1 << 16, soon)], 77, PeerCursor(1, 1), 10**9)
    assert store.crdts.counter("ns", b"c").value == 14
    # The remote row expires: the cached state ends with it.
    assert store.crdts.counter("ns", b"c", now=soon + 1).value == 4
    await store.crdts.counter_reset("ns", b"c")
    assert store.crdts.counter("ns", b"c").value == 0


async def test_counter_and_set_rows_are_ordinary_changes_of_the_log(store: Store) -> None:
    await store.crdts.counter_add("ns", b"c", 1)
    await store.crdts.set_update("ns", b"s", ["m"], [], 10)
    changes = store.changes_after(0, 10)
    assert [(c.ns, c.key) for c in changes] == [
        ("@ctr:ns", counters.row_key(b"c", store.node_id)),
        ("@set:ns", orsets.row_key(b"s", "m", store.node_id)),
    ]
    assert all(c.node == store.node_id for c in changes)


async def test_a_set_update_over_the_limit_applies_nothing(store: Store) -> None:
    await store.crdts.set_update("ns", b"s", ["a", "b"], [], 3)
    with pytest.raises(SetFull):
        await store.crdts.set_update("ns", b"s", ["c", "d", "e"], ["a"], 3)
    assert store.crdts.set_page("ns", b"s").members == ["a", "b"]


async def test_a_reset_whose_row_would_pass_the_rows_limit_writes_nothing(store: Store) -> None:
    # A counter touched by more PoPs than one row can reset (about a thousand).
    many = [
        Change(
            counters.counter_ns("ns"),
            counters.row_key(b"c", node),
            counters.encode_row(counters.Row(1, 2**62, 2**62)),
            None,
            None,
            1 << 16,
            node,
        )
        for node in range(1, 1600)
    ]
    await store.apply_changes(many, 5, PeerCursor(1, 1), 10**9)
    before = store.seq
    with pytest.raises(RowTooLarge):
        await store.crdts.counter_reset("ns", b"c")
    assert store.seq == before
