"""A node's stream pages leave deferred origins out in SQLite exactly as the core's rule says."""

from __future__ import annotations

from edgekv.store.store import Store
from edgekv_replication.changes import Change
from edgekv_replication.relays import Deferral
from edgekv_replication.session import PeerCursor

X, Y, PULLER = 0x1111, 0x2222, 0x3333


async def _fill(store: Store) -> list[Change]:
    """Ten rows written alternately by X and Y, stamps 100, 200, ..."""
    changes = [
        Change("ns", b"k%d" % i, b"v", None, None, (i + 1) * 100, X if i % 2 == 0 else Y, i + 1)
        for i in range(10)
    ]
    await store.apply_changes(changes, X, PeerCursor(1, 10), max_offset_ms=10**12)
    return store.changes_after(0, 100)


async def test_sql_pages_match_the_core_rule(store: Store) -> None:
    logged = await _fill(store)
    in_sql, in_core = Deferral(), Deferral()
    for deferral in (in_sql, in_core):
        deferral.update([(X, 300)])  # X's first two rows (stamps 100 and 300) are covered
    # Fewer rows to send than the limit: the page runs to the head.
    sent, end = store.page_after(0, 6, PULLER, store.seq, in_sql)
    assert sent == in_core.split(logged)
    assert all(change.node == Y for change in sent)
    assert end == store.seq
    # The window opens at X's first row above its mark: the third (stamp 500).
    assert in_sql.window == in_core.window == logged[4].seq
    assert in_sql.durable(end) == logged[4].seq - 1


async def test_a_full_page_ends_at_its_last_row_sent(store: Store) -> None:
    logged = await _fill(store)
    deferral = Deferral()
    deferral.update([(X, 300)])
    sent, end = store.page_after(0, 2, PULLER, store.seq, deferral)
    assert sent == [logged[1], logged[3]]
    assert end == logged[3].seq
    assert deferral.window is None  # X's rows up to there are covered
    _, end = store.page_after(end, 2, PULLER, store.seq, deferral)
    assert deferral.window == logged[4].seq


async def test_newer_marks_close_the_window(store: Store) -> None:
    logged = await _fill(store)
    deferral = Deferral()
    deferral.update([(X, 0)])
    _, end = store.page_after(0, 10, PULLER, store.seq, deferral)
    assert deferral.window == logged[0].seq
    deferral.update([(X, 700)])
    store.advance_window(deferral, end)
    assert deferral.window == logged[8].seq  # stamp 900 is the first X row above 700
    deferral.update([(X, 10_000)])
    store.advance_window(deferral, end)
    assert deferral.window is None
    assert deferral.durable(end) == end


async def test_origin_marks_stay_below_stamps_issued_outside_the_writer(store: Store) -> None:
    await store.write_value("ns", b"a", b"1")
    marks = store.origin_marks
    first = marks.at(store.seq)
    assert first is not None
    assert first >= store.get("ns", b"a").hlc  # type: ignore[union-attr]
    with marks.stamping_outside():
        floor = store.clock.last
        store.clock.now()  # a strong write's stamp, not logged yet
        await store.write_value("ns", b"b", b"2")
        assert marks.at(store.seq) == floor  # held below the stamp in flight
    await store.write_value("ns", b"c", b"3")
    assert marks.at(store.seq) == store.clock.last
