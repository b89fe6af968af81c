"""In-process reads of a PoP's own database, for edge functions on the node's host.

:class:`LocalReader` opens the node's SQLite file read-only and answers get
and list exactly as the HTTP API does (expired and deleted keys are absent,
keys list in byte order), in microseconds and without a network hop. It reads
through the view ``kv_v1``, a documented and versioned interface: a schema
migration of the node keeps that view's columns, so a reader is never broken
silently -- if the view is missing it says so at once.

``kv_v1`` columns: ``ns`` TEXT, ``key`` BLOB (UTF-8), ``value`` BLOB,
``metadata`` TEXT (JSON object or NULL), ``expiration`` INTEGER (epoch
seconds or NULL), ``hlc`` INTEGER, ``node`` INTEGER, ``seq`` INTEGER; live
rows only (tombstones are left out; expired rows are not, filter on
``expiration``).

``LocalReader(data_dir, cache_size=N)`` adds a hot-key cache of up to N keys,
kept exact by a change check before every read (see :meth:`LocalReader.get`).
"""

from __future__ import annotations

import builtins
import contextlib
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from edgekv_client._core import Entry
from edgekv_client._wal_header import open_header
from edgekv_client.errors import EdgeKVError
from edgekv_replication import counters, orsets
from edgekv_replication.versions import encode_version

VIEW = "kv_v1"
DB_FILENAME = "edgekv.db"

# The key is bound as TEXT and cast to the column's BLOB (its UTF-8 bytes, the database
# being UTF-8): Python's sqlite3 binds str on a fast path but sends bytes through its
# adapter lookup, which cost 0.4 us of a 3 us read. The plan is the same single seek of
# the (ns, key) index. The expiration is compared in Python, and the clock read only for
# a row that has one.
_GET = (
    f"SELECT value, metadata, expiration, hlc, node FROM {VIEW}"
    " WHERE ns = ? AND key = CAST(? AS BLOB)"
)
_GET_VALUE = f"SELECT value, expiration FROM {VIEW} WHERE ns = ? AND key = CAST(? AS BLOB)"
_LIST = (
    f"SELECT key, expiration, metadata FROM {VIEW}"
    " WHERE ns = ? AND key {op} ? AND (expiration IS NULL OR expiration > ?)"
    " ORDER BY key LIMIT ?"
)
_LIST_FROM, _LIST_AFTER = _LIST.format(op=">="), _LIST.format(op=">")
# A counter's or a set's rows (edgekv_replication.counters, .orsets), in key order.
_ROWS = (
    f"SELECT key, value, expiration, hlc, node FROM {VIEW}"
    " WHERE ns = ? AND key >= ? AND key < ? ORDER BY key"
)


class IncompatibleStore(EdgeKVError):
    """The database is not an EdgeKV store this reader understands."""


# A cached read: (value, expiration); (None, None) for an absent, deleted key.
_Cached = tuple[bytes | None, int | None]
_ABSENT: _Cached = (None, None)


class LocalReader:
    """Read-only, in-process access to a node's data directory.

    >>> reader = LocalReader("./edgekv-data")  # doctest: +SKIP
    >>> reader.get("flags", "beta")  # doctest: +SKIP
    b'on'
    """

    def __init__(self, data_dir: str | Path, cache_size: int = 0) -> None:
        """Open the node database in ``data_dir`` read-only.

        ``cache_size`` > 0 keeps the results of up to that many :meth:`get`
        calls in this process, checked against the database before each read.
        """
        if cache_size < 0:
            raise ValueError("cache_size must be 0 (no cache) or more")
        path = Path(data_dir) / DB_FILENAME
        if not path.exists():
            raise IncompatibleStore(f"no EdgeKV database at {path}")
        path = path.resolve()
        self._conn = sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, check_same_thread=False)
        try:
            found = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'view' AND name = ?", (VIEW,)
            ).fetchone()
            if not found:
                raise IncompatibleStore(
                    f"{path} has no view {VIEW}: the node is older than this client "
                    "(start it once with a current EdgeKV to migrate)"
                )
            encoding = self._conn.execute("PRAGMA encoding").fetchone()[0]
            if encoding != "UTF-8":
                raise IncompatibleStore(f"{path} is encoded in {encoding}, not UTF-8")
            # After that first read the connection holds the -shm file open (see _wal_header).
            self._header = open_header(self._conn, path) if cache_size else None
        except BaseException:
            self._conn.close()
            raise
        self._cache_size = cache_size
        # (marker, entries): replaced whole when the marker moves, so a read that raced
        # with the change fills the abandoned dict, never the current one.
        self._cache: tuple[object, dict[tuple[str, str], _Cached]] = (None, {})

    def __enter__(self) -> LocalReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the database."""
        if self._header is not None:
            self._header.close()
        self._conn.close()

    def get(self, namespace: str, key: str) -> bytes | None:
        """The value at ``key``, or None if absent, deleted or expired.

        With a cache, a cached answer is used only while the database is
        unchanged since it was read: the WAL-index header compared (about
        0.1 us), or ``PRAGMA data_version`` where that is not available.
        """
        if self._cache_size:
            value, expiration = self._cached(namespace, key)
        else:
            row = self._conn.execute(_GET_VALUE, (namespace, key)).fetchone()
            if row is None:
                return None
            value, expiration = row
        if expiration is not None and expiration <= time.time():
            return None
        return value

    def _cached(self, namespace: str, key: str) -> _Cached:
        # The marker is read before the row: a commit in between leaves a newer row
        # under an older marker, which the next call's marker discards.
        marker = self._header.marker() if self._header is not None else self.change_marker()
        cached_marker, entries = self._cache
        if marker != cached_marker:
            entries = {}
            self._cache = (marker, entries)
        found = entries.get((namespace, key))
        if found is not None:
            return found
        row = self._conn.execute(_GET_VALUE, (namespace, key)).fetchone()
        found = _ABSENT if row is None else (row[0], row[1])
        if len(entries) >= self._cache_size:
            # Oldest first. Another thread may empty or change the dict meanwhile.
            with contextlib.suppress(KeyError, RuntimeError, StopIteration):
                del entries[next(iter(entries))]
        entries[namespace, key] = found
        return found

    def get_with_metadata(self, namespace: str, key: str) -> Entry | None:
        """The entry at ``key`` with metadata, expiration and version, or None."""
        row = self._conn.execute(_GET, (namespace, key)).fetchone()
        if row is None:
            return None
        value, metadata, expiration, hlc, node = row
        if expiration is not None and expiration <= time.time():
            return None
        return Entry(
            value, json.loads(metadata) if metadata else None, expiration, encode_version(hlc, node)
        )

    def change_marker(self) -> int:
        """A marker of the database's state now, for :meth:`changed_since` (about 1 us).

        SQLite's ``PRAGMA data_version``: it moves whenever the node commits.
        """
        return int(self._conn.execute("PRAGMA data_version").fetchone()[0])

    def changed_since(self, marker: int) -> bool:
        """Whether the node has committed anything since ``marker`` (from :meth:`change_marker`).

        Cheap and conservative, for an in-process cache that invalidates
        itself: False means nothing changed; True means the node committed
        something -- a write of any namespace, or its replication bookkeeping
        -- so read again (or take a new marker and compare values).
        """
        return self.change_marker() != marker

    def list(
        self, namespace: str, prefix: str = "", page_size: int = 1000
    ) -> Iterator[dict[str, object]]:
        """Every live key under ``prefix`` in byte order: ``{"name", "expiration", "metadata"}``."""
        start = prefix.encode()
        sql, bound = _LIST_FROM, start
        while True:
            rows = self._conn.execute(sql, (namespace, bound, time.time(), page_size)).fetchall()
            for key, expiration, metadata in rows:
                if not key.startswith(start):
                    return
                yield {
                    "name": key.decode("utf-8"),
                    "expiration": expiration,
                    "metadata": json.loads(metadata) if metadata else None,
                }
            if len(rows) < page_size:
                return
            sql, bound = _LIST_AFTER, rows[-1][0]

    def counter(self, namespace: str, key: str) -> int:
        """The counter's value as this PoP holds it (0 if never written), as HTTP GET."""
        low, high = counters.rows_range(key.encode())
        rows = self._conn.execute(_ROWS, (counters.counter_ns(namespace), low, high)).fetchall()
        found = [
            counters.Contribution(
                counters.split_row_key(raw)[1], counters.decode_row(value), hlc, expiration
            )
            for raw, value, expiration, hlc, _ in rows
        ]
        return counters.value_of(found, time.time())

    def set_members(self, namespace: str, key: str, prefix: str = "") -> builtins.list[str]:
        """The set's members (starting with ``prefix``), sorted by their UTF-8 bytes."""
        low, high = orsets.rows_range(key.encode(), prefix)
        rows = self._conn.execute(_ROWS, (orsets.set_ns(namespace), low, high)).fetchall()
        member_rows = []
        for raw, value, _, hlc, _ in rows:
            _, member, node = orsets.split_row_key(raw)
            member_rows.append(orsets.MemberRow(member, node, orsets.decode_row(value), hlc))
        return list(orsets.members_of(member_rows))
