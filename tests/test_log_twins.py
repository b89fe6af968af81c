"""The node's SQL twins of the core's log rules answer as the rules do, on random logs.

Why: a node pages its change log, keeps deferral windows and merges remote
changes in SQLite, for speed (the rows a stream leaves out never become
Python objects; a batch is upserted 128 rows per statement). The simulated
network of ``tests/test_replication_sim.py`` runs the Python rules of
:mod:`edgekv_replication` instead, over a dictionary log. Its findings hold
for the node only if the two answer alike: these properties hold the SQL
(:class:`~edgekv.store.changelog.ChangeLog`,
:data:`~edgekv.store.merge.LAST_WRITER_WINS`) to the rules
(:func:`~edgekv_replication.log.page_leaving_out`,
:meth:`~edgekv_replication.relays.Deferral.advance`,
:func:`~edgekv_replication.changes.wins` through
:func:`~edgekv_replication.session.plan_apply`) on random logs, marks and
pages, over a real store.
"""

from __future__ import annotations

import asyncio
import itertools
import tempfile
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

from hypothesis import given, settings
from hypothesis import strategies as st

from edgekv.store.store import Store
from edgekv_replication.changes import Change
from edgekv_replication.envelope import Batch
from edgekv_replication.log import page_leaving_out
from edgekv_replication.relays import Deferral
from edgekv_replication.session import PeerCursor, plan_apply

X, Y, Z, PULLER = 0x1111, 0x2222, 0x3333, 0x4444
NODES = (X, Y, Z, PULLER)
NO_HOLD_MS = 10**12
"""A clock offset no stamp here exceeds: nothing is held back."""
TWIN_SETTINGS = settings(max_examples=100, deadline=None, database=None, derandomize=True)
T = TypeVar("T")


@st.composite
def writes(draw: st.DrawFn, keys: int) -> list[Change]:
    """Writes to ``keys`` keys, each with a stamp of its own (a stamp names one write).

    Few stamps, so that stamps tie with marks and other writes' stamps.
    """
    stamps = draw(
        st.lists(st.tuples(st.integers(1, 10), st.sampled_from(NODES)), unique=True, max_size=24)
    )
    return [
        Change(
            "ns",
            draw(st.integers(0, keys - 1)).to_bytes(1, "big"),
            draw(st.one_of(st.none(), st.binary(max_size=40))),
            draw(st.sampled_from([None, "", '{"m":1}'])),
            draw(st.one_of(st.none(), st.integers(1, 10))),
            hlc,
            node,
        )
        for hlc, node in stamps
    ]


marks = st.dictionaries(st.sampled_from((X, Y, Z)), st.integers(0, 10), max_size=3)
some_marks = st.dictionaries(st.sampled_from((X, Y, Z)), st.integers(0, 10), min_size=1, max_size=3)
"""A window is only ever open with marks (it opens at a deferred change; marks never go)."""


def _with_store(body: Callable[[Store], Awaitable[T]]) -> T:
    """Run ``body`` over a fresh store (one per example)."""

    async def run() -> T:
        with tempfile.TemporaryDirectory() as tmp:
            store = Store(Path(tmp) / "data")
            try:
                return await body(store)
            finally:
                store.close()

    return asyncio.run(run())


async def _logged(store: Store, changes: list[Change]) -> list[Change]:
    """Apply ``changes`` (as one peer's batch) and return the log they left, in seq order."""
    await store.apply_changes(changes, X, PeerCursor(1, 1), max_offset_ms=NO_HOLD_MS)
    return store.changes_after(0, 10_000)


def _entries(logged: list[Change]) -> Callable[[int], Iterator[Change]]:
    """The dictionary log's view the rules read: changes after a cursor, in seq order."""
    return lambda cursor: (change for change in logged if change.seq > cursor)


@TWIN_SETTINGS
@given(
    changes=writes(keys=16),
    cursor=st.integers(0, 16),
    limit=st.integers(1, 6),
    leave_out=st.sampled_from(NODES),
    deferred=st.one_of(st.none(), marks),
    max_bytes=st.sampled_from([0, 100, 300, 8 * 1024 * 1024]),
)
def test_sql_pages_answer_as_the_page_rule(
    changes: list[Change],
    cursor: int,
    limit: int,
    leave_out: int,
    deferred: dict[int, int] | None,
    max_bytes: int,
) -> None:
    async def body(store: Store) -> None:
        logged = await _logged(store, changes)
        head = store.seq
        in_sql = in_rule = None
        if deferred is not None:
            in_sql, in_rule = Deferral(), Deferral()
            in_sql.update(deferred.items())
            in_rule.update(deferred.items())
        at = min(cursor, head)
        got = store.log.page_after(at, limit, leave_out, head, in_sql, max_bytes)
        want = page_leaving_out(_entries(logged), at, limit, leave_out, head, in_rule, max_bytes)
        assert got == want
        if in_sql is not None and in_rule is not None:
            assert in_sql.window == in_rule.window

    _with_store(body)


@TWIN_SETTINGS
@given(
    changes=writes(keys=16),
    deferred=some_marks,
    window=st.integers(1, 16),
    upto=st.integers(0, 24),
)
def test_sql_window_advances_as_the_deferral_rule(
    changes: list[Change], deferred: dict[int, int], window: int, upto: int
) -> None:
    async def body(store: Store) -> None:
        logged = await _logged(store, changes)
        in_sql, in_rule = Deferral(window=window), Deferral(window=window)
        in_sql.update(deferred.items())
        in_rule.update(deferred.items())
        store.log.advance_window(in_sql, upto)
        in_rule.advance(c for c in _entries(logged)(window - 1) if c.seq <= upto)
        assert in_sql.window == in_rule.window

    _with_store(body)


@TWIN_SETTINGS
@given(changes=writes(keys=3), data=st.data())
def test_the_sql_merge_keeps_what_last_writer_wins_keeps(
    changes: list[Change], data: st.DataObject
) -> None:
    """Every write delivered, in any order, some twice, in batches: the rule's winners."""
    delivered = data.draw(st.permutations(changes))
    delivered += data.draw(st.lists(st.sampled_from(changes), max_size=8)) if changes else []
    cuts = data.draw(st.lists(st.integers(0, len(delivered)), max_size=4))
    bounds = sorted({0, len(delivered), *cuts})
    batches = [delivered[a:b] for a, b in itertools.pairwise(bounds)]

    async def body(store: Store) -> dict[tuple[str, bytes], tuple[object, ...]]:
        for number, batch in enumerate(batches, start=1):
            await store.apply_changes(batch, X, PeerCursor(1, number), max_offset_ms=NO_HOLD_MS)
        return {(c.ns, c.key): c.state() for c in store.changes_after(0, 10_000)}

    in_sql = _with_store(body)
    in_rule: dict[tuple[str, bytes], Change] = {}
    for number, batch in enumerate(batches, start=1):
        message = Batch(number - 1, number, tuple(batch), 0, number)
        plan = plan_apply(message, lambda ns, key: in_rule.get((ns, key)), 0, NO_HOLD_MS)
        assert not plan.hold
        for change in plan.apply:
            in_rule[(change.ns, change.key)] = change
    assert in_sql == {slot: change.state() for slot, change in in_rule.items()}


@TWIN_SETTINGS
@given(
    changes=writes(keys=16),
    edits=st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 3)), min_size=1, max_size=8),
    compact=st.booleans(),
    split=st.integers(0, 24),
    cursor=st.integers(0, 24),
    limit=st.integers(1, 6),
    leave_out=st.sampled_from((*NODES, None)),
    deferred=st.one_of(st.none(), marks),
    max_bytes=st.sampled_from([0, 100, 300, 8 * 1024 * 1024]),
)
def test_sql_pages_with_documents_answer_as_the_page_rule_over_the_same_rows(
    changes: list[Change],
    edits: list[tuple[str, int]],
    compact: bool,
    split: int,
    cursor: int,
    limit: int,
    leave_out: int | None,
    deferred: dict[int, int] | None,
    max_bytes: int,
) -> None:
    """With document rows in the log a page is ``limit`` rows of it, filtered in Python.

    Those rows (key-value entries, document updates, compacted updates, as
    :meth:`ChangeLog.changes_after` reads them) given to the rule as the whole
    log up to the last of them: the page and where it ends are the rule's.
    ``leave_out`` None: the node's own document changes are the ones left out.
    """

    async def body(store: Store) -> None:
        # Key-value writes before and after the document edits, so the rows interleave.
        await store.apply_changes(changes[:split], X, PeerCursor(1, 1), max_offset_ms=NO_HOLD_MS)
        for doc_id, n in edits:
            await store.documents.put("users", doc_id, {"n": n})
        if compact:  # a document's log folded into one update at its newest seq
            await store.documents.compact(sorted({("users", doc_id) for doc_id, _ in edits}))
        await store.apply_changes(changes[split:], X, PeerCursor(1, 2), max_offset_ms=NO_HOLD_MS)
        assert store.documents.present
        left_out = store.identity.node_id if leave_out is None else leave_out
        head = store.seq
        in_sql = in_rule = None
        if deferred is not None:
            in_sql, in_rule = Deferral(), Deferral()
            in_sql.update(deferred.items())
            in_rule.update(deferred.items())
        at = min(cursor, head)
        rows = store.changes_after(at, limit, max_bytes)
        rows_end = rows[-1].seq if rows else at
        got = store.log.page_after(at, limit, left_out, head, in_sql, max_bytes)
        want = page_leaving_out(_entries(rows), at, limit, left_out, rows_end, in_rule, max_bytes)
        assert got == want
        if in_sql is not None and in_rule is not None:
            assert in_sql.window == in_rule.window

    _with_store(body)
