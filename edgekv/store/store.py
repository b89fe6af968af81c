"""A node's SQLite store: last-writer-wins entries, tombstones and the change log.

Reads run on the caller's thread through a read-only connection; in WAL mode
they never wait for the writer. Writes go through the single group-commit
:class:`~edgekv.store.writer.Writer`, which also owns the hybrid logical clock.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import sqlite3
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from operator import add, itemgetter, methodcaller
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

from edgekv.documents.storage import DocumentStore
from edgekv.store.cache import MISS, ReadCache
from edgekv.store.datadir import DataDirError, DataDirLock, refuse_emptied_database
from edgekv.store.faults import StorageHealth, is_corruption
from edgekv.store.paging import PAGE_BYTES, read_page
from edgekv.store.schema import migrate
from edgekv.store.writer import Txn, Writer
from edgekv_replication import HybridLogicalClock, new_node_id
from edgekv_replication.changes import Change
from edgekv_replication.documents import DOC_NS_PREFIX, is_document
from edgekv_replication.hlc import COUNTER_BITS
from edgekv_replication.peer_clocks import PeerClocks
from edgekv_replication.relays import OriginMarks
from edgekv_replication.session import Deferral, PeerCursor, is_too_far_ahead

DB_FILENAME = "edgekv.db"
T = TypeVar("T")
log = logging.getLogger(__name__)

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
_UPSERT = (
    "INSERT INTO kv (seq, ns, key, value, metadata, expiration, hlc, node)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (ns, key) DO UPDATE SET seq = excluded.seq, value = excluded.value,"
    " metadata = excluded.metadata, expiration = excluded.expiration,"
    " hlc = excluded.hlc, node = excluded.node"
    " WHERE (excluded.hlc, excluded.node) > (kv.hlc, kv.node)"
)
_CHANGES_AFTER = (
    "SELECT ns, key, value, metadata, expiration, hlc, node, seq FROM kv"
    " WHERE seq > ? ORDER BY seq LIMIT ?"
)
# The same upsert, its parameters a Change as it is (?8, the sender's seq, unused)
# followed by the local seq: remote changes are bound without building new tuples.
_UPSERT_CHANGE = _UPSERT.replace(
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)", "VALUES (?9, ?1, ?2, ?3, ?4, ?5, ?6, ?7)"
)
# Test only (``test_broken_merge``): a remote change never replaces a local entry.
_KEEP_LOCAL_CHANGE = _UPSERT_CHANGE.split(" ON CONFLICT")[0] + " ON CONFLICT (ns, key) DO NOTHING"
# One page of the log for a peer stream: rows up to the head other than those
# written by one node (they then never leave SQLite), deferred origins appended.
_PAGE_LEAVING_OUT = (
    "SELECT ns, key, value, metadata, expiration, hlc, node, seq FROM kv"
    " WHERE seq > ? AND seq <= ? AND node != ?"
)
_SAVE_CURSOR = (
    "INSERT INTO peer_cursors (peer, incarnation, cursor, updated_ms) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (peer) DO UPDATE SET incarnation = excluded.incarnation,"
    " cursor = excluded.cursor, updated_ms = excluded.updated_ms"
)
_HOLD = (
    "INSERT INTO held_changes (ns, key, value, metadata, expiration, hlc, node)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)
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
class ApplyResult:
    """What applying a batch of remote changes did."""

    applied: int
    held: int
    seq: int
    """The newest seq once applied."""
    first_seq: int = 0
    """The seq before: what this batch took, if anything, lies in ``(first_seq, seq]``."""


@dataclass(frozen=True, slots=True)
class WriteResult:
    """Where a committed write landed: its stamp and the change-log seq."""

    hlc: int
    node: int
    seq: int


class NodeIdentity(NamedTuple):
    """The identity a database is created with."""

    node_id: int
    incarnation: int
    created_ms: int


_hlc = itemgetter(5)  # Change.hlc, without the attribute lookup
_ns = itemgetter(0)
_is_document_ns = methodcaller("startswith", DOC_NS_PREFIX)
_new_change = tuple.__new__
_as_change = functools.partial(_new_change, Change)
"""A row of ``kv`` (its columns in Change order) as a Change, built in C."""


_ROW_PARAMS = 9
"""Parameters per row of ``_UPSERT_CHANGE``: a Change's eight fields, then the local seq."""
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


def _uncovered(deferral: Deferral) -> str:
    """SQL: the row is a deferred origin's, stamped above its mark (bound by _mark_params)."""
    return " OR ".join("(node = ? AND hlc > ?)" for _ in deferral.marks)


def _mark_params(deferral: Deferral) -> list[int]:
    return list(chain.from_iterable(deferral.marks.items()))


class CursorMoved(RuntimeError):
    """A batch's transaction found the peer's cursor elsewhere than it continues from."""


def _check_cursor(conn: sqlite3.Connection, peer: int, after: PeerCursor) -> None:
    row = conn.execute(
        "SELECT incarnation, cursor FROM peer_cursors WHERE peer = ?", (peer,)
    ).fetchone()
    # Another incarnation's log (or none yet) is read from zero.
    saved = row[1] if row and row[0] == after.incarnation else 0
    if saved != after.cursor:
        raise CursorMoved(
            f"cursor of peer {peer:x} is at {saved}, the batch continues from {after.cursor}"
        )


def prefix_upper_bound(prefix: bytes) -> bytes:
    """Return the smallest byte string greater than every string starting with ``prefix``."""
    trimmed = prefix.rstrip(b"\xff")
    if not trimmed:
        return _KEY_CEILING
    return trimmed[:-1] + bytes([trimmed[-1] + 1])


def _connect(path: Path, synchronous: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {synchronous.upper()}")
    conn.execute("PRAGMA busy_timeout = 5000")
    return conn


def _after_unclean_shutdown(
    conn: sqlite3.Connection, hlc: int, max_clock_offset_ms: int
) -> tuple[int, int]:
    """Start a new incarnation and move the clock past anything possibly lost.

    With ``synchronous=normal`` the last commits before a power loss may be
    gone: their seqs will be reused and their stamps could be too. Peers would
    then skip the reused seqs, so the log becomes a new incarnation (peers
    re-sync it from zero) and the clock jumps past every stamp that could
    have been issued: the clock only runs ahead of the wall clock by observing
    remote stamps, and those are at most ``max_clock_offset_ms`` ahead.
    """
    incarnation = new_node_id()
    wall_ms = time.time_ns() // 1_000_000
    hlc = max(hlc, (wall_ms + max_clock_offset_ms + 1) << 16)
    conn.execute("UPDATE node_state SET incarnation = ?, hlc = ? WHERE id = 1", (incarnation, hlc))
    return incarnation, hlc


class Store:
    """The key-value store of one node."""

    def __init__(
        self,
        data_dir: str | Path,
        synchronous: str = "full",
        clock_offset_ms: int = 0,
        max_clock_offset_ms: int = 500,
        read_cache_entries: int = 100_000,
        adjustable_clock: bool = False,
        broken_merge: bool = False,
        allow_new_node: bool = False,
    ) -> None:
        """Open (creating and migrating if needed) the database in ``data_dir``.

        The directory is locked for as long as the store is open, and a
        zero-byte database is refused unless ``allow_new_node``
        (:mod:`edgekv.store.datadir`); a database too damaged to open raises
        :class:`DataDirError` naming the file.

        ``clock_offset_ms`` shifts this node's wall clock, and
        ``adjustable_clock`` lets :attr:`clock_offset_ms` change while it runs;
        ``broken_merge`` makes remote changes never replace local entries.
        All three exist for fault-injection tests only.
        """
        directory = Path(data_dir)
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / DB_FILENAME
        self._lock = DataDirLock(directory)
        self.health = StorageHealth(self.path)
        """Damage found in the database file, and its background check."""
        try:
            refuse_emptied_database(self.path, allow_new_node)
            self._open(
                synchronous,
                clock_offset_ms,
                max_clock_offset_ms,
                read_cache_entries,
                adjustable_clock,
                broken_merge,
            )
        except sqlite3.DatabaseError as exc:
            self._lock.release()
            if not is_corruption(exc):
                raise
            raise DataDirError(
                f"the database file {self.path} is damaged and cannot be opened ({exc}). "
                "Move the data directory away and start empty to re-sync from the peers, "
                "or restore a backup."
            ) from exc
        except BaseException:
            self._lock.release()
            raise

    def _open(
        self,
        synchronous: str,
        clock_offset_ms: int,
        max_clock_offset_ms: int,
        read_cache_entries: int,
        adjustable_clock: bool,
        broken_merge: bool,
    ) -> None:
        write_conn = _connect(self.path, synchronous)
        migrate(write_conn)
        node_id, incarnation, created_ms, hlc, seq, clean = write_conn.execute(
            "SELECT node_id, incarnation, created_ms, hlc, seq, clean_shutdown"
            " FROM node_state WHERE id = 1"
        ).fetchone()
        self.recovered = not clean and synchronous != "full"
        """Opened after an unclean stop that may have lost the last commits."""
        if self.recovered:
            incarnation, hlc = _after_unclean_shutdown(write_conn, hlc, max_clock_offset_ms)
        write_conn.execute("UPDATE node_state SET clean_shutdown = 0 WHERE id = 1")
        self.identity = NodeIdentity(node_id, incarnation, created_ms)
        self.clock_offset_ms = clock_offset_ms
        """Test only: the shift of this node's wall clock (read on every stamp when set)."""
        self.clock = (
            HybridLogicalClock(hlc, lambda: time.time_ns() // 1_000_000 + self.clock_offset_ms)
            if clock_offset_ms or adjustable_clock
            else HybridLogicalClock(hlc)
        )
        self.peer_clocks = PeerClocks(self.clock, max_clock_offset_ms)
        """Peers' clocks as heard: they cap this node's stamps when its own clock runs ahead."""
        # Test only: the merge the fault-injection harness must catch (never replaces).
        self._upsert_change = _KEEP_LOCAL_CHANGE if broken_merge else _UPSERT_CHANGE
        self.cache: ReadCache[Entry] = ReadCache(read_cache_entries)
        self.writer = Writer(write_conn, self.clock, seq, invalidate=self.cache.invalidate)
        self._reader = _connect(self.path, synchronous)
        self._reader.execute("PRAGMA query_only = ON")
        self.documents = DocumentStore(self.writer, self._reader, node_id)
        """JSON documents (Y documents); their changes share this change log."""
        self._settled_cursors = {peer: c.cursor for peer, c in self.peer_cursors().items()}
        self.origin_marks = OriginMarks(self.clock, seq, valid=bool(clean))
        """Marks of this node's own writes for its pull streams."""
        self.writer.add_commit_listener(self.origin_marks.committed)

    @property
    def node_id(self) -> int:
        """This node's id: the tie-breaker of its write stamps."""
        return self.identity.node_id

    @property
    def seq(self) -> int:
        """The seq of the newest committed change."""
        return self.writer.seq

    def size_bytes(self) -> int:
        """Bytes on disk: the database file and its write-ahead log."""
        wal = self.path.with_name(self.path.name + "-wal")
        return sum(path.stat().st_size for path in (self.path, wal) if path.exists())

    def close(self) -> None:
        """Commit queued writes, close the database and unlock the directory."""
        self.health.stop_check()
        try:
            self.writer.close(final_sql="UPDATE node_state SET clean_shutdown = 1 WHERE id = 1")
        except sqlite3.Error as exc:
            # A full disk: the next start treats this stop as unclean, which is safe.
            log.warning("could not record the clean shutdown of %s: %s", self.path, exc)
        finally:
            self.documents.close()
            self._reader.close()
            self._lock.release()

    # -- reads: on the caller's thread, never waiting for the writer ----------

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

    def get_many(
        self, ns: str, keys: Sequence[bytes], now: float | None = None
    ) -> list[Entry | None]:
        """Return the live entries of ``keys`` in order (None where absent)."""
        at = time.time() if now is None else now
        return [self.get(ns, key, at) for key in keys]

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
                    _UPSERT,
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

    # -- replication -----------------------------------------------------------

    def changes_after(self, cursor: int, limit: int, max_bytes: int = PAGE_BYTES) -> list[Change]:
        """Return up to ``limit`` changes of the local log with seq > ``cursor``.

        Key-value entries and document changes alike, in seq order; the page
        ends early at the change that reaches ``max_bytes``
        (:func:`~edgekv.store.paging.read_page`).
        """
        if self.documents.present:
            return self.documents.changes_after(cursor, limit, max_bytes)
        rows = self._reader.execute(_CHANGES_AFTER, (cursor, limit))
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
        if self.documents.present:
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

        The SQL twin of :meth:`Deferral.advance`; it reads the key-value rows
        only, as document changes are never deferred.
        """
        if deferral.window is not None:
            deferral.window = self._first_uncovered(deferral, deferral.window, upto)

    def _first_uncovered(self, deferral: Deferral, first: int, last: int) -> int | None:
        sql = f"SELECT min(seq) FROM kv WHERE seq >= ? AND seq <= ? AND ({_uncovered(deferral)})"
        found = self._reader.execute(sql, (first, last, *_mark_params(deferral))).fetchone()[0]
        return None if found is None else int(found)

    def peer_cursor(self, peer: int) -> PeerCursor:
        """Return how far the log of ``peer`` has been applied here."""
        row = self._reader.execute(
            "SELECT incarnation, cursor FROM peer_cursors WHERE peer = ?", (peer,)
        ).fetchone()
        return PeerCursor(*row) if row else PeerCursor()

    def peer_cursors(self) -> dict[int, PeerCursor]:
        """Return every peer's cursor."""
        rows = self._reader.execute("SELECT peer, incarnation, cursor FROM peer_cursors")
        return {peer: PeerCursor(inc, cur) for peer, inc, cur in rows}

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
                _check_cursor(txn.conn, peer, after)
            first_seq = txn.seq
            wall_ms = txn.clock.wall_ms()
            ready: Sequence[Change] = changes
            newest = max(map(_hlc, changes), default=0)
            # Checked one by one only when the newest stamp is too far ahead.
            if (newest >> COUNTER_BITS) > wall_ms + max_offset_ms:
                ready = [c for c in changes if not is_too_far_ahead(c, wall_ms, max_offset_ms)]
                newest = max(map(_hlc, ready), default=0)
            held = len(changes) - len(ready)
            if held:
                txn.conn.executemany(
                    _HOLD,
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
            txn.conn.execute(_SAVE_CURSOR, (peer, cursor.incarnation, cursor.cursor, wall_ms))
            return ApplyResult(applied, held, txn.seq, first_seq)

        applied = self.writer.submit(op)
        return self._settling_cursor(applied, peer, cursor)

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
            limit_hlc = (txn.clock.wall_ms() + max_offset_ms + 1) << 16
            rows = txn.conn.execute(
                "SELECT id, ns, key, value, metadata, expiration, hlc, node"
                " FROM held_changes WHERE hlc < ? ORDER BY id",
                (limit_hlc,),
            ).fetchall()
            for row in rows:
                self._merge(txn, Change(*row[1:]))
                txn.conn.execute("DELETE FROM held_changes WHERE id = ?", (row[0],))
            return len(rows)

        return self.writer.submit(op)

    def read_all(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query on the read connection."""
        return list(self._reader.execute(sql, params).fetchall())

    def upsert_members(
        self, members: Sequence[tuple[int, str, str, bool, int]]
    ) -> asyncio.Future[None]:
        """Insert or replace member rows (last writer by ``updated_ms`` decided by the caller)."""

        def op(txn: Txn) -> None:
            txn.conn.executemany(
                "INSERT INTO members (node, url, name, removed, updated_ms) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (node) DO UPDATE SET url = excluded.url, name = excluded.name,"
                " removed = excluded.removed, updated_ms = excluded.updated_ms",
                [(n, u, nm, int(r), t) for n, u, nm, r, t in members],
            )

        return self.writer.submit(op)

    def save_peer_cursor(
        self, peer: int, cursor: PeerCursor, after: PeerCursor | None = None
    ) -> asyncio.Future[None]:
        """Persist ``peer``'s cursor alone (a batch that carried no changes).

        ``after``: as in :meth:`apply_changes`.
        """

        def op(txn: Txn) -> None:
            if after is not None:
                _check_cursor(txn.conn, peer, after)
            txn.conn.execute(
                _SAVE_CURSOR, (peer, cursor.incarnation, cursor.cursor, txn.clock.wall_ms())
            )

        return self._settling_cursor(self.writer.submit(op), peer, cursor)

    def settled_cursor(self, peer: int) -> int:
        """How far ``peer``'s log is applied *and visible to every read here*.

        The cursor in SQLite moves at the commit, a moment before the writer
        clears the read cache of what that commit changed; this one moves
        only after, so a read that waited for it cannot meet a stale cached
        entry (read-your-writes across PoPs rests on it).
        """
        return self._settled_cursors.get(peer, 0)

    def _settling_cursor(
        self, future: asyncio.Future[T], peer: int, cursor: PeerCursor
    ) -> asyncio.Future[T]:
        def settled(done: asyncio.Future[T]) -> None:
            if not done.cancelled() and done.exception() is None:
                self._settled_cursors[peer] = cursor.cursor

        future.add_done_callback(settled)
        return future

    def purged_seq(self) -> int:
        """The seq of the newest collected tombstone (0: none collected)."""
        return int(self._reader.execute("SELECT purged_seq FROM node_state").fetchone()[0])

    def peer_acks(self) -> dict[int, tuple[int, int]]:
        """How far each peer has acknowledged this node's log: ``(cursor, updated_ms)``."""
        rows = self._reader.execute("SELECT peer, cursor, updated_ms FROM peer_acks")
        return {peer: (cursor, updated) for peer, cursor, updated in rows}

    def record_ack(self, peer: int, cursor: int) -> asyncio.Future[None]:
        """Remember that ``peer`` has applied this node's log up to ``cursor``."""

        def op(txn: Txn) -> None:
            txn.conn.execute(
                "INSERT INTO peer_acks (peer, cursor, updated_ms) VALUES (?, ?, ?)"
                " ON CONFLICT (peer) DO UPDATE SET cursor = excluded.cursor,"
                " updated_ms = excluded.updated_ms",
                (peer, cursor, txn.clock.wall_ms()),
            )

        return self.writer.submit(op)

    def collect_tombstones(
        self, acked_seq: int, before_hlc: int, left_out: Sequence[int] = ()
    ) -> asyncio.Future[int]:
        """Delete tombstones (and long-expired entries) every peer has acknowledged.

        A row goes when its seq is at most ``acked_seq`` (every member has
        applied it) and its stamp is older than ``before_hlc`` (the horizon).
        Returns how many rows went; ``purged_seq`` remembers the newest.
        ``left_out``: members whose acknowledgements were not waited for (out
        of contact past the horizon); if anything goes, they must re-sync
        (:meth:`must_resync`).
        """

        def op(txn: Txn) -> int:
            where = " FROM kv WHERE seq <= ? AND hlc < ? AND (value IS NULL OR expiration < ?)"
            expired_before = (before_hlc >> 16) // 1000
            params = (acked_seq, before_hlc, expired_before)
            newest = txn.conn.execute("SELECT max(seq)" + where, params).fetchone()[0]
            if newest is None:
                return 0
            deleted = txn.conn.execute("DELETE" + where, params).rowcount
            txn.conn.execute(
                "UPDATE node_state SET purged_seq = max(purged_seq, ?) WHERE id = 1", (newest,)
            )
            txn.conn.executemany(
                "INSERT INTO resync_required (peer, purged_seq) VALUES (?, ?)"
                " ON CONFLICT (peer) DO UPDATE"
                " SET purged_seq = max(purged_seq, excluded.purged_seq)",
                [(peer, newest) for peer in left_out],
            )
            return int(deleted)

        return self.writer.submit(op)

    def must_resync(self, peer: int, cursor: int) -> bool:
        """Whether ``peer``, resuming this node's log after ``cursor``, must re-sync in full.

        It must when it may hold keys whose tombstones were collected here
        without it: its cursor is behind a collected tombstone, or it was left
        out of a collection. Cursor 0 alone (a new replica's full sync) is
        fine: the full sync brings every current row.
        """
        if 0 < cursor < self.purged_seq():
            return True
        row = self._reader.execute(
            "SELECT purged_seq FROM resync_required WHERE peer = ?", (peer,)
        ).fetchone()
        return row is not None and cursor < row[0]

    def strong_namespaces(self) -> set[str]:
        """Namespaces this node has learned are strong (from the upstream)."""
        return {row[0] for row in self._reader.execute("SELECT ns FROM strong_namespaces")}

    def remember_strong_namespaces(self, names: Sequence[str]) -> asyncio.Future[None]:
        """Record namespaces declared strong, so they stay strong after a restart."""

        def op(txn: Txn) -> None:
            txn.conn.executemany(
                "INSERT OR IGNORE INTO strong_namespaces (ns, learned_ms) VALUES (?, ?)",
                [(name, txn.clock.wall_ms()) for name in names],
            )

        return self.writer.submit(op)

    def held_count(self) -> int:
        """How many remote changes are held back for clock skew."""
        return int(self._reader.execute("SELECT count(*) FROM held_changes").fetchone()[0])

    def _merge(self, txn: Txn, change: Change) -> bool:
        if is_document(change):
            return self.documents.apply_remote(txn, [change]) > 0
        cursor = txn.conn.execute(
            _UPSERT,
            (txn.next_seq(), *change.state()),
        )
        if not cursor.rowcount:
            return False
        txn.take_seq()
        txn.touched.append((change.ns, change.key))
        # Later local writes must order after everything applied here.
        txn.clock.observe(change.hlc)
        return True
