"""Key-value entries: last-writer-wins rows of ``kv``, read through a cache, written by stamp.

Reads (:meth:`KeyValues.get`, :meth:`KeyValues.list_keys`) run on the
caller's thread through the read connection and the read cache; writes
(:meth:`KeyValues.write`) are ops of the group-commit writer. The same
last-writer-wins upsert (:data:`UPSERT`) merges remote changes
(:mod:`edgekv.store.merge`).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from edgekv.store.cache import MISS, ReadCache
from edgekv.store.writer import Txn, Writer

# The row as stored, tombstone or expired alike: what the read cache remembers.
_GET = "SELECT value, metadata, expiration, hlc, node, seq FROM kv WHERE ns = ? AND key = ?"
# length() of a BLOB reads the record header only, not the value's overflow pages.
_VALUE_SIZE = "SELECT length(value), expiration FROM kv WHERE ns = ? AND key = ?"
_LIST = (
    "SELECT key, expiration, metadata FROM kv"
    " WHERE ns = ? AND key {op} ? AND key < ? AND value IS NOT NULL"
    " AND (expiration IS NULL OR expiration > ?)"
    " ORDER BY key LIMIT ?"
)
_LIST_FROM = _LIST.format(op=">=")
_LIST_AFTER = _LIST.format(op=">")
# Last writer wins by (hlc, node); the row takes the next seq only when it changes.
UPSERT = (
    "INSERT INTO kv (seq, ns, key, value, metadata, expiration, hlc, node)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET seq = excluded.seq, value = excluded.value,"
    " metadata = excluded.metadata, expiration = excluded.expiration,"
    " hlc = excluded.hlc, node = excluded.node"
    " WHERE (excluded.hlc, excluded.node) > (kv.hlc, kv.node)"
)
_LIVE_COUNT = "SELECT count(*) FROM kv WHERE value IS NOT NULL"
# Larger values are read from SQLite each time rather than held in memory.
CACHED_VALUE_BYTES = 64 * 1024
# Above every key: keys are at most a few KiB, and no UTF-8 byte is 0xff.
_KEY_CEILING = b"\xff" * 8192


class Entry(NamedTuple):
    """A live entry as read."""

    value: bytes
    metadata: str | None
    expiration: int | None
    hlc: int
    node: int
    seq: int


class ListedKey(NamedTuple):
    """One key of a list page."""

    key: bytes
    expiration: int | None
    metadata: str | None


@dataclass(frozen=True, slots=True)
class Write:
    """One put (``value`` not None) or delete inside a write request."""

    key: bytes
    value: bytes | None
    metadata: str | None = None
    expiration: int | None = None


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Where a committed write landed: its stamp and the change-log seq."""

    hlc: int
    node: int
    seq: int


def prefix_upper_bound(prefix: bytes) -> bytes:
    """Return the smallest byte string greater than every string starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return _KEY_CEILING
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


class KeyValues:
    """The ``kv`` rows of one node: reads through the cache, writes through the writer."""

    def __init__(
        self, reader: sqlite3.Connection, writer: Writer, cache: ReadCache[Entry], node_id: int
    ) -> None:
        """Read with ``reader`` (through ``cache``), write with ``writer`` as ``node_id``."""
        self._reader = reader
        self.writer = writer
        self.cache = cache
        self.node_id = node_id

    def get(self, ns: str, key: bytes, now: float | None = None) -> Entry | None:
        """Return the live entry at ``(ns, key)``, or None if absent, deleted or expired."""
        slot = (ns, key)
        entry = self.cache.lookup(slot)
        if entry is MISS:
            generation = self.cache.generation
            row = self._reader.execute(_GET, slot).fetchone()
            entry = Entry(*row) if row and row[0] is not None else None
            if entry is None or len(entry.value) <= CACHED_VALUE_BYTES:
                self.cache.fill(slot, entry, generation)
        if entry is None:
            return None
        assert isinstance(entry, Entry)
        if entry.expiration is not None and entry.expiration <= (
            time.time() if now is None else now
        ):
            return None
        return entry

    def peek(self, ns: str, key: bytes) -> Entry | None:
        """The stored entry at ``(ns, key)`` (None if absent or deleted; expiration not
        applied), read from SQLite without filling the read cache: for lookups by keys an
        unauthenticated caller chooses (a presented token's hash), which must not evict
        the entries clients read."""
        row = self._reader.execute(_GET, (ns, key)).fetchone()
        return Entry(*row) if row and row[0] is not None else None

    def value_size(self, ns: str, key: bytes, now: float | None = None) -> int | None:
        """Return the size in bytes of the live value at ``(ns, key)`` without reading it.

        None if absent, deleted or expired. Lets a reader decide whether a value
        fits its budget before bringing 25 MiB into memory.
        """
        entry = self.cache.lookup((ns, key))
        if entry is MISS:
            row = self._reader.execute(_VALUE_SIZE, (ns, key)).fetchone()
            if row is None or row[0] is None:
                return None
            size, expiration = row
        elif entry is None:
            return None
        else:
            assert isinstance(entry, Entry)
            size, expiration = len(entry.value), entry.expiration
        if expiration is not None and expiration <= (time.time() if now is None else now):
            return None
        return int(size)

    def list_keys(
        self,
        ns: str,
        prefix: bytes = b"",
        after: bytes | None = None,
        limit: int = 1000,
        now: float | None = None,
    ) -> list[ListedKey]:
        """Return up to ``limit`` live keys of ``ns`` starting with ``prefix``, in byte order.

        ``after`` resumes a listing after that key; because it names a key rather
        than a position, it stays valid while others write.
        """
        if after is not None and after >= prefix:
            sql, low = _LIST_AFTER, after
        else:
            sql, low = _LIST_FROM, prefix
        at = time.time() if now is None else now
        rows = self._reader.execute(
            sql, (ns, low, prefix_upper_bound(prefix), at, limit)
        ).fetchall()
        return [ListedKey(*row) for row in rows]

    # -- writes: queued to the writer, acknowledged after commit ---------------

    def write(self, ns: str, writes: Sequence[Write]) -> asyncio.Future[WriteResult]:
        """Apply ``writes`` atomically with fresh stamps; resolves after the commit."""

        def op(txn: Txn) -> WriteResult:
            result = WriteResult(0, self.node_id, txn.seq)
            for write in writes:
                hlc = txn.clock.now()
                cursor = txn.conn.execute(
                    UPSERT,
                    (
                        txn.next_seq(),
                        ns,
                        write.key,
                        write.value,
                        write.metadata,
                        write.expiration,
                        hlc,
                        self.node_id,
                    ),
                )
                if cursor.rowcount:
                    result = WriteResult(hlc, self.node_id, txn.take_seq())
                    txn.touched.append((ns, write.key))
            return result

        return self.writer.submit(op, single_statement=len(writes) == 1)

    def write_value(self, ns: str, key: bytes, value: bytes) -> asyncio.Future[WriteResult]:
        """Put one value (no metadata, no expiration)."""
        return self.write(ns, [Write(key, value)])

    def live_count(self) -> int:
        """How many keys hold a value (tombstones and expired values not yet collected count)."""
        return int(self._reader.execute(_LIVE_COUNT).fetchone()[0])
