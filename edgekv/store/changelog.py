"""The one change log of a node: key-value rows and document updates in ``seq`` order.

Every change a node stores takes the next ``seq``: a ``kv`` row (moved to a
newer seq when overwritten), a Y update in ``doc_log``, or a compacted
snapshot in ``docs``. :class:`ChangeLog` pages all of them in one order for
peer streams and the upstream (:meth:`ChangeLog.changes_after`,
:meth:`ChangeLog.page_after`), and keeps a stream's deferral window
(:meth:`ChangeLog.advance_window`).

Pages are bounded in rows and bytes by the rules of
:mod:`edgekv_replication.log` (:func:`~edgekv_replication.log.read_page`).
:class:`ChangeLog` is the node's :class:`~edgekv_replication.log.Log`: it
answers in SQL what :func:`~edgekv_replication.log.page_leaving_out` and
:meth:`~edgekv_replication.relays.Deferral.advance` answer in Python over a
dictionary log (the simulated network's); ``tests/test_log_twins.py`` holds
the two to the same answers on random logs. The SQL stays for speed: the
rows a stream leaves out never become Python objects.
"""

from __future__ import annotations

import sqlite3
from itertools import chain

from edgekv.store.documents import DocumentStore
from edgekv_replication.changes import Change
from edgekv_replication.documents import DOC_NS_PREFIX
from edgekv_replication.log import PAGE_BYTES, read_page
from edgekv_replication.relays import Deferral

_CHANGES_AFTER = (
    "SELECT ns, key, value, metadata, expiration, hlc, node, seq FROM kv"
    " WHERE seq > ? ORDER BY seq LIMIT ?"
)
# With documents: key-value rows, snapshots and logged Y updates in one seq order.
# A snapshot is sent as this node's change (?3), so no puller leaves it out as
# its own, with the newest write it holds as version in ``metadata``.
CHANGES_AFTER_WITH_DOCUMENTS = (
    "SELECT ns, key, value, metadata, expiration, hlc, node, seq FROM kv WHERE seq > ?1"
    " UNION ALL SELECT '" + DOC_NS_PREFIX + "' || collection, CAST(id AS BLOB), snapshot,"
    " printf('%016x%016x', snap_hlc, snap_node), NULL, snap_hlc, ?3, snap_seq"
    " FROM docs WHERE snap_seq > ?1"
    " UNION ALL SELECT '" + DOC_NS_PREFIX + "' || collection, CAST(id AS BLOB), y_update,"
    " metadata, NULL, hlc, node, seq FROM doc_log WHERE seq > ?1"
    " ORDER BY seq LIMIT ?2"
)
# One page of the log for a peer stream: rows up to the head other than those
# written by one node (they then never leave SQLite), deferred origins appended.
_PAGE_LEAVING_OUT = (
    "SELECT ns, key, value, metadata, expiration, hlc, node, seq FROM kv"
    " WHERE seq > ? AND seq <= ? AND node != ?"
)


def _uncovered(deferral: Deferral) -> str:
    """SQL: the row is a deferred origin's, stamped above its mark (bound by _mark_params)."""
    return " OR ".join("(node = ? AND hlc > ?)" for _ in deferral.marks)


def _mark_params(deferral: Deferral) -> list[int]:
    return list(chain.from_iterable(deferral.marks.items()))


def key_value_changes_after(
    reader: sqlite3.Connection, cursor: int, limit: int, max_bytes: int = PAGE_BYTES
) -> list[Change]:
    """Up to ``limit`` key-value changes with seq > ``cursor`` (no document rows), in seq order.

    What the watch fan-out process reads (:mod:`edgekv.watch.fanout_worker`):
    a key-value event comes whole from its row.
    """
    rows = reader.execute(_CHANGES_AFTER, (cursor, limit))
    try:
        return read_page(rows, max_bytes)[0]
    finally:
        rows.close()  # a page ended early leaves the statement open: end its read


class ChangeLog:
    """Pages of the change log, for peer streams and the upstream: the node's ``Log``."""

    def __init__(self, reader: sqlite3.Connection, documents: DocumentStore) -> None:
        """Read with ``reader``; ``documents`` tells whether document tables join the log."""
        self._reader = reader
        self._documents = documents

    def changes_after(self, cursor: int, limit: int, max_bytes: int = PAGE_BYTES) -> list[Change]:
        """Return up to ``limit`` changes of the local log with seq > ``cursor``.

        Key-value entries, document updates and snapshots alike, in seq
        order (a snapshot as this node's change); the page
        ends early at the change that reaches ``max_bytes``
        (:func:`read_page`).
        """
        if not self._documents.present:
            return key_value_changes_after(self._reader, cursor, limit, max_bytes)
        rows = self._reader.execute(
            CHANGES_AFTER_WITH_DOCUMENTS, (cursor, limit, self._documents.node_id)
        )
        try:
            return read_page(rows, max_bytes)[0]
        finally:
            rows.close()  # a page ended early leaves the statement open: end its read

    def page_after(
        self,
        cursor: int,
        limit: int,
        leave_out: int,
        head: int,
        deferral: Deferral | None = None,
        max_bytes: int = PAGE_BYTES,
    ) -> tuple[list[Change], int]:
        """A page of changes after ``cursor``, without ``leave_out``'s own or deferred ones.

        The SQL twin of :func:`~edgekv_replication.log.page_leaving_out`.

        Returns up to ``limit`` changes not written by node ``leave_out`` nor
        deferred by ``deferral`` (whose window it opens as
        :meth:`Deferral.split` does), ending early at the change that reaches
        ``max_bytes``, and the seq the page ends at: the last change's if the
        page is full (in rows or bytes), else ``head`` (the log's head, read
        before calling) -- a stretch of nothing but left-out rows passes in
        one page. Without documents the rows left out are filtered in SQLite,
        so they cost no Python objects; with documents a page is ``limit``
        rows of the log, filtered here.
        """
        if self._documents.present:
            changes = self.changes_after(cursor, limit, max_bytes)
            end = changes[-1].seq if changes else cursor
            changes = [c for c in changes if c.node != leave_out]
            return (deferral.split(changes) if deferral else changes), end
        origins = list(deferral.marks) if deferral else []
        sql = _PAGE_LEAVING_OUT
        if origins:
            sql += f" AND node NOT IN ({', '.join('?' * len(origins))})"
        rows = self._reader.execute(
            sql + " ORDER BY seq LIMIT ?", (cursor, head, leave_out, *origins, limit)
        )
        try:
            changes, at_budget = read_page(rows, max_bytes)
        finally:
            rows.close()
        # Ended by its budget, a page ends at its last change: later rows were not read.
        full = at_budget or len(changes) == limit
        end = changes[-1].seq if full else max(cursor, head)
        if deferral and origins and deferral.window is None:
            deferral.window = self._first_uncovered(deferral, cursor + 1, end)
        return changes, end

    def advance_window(self, deferral: Deferral, upto: int) -> None:
        """Move ``deferral``'s window past what its marks cover, up to ``upto`` (sent so far).

        The SQL twin of :meth:`Deferral.advance` (and, from the page's first
        row, of :meth:`Deferral.first_uncovered`); it reads the key-value rows
        only, as document changes are never deferred.
        """
        if deferral.window is not None:
            deferral.window = self._first_uncovered(deferral, deferral.window, upto)

    def _first_uncovered(self, deferral: Deferral, first: int, last: int) -> int | None:
        sql = f"SELECT min(seq) FROM kv WHERE seq >= ? AND seq <= ? AND ({_uncovered(deferral)})"
        found = self._reader.execute(sql, (first, last, *_mark_params(deferral))).fetchone()[0]
        return None if found is None else int(found)
