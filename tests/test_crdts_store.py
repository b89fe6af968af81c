"""Counters and sets in a real store: the counter read cache stays exact, rows are the log's."""

from __future__ import annotations

import time

import pytest

from edgekv.store.crdt_export import CounterCursor, CounterValue, SetCursor, SetMember
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


async def test_export_cursors_keep_a_group_whole_across_pages(store: Store) -> None:
    # Counter "c": a row of this node and of two others; "d": this node's only.
    await store.crdts.counter_add("ns", b"c", 1)
    await store.crdts.counter_add("ns", b"d", -4)
    remote = [remote_row(77, 10, 1 << 16), remote_row(78, 100, 2 << 16)]
    await store.apply_changes(remote, 77, PeerCursor(1, 1), 10**9)
    await store.crdts.set_update("ns", b"s", ["a", "b", "c"], [], 10)
    await store.crdts.set_update("ns", b"s", [], ["b"], 10)
    for page_rows in (1, 2, 3, 1000):
        found: list[CounterValue] = []
        cursor = CounterCursor(store.database.reader, page_rows=page_rows)
        while not cursor.done:
            found += cursor.next_page()
        assert found == [CounterValue("ns", b"c", 111, None), CounterValue("ns", b"d", -4, None)]
        members: list[SetMember] = []
        set_cursor = SetCursor(store.database.reader, "ns", b"s", page_rows=page_rows)
        while not set_cursor.done:
            members += set_cursor.next_page()
        assert [m.member for m in members] == ["a", "c"]
    one = CounterCursor(store.database.reader, "ns", b"d")
    assert one.next_page() == [CounterValue("ns", b"d", -4, None)]
    assert CounterCursor(store.database.reader, "other").next_page() == []


def remote_member(member: str, node: int, hlc: int) -> Change:
    row = orsets.encode_row(orsets.Row(hlc, {}))
    return Change(
        orsets.set_ns("ns"), orsets.row_key(b"s", member, node), row, None, None, hlc, node
    )


async def test_a_full_set_is_counted_once_for_all_the_adds_it_refuses(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    await store.crdts.set_update("ns", b"s", ["a", "b", "c"], [], 3)
    counted: list[int] = []
    members_of = orsets.members_of

    def counting(rows: list[orsets.MemberRow]) -> object:
        counted.append(len(rows))
        return members_of(rows)

    monkeypatch.setattr(orsets, "members_of", counting)
    for i in range(20):
        with pytest.raises(SetFull):
            await store.crdts.set_update("ns", b"s", [f"x{i}"], [], 3)
    # Counting decodes every row of the set: once, not once per refused add.
    assert counted == [3]


async def test_the_set_size_kept_between_adds_follows_rollbacks_removals_and_remote_rows(
    store: Store,
) -> None:
    await store.crdts.set_update("ns", b"s", ["a", "b", "c"], [], 3)
    with pytest.raises(SetFull):  # counted with "a" removed, then rolled back
        await store.crdts.set_update("ns", b"s", ["d", "e"], ["a"], 3)
    with pytest.raises(SetFull):
        await store.crdts.set_update("ns", b"s", ["d"], [], 3)
    await store.crdts.set_update("ns", b"s", [], ["a"], 3)
    await store.crdts.set_update("ns", b"s", ["d"], [], 3)
    with pytest.raises(SetFull):  # b, c, d: the size is known again
        await store.crdts.set_update("ns", b"s", ["e", "f"], [], 4)
    # A member replicated in: a size kept from before would let "e" in.
    await store.apply_changes([remote_member("x", 77, 1 << 16)], 77, PeerCursor(1, 1), 10**9)
    with pytest.raises(SetFull):
        await store.crdts.set_update("ns", b"s", ["e"], [], 4)
    assert store.crdts.set_page("ns", b"s").members == ["b", "c", "d", "x"]
