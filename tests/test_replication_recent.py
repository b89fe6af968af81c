"""Relayed copies of applied changes are dropped before SQLite; nothing that can win is."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edgekv.peers.recent import RecentStamps
from edgekv.store.store import Store
from edgekv_replication.changes import Change, wins
from edgekv_replication.documents import DOC_NS_PREFIX
from edgekv_replication.session import PeerCursor

RELAYER = 99
"""The peer the changes came from: not their writer (node 7), so they were relayed."""


def change(key: bytes, hlc: int, node: int = 7, value: bytes | None = b"v") -> Change:
    return Change("ns", key, value, None, None, hlc << 16, node, 1)


def test_a_copy_of_an_applied_change_is_dropped_and_a_newer_one_kept() -> None:
    recent = RecentStamps()
    first = [change(b"a", 10), change(b"b", 10)]
    assert recent.unseen(first) is first  # nothing known yet
    recent.remember(first, RELAYER)
    relayed = [change(b"a", 10), change(b"b", 9), change(b"b", 11), change(b"c", 1)]
    assert recent.unseen(relayed) == [change(b"b", 11), change(b"c", 1)]
    # The same stamp from another node is another write: it may win the tie-break.
    assert recent.unseen([change(b"a", 10, node=8)]) == [change(b"a", 10, node=8)]


def test_changes_straight_from_their_origin_are_not_remembered() -> None:
    recent = RecentStamps()
    from_origin = [change(b"a", 10)]
    recent.remember(from_origin, 7)  # a catch-up from the writer itself costs nothing here
    assert recent.unseen(from_origin) is from_origin
    recent.remember(from_origin, RELAYER)
    assert recent.unseen(from_origin) == []


def test_document_changes_always_pass() -> None:
    recent = RecentStamps()
    doc = Change(DOC_NS_PREFIX + "c", b"d1", b"update", None, None, 10 << 16, 7, 1)
    recent.remember([doc], RELAYER)
    assert recent.unseen([doc]) == [doc]  # Y updates merge by content, not by stamp


def test_memory_is_bounded_by_two_generations() -> None:
    recent = RecentStamps(keys=10)
    for batch in range(10):
        recent.remember([change(f"k{batch}-{i}".encode(), 5) for i in range(4)], RELAYER)
    recent.remember([change(b"x", 5)], RELAYER)
    # Two generations of at most ``keys`` plus the batch that filled one.
    assert len(recent._young) + len(recent._old) <= 2 * 10 + 4
    assert recent.unseen([change(b"x", 5)]) == []


@given(
    st.lists(
        st.tuples(st.sampled_from([b"a", b"b", b"c"]), st.integers(1, 6), st.integers(1, 3)),
        max_size=30,
    )
)
def test_a_dropped_change_never_beats_the_state_it_would_meet(
    deliveries: list[tuple[bytes, int, int]],
) -> None:
    # Model: state per key under last-writer-wins; deliveries arrive in batches of 3.
    recent = RecentStamps(keys=4)
    state: dict[bytes, Change] = {}
    batches = [deliveries[i : i + 3] for i in range(0, len(deliveries), 3)]
    for batch in batches:
        changes = [change(key, hlc, node) for key, hlc, node in batch]
        kept = recent.unseen(changes)
        for dropped in [c for c in changes if c not in kept]:
            assert not wins(dropped, state.get(dropped.key))
        for c in kept:
            if wins(c, state.get(c.key)):
                state[c.key] = c
        recent.remember(kept, RELAYER)


def test_a_node_applies_each_key_once_when_copies_arrive_from_two_peers(tmp_path: Path) -> None:
    async def run() -> tuple[int, int, int]:
        store = Store(tmp_path)
        recent = RecentStamps()
        try:
            direct = [change(f"k{i}".encode(), 100 + i) for i in range(50)]
            offered = recent.unseen(direct)
            first = await store.apply_changes(offered, 1, PeerCursor(1, 50), 500)
            recent.remember(offered, RELAYER)
            relayed = recent.unseen(direct[::-1])
            second = await store.apply_changes(relayed, 2, PeerCursor(2, 50), 500)
            recent.remember(relayed, RELAYER)
            return first.applied, len(relayed), second.seq - first.seq
        finally:
            store.close()

    applied, relayed, seqs_taken = asyncio.run(run())
    assert (applied, relayed, seqs_taken) == (50, 0, 0)
