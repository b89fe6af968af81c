"""Remote changes merged into the store: last writer wins, per key and per document.

:meth:`Merger.apply_changes` takes a batch from a peer's stream (or the
upstream) and its cursor in one transaction; :meth:`Merger.merge_changes`
takes this node's own writes committed elsewhere (strong writes);
:meth:`Merger.release_held` applies changes held back for clock skew. A
key-value change goes through the same upsert as a local write
(:data:`~edgekv.store.kv.UPSERT`), in its :data:`LAST_WRITER_WINS` form; a
document change merges as a Y update (:mod:`edgekv.store.documents`).
"""

from __future__ import annotations

import asyncio
import functools
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import add, itemgetter, methodcaller

from edgekv.store.documents import DocumentStore
from edgekv.store.kv import UPSERT, WriteResult
from edgekv.store.peer_state import HOLD, SAVE_CURSOR, PeerState, check_cursor
from edgekv.store.writer import Txn, Writer
from edgekv_replication.changes import Change
from edgekv_replication.documents import DOC_NS_PREFIX, is_document
from edgekv_replication.hlc import COUNTER_BITS
from edgekv_replication.session import PeerCursor, is_too_far_ahead, stamp_too_far_ahead

LAST_WRITER_WINS = UPSERT.replace(
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", "VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, ?7)"
)
"""The merge of a remote key-value change: :data:`~edgekv.store.kv.UPSERT`, its
parameters a Change as it is (?8, the sender's seq, unused) followed by the
local seq, so remote changes are bound without building new tuples. The node
passes it to the store (fault-injection tests pass a broken one instead,
:mod:`edgekv.store.broken_merge`)."""
_HELD = (
    "SELECT id, ns, key, value, metadata, expiration, hlc, node"
    " FROM held_changes WHERE hlc < ? ORDER BY id"
)
_RELEASED = "DELETE FROM held_changes WHERE id = ?"


@dataclass(frozen=True, slots=True)
class ApplyResult:
    """What applying a batch of remote changes did."""

    applied: int
    held: int
    seq: int
    """The newest seq once applied."""
    first_seq: int = 0
    """The seq before: what this batch took, if anything, lies in ``(first_seq, seq]``."""


_hlc = itemgetter(5)  # Change.hlc, without the attribute lookup
_ns = itemgetter(0)
_is_document_ns = methodcaller("startswith", DOC_NS_PREFIX)


_ROW_PARAMS = 9
"""Parameters per row of the merge statement (``LAST_WRITER_WINS``): a Change's eight
fields, then the local seq."""
ROWS_PER_STATEMENT = 128
"""Remote changes upserted per statement: one multi-row VALUES costs about
two thirds of ``executemany`` per row (one step instead of one per row)."""


def _statement_sizes(rows: int) -> Iterator[int]:
    """Split ``rows`` into statements of 128 and powers of two (a few statement texts)."""
    full, rest = divmod(rows, ROWS_PER_STATEMENT)
    yield from repeat(ROWS_PER_STATEMENT, full)
    size = ROWS_PER_STATEMENT
    while rest:
        size //= 2
        if rest >= size:
            yield size
            rest -= size


@functools.cache
def _many_rows(single: str, rows: int) -> str:
    """``single`` (one VALUES group over ?1..?9) for ``rows`` rows, numbered on per row."""
    head, _, rest = single.partition(" VALUES ")
    group, _, tail = rest.partition(")")
    groups = (_renumbered(group + ")", i * _ROW_PARAMS) for i in range(rows))
    return head + " VALUES " + ", ".join(groups) + tail


def _renumbered(sql: str, shift: int) -> str:
    def shifted(match: re.Match[str]) -> str:
        return f"?{int(match.group(1)) + shift}"

    return re.sub(r"\?(\d+)", shifted, sql)


class Merger:
    """Merges remote changes into ``kv`` and the documents, moving peers' cursors with them."""

    def __init__(
        self,
        writer: Writer,
        documents: DocumentStore,
        peers: PeerState,
        node_id: int,
        merge_statement: str = LAST_WRITER_WINS,
    ) -> None:
        """Merge through ``writer``; ``merge_statement`` is :data:`LAST_WRITER_WINS` in a node."""
        self.writer = writer
        self.documents = documents
        self._peers = peers
        self.node_id = node_id
        self._upsert_change = merge_statement
        self.may_hold = True
        """False only once a count found nothing held and no commit held a change since
        (set again after such a commit): the release loop skips its count meanwhile."""

    def apply_changes(
        self,
        changes: Sequence[Change],
        peer: int,
        cursor: PeerCursor,
        max_offset_ms: int,
        after: PeerCursor | None = None,
    ) -> asyncio.Future[ApplyResult]:
        """Merge remote ``changes`` and move ``peer``'s cursor, in one transaction.

        With ``after``, the transaction applies nothing unless the cursor
        saved for ``peer`` is ``after`` (:class:`CursorMoved` otherwise): a
        stream submits its next batch before the previous one commits, and if
        that one fails, no later batch may carry the cursor past it.

        Each change goes through the same last-writer-wins upsert as local
        writes, 128 rows per statement (:func:`_many_rows`). Every change is
        offered the next seq; one that loses is a no-op and leaves its seq
        unused (a gap in the log, which cursors simply pass). A change stamped more than
        ``max_offset_ms`` ahead of the local clock is held back, neither
        applied nor dropped (:meth:`release_held` applies it later).
        """

        def op(txn: Txn) -> ApplyResult:
            if after is not None:
                check_cursor(txn.conn, peer, after)
            first_seq = txn.seq
            wall_ms = txn.clock.wall_ms()
            ready: Sequence[Change] = changes
            newest = max(map(_hlc, changes), default=0)
            # Checked one by one only when the newest stamp is too far ahead.
            if stamp_too_far_ahead(newest, wall_ms, max_offset_ms):
                ready = [c for c in changes if not is_too_far_ahead(c, wall_ms, max_offset_ms)]
                newest = max(map(_hlc, ready), default=0)
            held = len(changes) - len(ready)
            if held:
                txn.conn.executemany(
                    HOLD,
                    (c.state() for c in changes if is_too_far_ahead(c, wall_ms, max_offset_ms)),
                )
            applied = 0
            # Over the batch's few distinct namespaces, not its every row.
            if any(map(_is_document_ns, set(map(_ns, ready)))):
                # Document changes merge as Y updates, each logged under a seq of its own.
                docs = [c for c in ready if is_document(c)]
                applied += self.documents.apply_remote(txn, docs)
                ready = [c for c in ready if not is_document(c)]
            if ready:
                base = txn.seq
                before = txn.conn.total_changes
                # Change + (local seq,): concatenated in C, no Python call per row.
                rows = list(map(add, ready, zip(range(base + 1, base + len(ready) + 1))))
                done = 0
                for size in _statement_sizes(len(rows)):
                    txn.conn.execute(
                        _many_rows(self._upsert_change, size),
                        list(chain.from_iterable(rows[done : done + size])),
                    )
                    done += size
                applied += txn.conn.total_changes - before
                txn.seq = base + len(ready)
                txn.touched_rows.append(ready)
                # Later local writes must order after everything applied here.
                txn.clock.observe(newest)
            txn.conn.execute(SAVE_CURSOR, (peer, cursor.incarnation, cursor.cursor, wall_ms))
            return ApplyResult(applied, held, txn.seq, first_seq)

        applied = self.writer.submit(op)
        applied.add_done_callback(self._note_held)
        return self._peers.settling(applied, peer, cursor)

    def _note_held(self, applied: asyncio.Future[ApplyResult]) -> None:
        # After the commit: a count that runs later sees the held rows.
        if not applied.cancelled() and applied.exception() is None and applied.result().held:
            self.may_hold = True

    def merge_changes(
        self, changes: Sequence[Change]
    ) -> asyncio.Future[tuple[WriteResult, list[int]]]:
        """Merge changes this node made elsewhere (a strong write committed upstream).

        Resolves with where the last of them landed (for the write's bookmark)
        and the seqs they took.
        """

        def op(txn: Txn) -> tuple[WriteResult, list[int]]:
            result = WriteResult(0, self.node_id, txn.seq)
            seqs = []
            for change in changes:
                if self._merge(txn, change):
                    result = WriteResult(change.hlc, change.node, txn.seq)
                    seqs.append(txn.seq)
            return result, seqs

        return self.writer.submit(op)

    def release_held(self, max_offset_ms: int) -> asyncio.Future[int]:
        """Apply held changes that are no longer too far ahead; return how many."""

        def op(txn: Txn) -> int:
            limit_hlc = (txn.clock.wall_ms() + max_offset_ms + 1) << COUNTER_BITS
            rows = txn.conn.execute(_HELD, (limit_hlc,)).fetchall()
            for row in rows:
                self._merge(txn, Change(*row[1:]))
                txn.conn.execute(_RELEASED, (row[0],))
            return len(rows)

        return self.writer.submit(op)

    def _merge(self, txn: Txn, change: Change) -> bool:
        if is_document(change):
            return self.documents.apply_remote(txn, [change]) > 0
        cursor = txn.conn.execute(
            UPSERT,
            (txn.next_seq(), *change.state()),
        )
        if not cursor.rowcount:
            return False
        txn.take_seq()
        txn.touched.append((change.ns, change.key))
        # Later local writes must order after everything applied here.
        txn.clock.observe(change.hlc)
        return True
