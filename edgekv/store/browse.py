"""Read-only views for the operator console: namespaces, collections, recent changes.

Every query here is bounded: the namespace and collection lists by a row
limit, the recent-changes page by the rows it may examine (``scan_rows``), so
a filter that matches nothing costs one bounded index walk, never a scan of
the whole log. The scan never reads a value, and a page reads the rows it
answers within a byte budget: a 25 MiB value costs a preview, not a copy.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edgekv.store.kv import prefix_upper_bound

# Counters' and sets' rows ("@ctr:", "@set:") are no namespace's keys.
# A row's expiration is stored after its value (see _RECENT below): reading it
# for a large value would walk the value's pages, so a row whose value exceeds
# EXPIRY_CHECKED_BYTES is counted without it (live until purged). The OR stops
# at the first true term, and a NULL and length() are read from the row's header.
_NAMESPACES = (
    "SELECT ns, count(*) FROM kv WHERE value IS NOT NULL AND substr(ns, 1, 1) != '@'"
    " AND (expiration IS NULL OR length(value) > ? OR expiration > ?)"
    " GROUP BY ns ORDER BY ns LIMIT ?"
)
EXPIRY_CHECKED_BYTES = 16 * 1024
"""Largest value whose row's expiration the namespace counts check."""
_COLLECTIONS = (
    "SELECT collection, count(*) FROM docs WHERE json IS NOT NULL"
    " GROUP BY collection ORDER BY collection LIMIT ?"
)
# '.' and '..' are refused as names (edgekv_replication.intake.NAMESPACE) but an
# older release took them; two index seeks each, so the check at start costs nothing.
_DOT_NAMES = ("..", "."), ("@ctr:.", "@ctr:.."), ("@set:.", "@set:..")
_DOT_KV = "SELECT DISTINCT ns FROM kv WHERE ns IN (?, ?, ?, ?, ?, ?)"
_DOT_DOCS = "SELECT DISTINCT collection FROM docs WHERE collection IN ('.', '..')"
# SQLite stores a row's columns in order, a large value in a chain of overflow
# pages: reading a column stored after ``value`` (metadata, expiration, hlc,
# node) walks the whole chain, while length() reads the row's header only. So
# the scan reads seq, ns, key and length(value); only the rows answered are read
# whole, within a byte budget, and their previews through incremental blob I/O.
_SCAN_FLOOR = "SELECT seq FROM kv WHERE seq < ? ORDER BY seq DESC LIMIT 1 OFFSET ?"
# The unary "+" keeps the plan a walk of the seq range (the rows scanned), never
# a walk of a namespace's index entries however many keys it holds.
_RECENT = (
    "SELECT seq, ns, key, length(value) FROM kv WHERE seq < ? AND seq >= ?{where}"
    " ORDER BY seq DESC LIMIT ?"
)
_DETAIL = "SELECT metadata, expiration, hlc, node FROM kv WHERE seq = ?"

DETAIL_BYTES = 32 * 1024 * 1024
"""Most bytes of values one page of recent changes reads past to read its rows (see above)."""


@dataclass(frozen=True, slots=True)
class RecentChange:
    """One row of the key-value log, its value cut to a preview."""

    seq: int
    ns: str
    key: bytes
    preview: bytes | None
    """The value's first bytes; None for a delete (a tombstone)."""
    value_bytes: int | None
    metadata: str | None
    expiration: int | None
    hlc: int
    node: int


class Browse:
    """Bounded read-only queries for the console, on the node's read connection."""

    def __init__(self, reader: sqlite3.Connection) -> None:
        self._reader = reader

    def namespaces(self, now: float, limit: int) -> list[tuple[str, int]]:
        """Namespaces holding live keys at ``now``, with their counts, in name order.

        A key whose value exceeds :data:`EXPIRY_CHECKED_BYTES` counts until
        its expired row is purged, so the scan reads no large value.
        """
        rows = self._reader.execute(_NAMESPACES, (EXPIRY_CHECKED_BYTES, now, limit)).fetchall()
        return [(str(ns), int(count)) for ns, count in rows]

    def collections(self, limit: int) -> list[tuple[str, int]]:
        """Document collections with their live documents' counts, in name order."""
        rows = self._reader.execute(_COLLECTIONS, (limit,)).fetchall()
        return [(str(name), int(count)) for name, count in rows]

    def dot_names(self) -> list[str]:
        """Namespaces (``@ctr:``/``@set:`` ones too) and collections (``@doc:``) named
        ``.`` or ``..`` that this database holds: written before they were refused."""
        kv = self._reader.execute(_DOT_KV, [name for pair in _DOT_NAMES for name in pair])
        docs = self._reader.execute(_DOT_DOCS)
        return sorted([str(ns) for (ns,) in kv] + [f"@doc:{name}" for (name,) in docs])

    def recent_changes(
        self,
        before: int,
        limit: int,
        ns: str | None,
        prefix: bytes,
        preview_bytes: int,
        scan_rows: int,
        detail_bytes: int = DETAIL_BYTES,
    ) -> tuple[list[RecentChange], int]:
        """The newest key-value changes with seq < ``before``, newest first.

        Only rows of ``ns`` (when given) whose key starts with ``prefix`` are
        answered, at most ``limit``, among the ``scan_rows`` newest rows below
        ``before``, and only as many as ``detail_bytes`` of their values allow
        (always one). Returns them and the seq to pass as ``before`` for the
        next page (0 when the log holds nothing older).
        """
        where = ""
        params: list[str | bytes] = []
        if ns is not None:
            where += " AND +ns = ?"
            params.append(ns)
        if prefix:
            where += " AND +key >= ? AND +key < ?"
            params.extend([prefix, prefix_upper_bound(prefix)])
        reader = self._reader
        floor_row = reader.execute(_SCAN_FLOOR, (before, scan_rows - 1)).fetchone()
        floor = 0 if floor_row is None else int(floor_row[0])
        found = reader.execute(
            _RECENT.format(where=where), (before, floor, *params, limit)
        ).fetchall()
        changes: list[RecentChange] = []
        read = 0
        for index, (seq, row_ns, key, value_bytes) in enumerate(found):
            read += value_bytes or 0
            if index and read > detail_bytes:  # the budget is spent: the next page goes on
                return changes, int(found[index - 1][0])
            change = self._change(seq, row_ns, key, value_bytes, preview_bytes)
            if change is not None:
                changes.append(change)
        if len(found) == limit:
            return changes, int(found[-1][0])
        # Fewer rows than asked: the scan's floor was reached (0: the log's start).
        return changes, floor

    def _change(
        self, seq: int, ns: str, key: bytes, value_bytes: int | None, preview_bytes: int
    ) -> RecentChange | None:
        """Row ``seq`` with its value's first bytes, or None once a newer change replaced it."""
        detail = self._reader.execute(_DETAIL, (seq,)).fetchone()
        if detail is None:
            return None  # superseded since the scan: the newer change has a higher seq
        preview = None
        if value_bytes is not None:
            try:
                with self._reader.blobopen("kv", "value", seq, readonly=True) as blob:
                    preview = blob.read(preview_bytes)
            except sqlite3.OperationalError:  # "no such rowid": superseded just now
                return None
        metadata, expiration, hlc, node = detail
        return RecentChange(seq, ns, key, preview, value_bytes, metadata, expiration, hlc, node)
