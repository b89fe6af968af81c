"""Log pages are bounded in bytes as well as rows, and end where their last change is."""

from __future__ import annotations

from edgekv.store.store import Store
from edgekv_replication.changes import Change
from edgekv_replication.log import CHANGE_OVERHEAD_BYTES
from edgekv_replication.session import PeerCursor

WRITER, PULLER = 0x1111, 0x3333
VALUE = b"v" * 1000


def _cost(change: Change) -> int:
    value, metadata = change.value or b"", change.metadata or ""
    return CHANGE_OVERHEAD_BYTES + len(change.key) + len(value) + len(metadata)


async def _fill(store: Store, nodes: list[int]) -> list[Change]:
    """One 1000-byte value per entry of ``nodes``, written by that node, seqs 1, 2, ..."""
    changes = [
        Change("ns", b"k%d" % i, VALUE, None, None, (i + 1) * 100, node, i + 1)
        for i, node in enumerate(nodes)
    ]
    await store.apply_changes(changes, WRITER, PeerCursor(1, len(nodes)), max_offset_ms=10**12)
    return store.changes_after(0, 100)


async def test_a_page_ends_at_the_change_that_reaches_its_byte_budget(store: Store) -> None:
    logged = await _fill(store, [WRITER] * 6)
    budget = 2 * _cost(logged[0]) + 1  # the third change reaches it
    sent, end = store.page_after(0, 500, PULLER, store.seq, max_bytes=budget)
    assert sent == logged[:3]
    assert end == logged[2].seq < store.seq  # not the head: rows after it were not read
    rest, end = store.page_after(end, 500, PULLER, store.seq, max_bytes=budget)
    assert rest == logged[3:]
    assert end == store.seq
    assert store.changes_after(0, 500, max_bytes=budget) == logged[:3]


async def test_a_change_over_the_budget_goes_alone(store: Store) -> None:
    logged = await _fill(store, [WRITER] * 3)
    sent, end = store.page_after(0, 500, PULLER, store.seq, max_bytes=10)
    assert (sent, end) == ([logged[0]], logged[0].seq)
    assert store.changes_after(logged[0].seq, 500, max_bytes=0) == [logged[1]]


async def test_a_page_cut_by_bytes_does_not_pass_left_out_rows_beyond_it(store: Store) -> None:
    # The puller's own rows after the cut are not read: the cursor must not jump over them
    # as it does over a stretch of left-out rows that ends a page short of its row limit.
    logged = await _fill(store, [WRITER, WRITER, PULLER, WRITER])
    sent, end = store.page_after(0, 500, PULLER, store.seq, max_bytes=_cost(logged[0]) + 1)
    assert sent == logged[:2]
    assert end == logged[1].seq
    sent, end = store.page_after(end, 500, PULLER, store.seq, max_bytes=_cost(logged[0]) + 1)
    assert sent == [logged[3]]  # the puller's own row is passed, not sent
    assert end == logged[3].seq


async def test_document_pages_are_bounded_in_bytes_too(store: Store) -> None:
    await store.documents.put("users", "u1", {"name": "a" * 2000})
    await store.write_value("kv", b"k", VALUE)
    await store.documents.put("users", "u2", {"name": "b" * 2000})
    everything = store.changes_after(0, 500)
    assert len(everything) == 3
    assert store.changes_after(0, 500, max_bytes=1) == everything[:1]
    first_two = _cost(everything[0]) + _cost(everything[1])
    assert store.changes_after(0, 500, max_bytes=first_two) == everything[:2]
    sent, end = store.page_after(0, 500, PULLER, store.seq, max_bytes=1)
    assert (sent, end) == (everything[:1], everything[0].seq)
