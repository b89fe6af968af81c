"""Read-only views for the operator console: namespaces, collections, recent changes.

Every query here is bounded: the namespace and collection lists by a row
limit, the recent-changes page by the rows it may examine (``scan_rows``), so
a filter that matches nothing costs one bounded index walk, never a scan of
the whole log. Values leave SQLite truncated (``substr``): a 25 MiB value
costs a preview, not a copy.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from edgekv.store.kv import prefix_upper_bound

# Counters' and sets' rows ("@ctr:", "@set:") are no namespace's keys.
_NAMESPACES = (
    "SELECT ns, count(*) FROM kv WHERE value IS NOT NULL AND substr(ns, 1, 1) != '@'"
    " AND (expiration IS NULL OR expiration > ?) GROUP BY ns ORDER BY ns LIMIT ?"
)
_COLLECTIONS = (
    "SELECT collection, count(*) FROM docs WHERE json IS NOT NULL"
    " GROUP BY collection ORDER BY collection LIMIT ?"
)
# The newest ``scan_rows`` rows of the log below ``before``, then the filter: the
# inner LIMIT bounds the work whatever the filter matches.
_RECENT = (
    "SELECT seq, ns, key, substr(value, 1, ?), length(value), metadata, expiration, hlc, node"
    " FROM (SELECT * FROM kv WHERE seq < ? ORDER BY seq DESC LIMIT ?)"
    " WHERE {where} ORDER BY seq DESC LIMIT ?"
)
_SCANNED = (
    "SELECT min(seq), count(*) FROM (SELECT seq FROM kv WHERE seq < ? ORDER BY seq DESC LIMIT ?)"
)


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
        """Namespaces holding live keys at ``now``, with their counts, in name order."""
        rows = self._reader.execute(_NAMESPACES, (now, limit)).fetchall()
        return [(str(ns), int(count)) for ns, count in rows]

    def collections(self, limit: int) -> list[tuple[str, int]]:
        """Document collections with their live documents' counts, in name order."""
        rows = self._reader.execute(_COLLECTIONS, (limit,)).fetchall()
        return [(str(name), int(count)) for name, count in rows]

    def recent_changes(
        self,
        before: int,
        limit: int,
        ns: str | None,
        prefix: bytes,
        preview_bytes: int,
        scan_rows: int,
    ) -> tuple[list[RecentChange], int]:
        """The newest key-value changes with seq < ``before``, newest first.

        Only rows of ``ns`` (when given) whose key starts with ``prefix`` are
        answered, at most ``limit``, among the ``scan_rows`` newest rows below
        ``before``. Returns them and the seq to pass as ``before`` for the next
        page (0 when the log holds nothing older).
        """
        where: list[str] = ["1"]
        params: list[str | bytes] = []
        if ns is not None:
            where.append("ns = ?")
            params.append(ns)
        if prefix:
            where.append("key >= ? AND key < ?")
            params.extend([prefix, prefix_upper_bound(prefix)])
        sql = _RECENT.format(where=" AND ".join(where))
        rows = self._reader.execute(
            sql, (preview_bytes, before, scan_rows, *params, limit)
        ).fetchall()
        changes = [RecentChange(*row) for row in rows]
        if len(changes) == limit:
            return changes, changes[-1].seq
        lowest, scanned = self._reader.execute(_SCANNED, (before, scan_rows)).fetchone()
        # Fewer rows than the scan allows: the log's start was reached.
        return changes, int(lowest) if scanned == scan_rows else 0
