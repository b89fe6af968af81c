"""What watches read: changes of one namespace or collection, by seq or by key.

A watch (``edgekv.watch``) reads the log three ways besides the shared live
tail (:meth:`~edgekv.store.changelog.ChangeLog.changes_after`):

* *after a seq* (a resume at the node that issued the token, or the stretch
  between a catch-up and the live tail): :meth:`WatchReads.kv_after`,
  :meth:`WatchReads.docs_after`;
* *by key, up to a seq* (a snapshot, or a resume at another node):
  :meth:`WatchReads.kv_scan`, :meth:`WatchReads.docs_scan`. Rows above the
  seq are left to the tail, so each key's state comes once;
* what tombstone collection removed, per origin (:meth:`WatchReads.collected`).

Every read is one page (rows and bytes bounded by the caller).
"""

from __future__ import annotations

import sqlite3

from edgekv.store.kv import prefix_upper_bound
from edgekv_replication.changes import Change
from edgekv_replication.log import read_page

_KV_COLUMNS = "ns, key, value, metadata, expiration, hlc, node, seq"
_KV_AFTER = (
    f"SELECT {_KV_COLUMNS} FROM kv WHERE seq > ? AND seq <= ? AND ns = ? AND key >= ? AND key < ?"
    " ORDER BY seq LIMIT ?"
)
_KV_SCAN = (
    f"SELECT {_KV_COLUMNS} FROM kv WHERE ns = ? AND key {{op}} ? AND key < ? AND seq <= ?"
    " ORDER BY key LIMIT ?"
)
_KV_SCAN_FROM = _KV_SCAN.format(op=">=")
_KV_SCAN_AFTER = _KV_SCAN.format(op=">")
_DOCS_AFTER = (
    "SELECT id, max(seq) AS at FROM ("
    " SELECT id, seq FROM doc_log WHERE collection = ?1 AND seq > ?2 AND seq <= ?3"
    " UNION ALL SELECT id, snap_seq FROM docs"
    " WHERE collection = ?1 AND snap_seq > ?2 AND snap_seq <= ?3)"
    " GROUP BY id ORDER BY at LIMIT ?4"
)
_DOCS_SCAN = (
    "SELECT id, json, hlc, node FROM docs WHERE collection = ? AND id > ? ORDER BY id LIMIT ?"
)
_DOC_STATE = "SELECT json, hlc, node FROM docs WHERE collection = ? AND id = ?"
_DOC_ORIGINS = "SELECT node, max(hlc) FROM doc_log WHERE collection = ? AND id = ? GROUP BY node"


class WatchReads:
    """Pages of one namespace's or collection's changes, for watches."""

    def __init__(self, reader: sqlite3.Connection) -> None:
        """Read with ``reader`` (the event loop's read connection)."""
        self._reader = reader

    def kv_after(
        self, ns: str, prefix: bytes, cursor: int, upto: int, limit: int, max_bytes: int
    ) -> tuple[list[Change], bool]:
        """Rows of ``ns`` under ``prefix`` with ``cursor`` < seq <= ``upto``, in seq order.

        Tombstones and expired rows included. Returns the page and whether it
        is full (in rows or bytes): then more may follow its last seq.
        """
        rows = self._reader.execute(
            _KV_AFTER, (cursor, upto, ns, prefix, prefix_upper_bound(prefix), limit)
        )
        try:
            changes, at_budget = read_page(rows, max_bytes)
        finally:
            rows.close()
        return changes, at_budget or len(changes) == limit

    def kv_scan(
        self, ns: str, prefix: bytes, after: bytes | None, upto: int, limit: int, max_bytes: int
    ) -> tuple[list[Change], bool]:
        """Rows of ``ns`` under ``prefix`` past key ``after`` with seq <= ``upto``, by key.

        Returns the page and whether more may follow its last key.
        """
        sql, low = (_KV_SCAN_FROM, prefix) if after is None else (_KV_SCAN_AFTER, after)
        rows = self._reader.execute(sql, (ns, low, prefix_upper_bound(prefix), upto, limit))
        try:
            changes, at_budget = read_page(rows, max_bytes)
        finally:
            rows.close()
        return changes, at_budget or len(changes) == limit

    def docs_after(
        self, collection: str, cursor: int, upto: int, limit: int
    ) -> list[tuple[str, int]]:
        """Documents of ``collection`` changed with ``cursor`` < seq <= ``upto``: (id, seq).

        Each once, at its newest change in the stretch, in that order.
        """
        rows = self._reader.execute(_DOCS_AFTER, (collection, cursor, upto, limit))
        return [(str(doc_id), int(at)) for doc_id, at in rows]

    def docs_scan(
        self, collection: str, after: str, limit: int
    ) -> list[tuple[str, str | None, int, int]]:
        """Documents of ``collection`` past id ``after``, by id: (id, json or None, hlc, node)."""
        return [
            (str(i), j, int(h), int(n))
            for i, j, h, n in self._reader.execute(_DOCS_SCAN, (collection, after, limit))
        ]

    def doc_state(self, collection: str, doc_id: str) -> tuple[str | None, int, int] | None:
        """A document's JSON (None: deleted) and version, or None if it never existed here."""
        row = self._reader.execute(_DOC_STATE, (collection, doc_id)).fetchone()
        return None if row is None else (row[0], int(row[1]), int(row[2]))

    def doc_origins(self, collection: str, doc_id: str) -> dict[int, int]:
        """Origin -> newest stamp of the updates in a document's log (not yet compacted)."""
        return {
            int(node): int(hlc)
            for node, hlc in self._reader.execute(_DOC_ORIGINS, (collection, doc_id))
        }

    def collected(self) -> dict[int, int]:
        """Origin -> the newest stamp of its rows that tombstone collection deleted."""
        rows = self._reader.execute("SELECT node, hlc FROM collected_origins")
        return {int(node): int(hlc) for node, hlc in rows}

    def held_floor(self) -> int | None:
        """The oldest stamp among changes held back for clock skew (None: none held)."""
        found = self._reader.execute("SELECT min(hlc) FROM held_changes").fetchone()[0]
        return None if found is None else int(found)
