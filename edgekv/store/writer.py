"""The single SQLite writer with group commit.

Every write to a node's database is a plain function ``op(txn) -> result``
submitted on the event loop. Queued ops run together in one transaction, each
inside its own savepoint (so a failing op leaves the others alone), the
transaction commits once, and only then are the callers' futures resolved: a
write is acknowledged only after the commit that holds it. While one commit is
on its way to disk, new ops queue up and form the next one, so under load many
writes share one commit -- and one fsync.

Why the statements run on the event-loop thread and only ``COMMIT`` on a
thread of its own: the statements take microseconds, the fsync takes
milliseconds. A writer thread that also ran the statements had to take the
GIL back from the busy event loop after every SQLite call, and that hand-off
cost more than the statements themselves. Now the GIL changes hands once per
commit.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import chain
from operator import itemgetter
from typing import Any, Generic, TypeVar

from edgekv_replication import HybridLogicalClock

T = TypeVar("T")
log = logging.getLogger(__name__)

# An upper bound on the ops in one commit keeps commit latency bounded under a flood.
MAX_OPS_PER_COMMIT = 1024


class WriterClosed(RuntimeError):
    """The writer is shut down; the write was not applied."""


class Txn:
    """What an op sees: the connection inside the open transaction, the clock, the seq."""

    __slots__ = ("clock", "conn", "seq", "touched", "touched_rows")

    def __init__(self, conn: sqlite3.Connection, clock: HybridLogicalClock, seq: int) -> None:
        self.conn = conn
        self.clock = clock
        self.seq = seq
        self.touched: list[tuple[str, bytes]] = []
        """Keys this transaction may have changed: invalidated in caches after commit."""
        self.touched_rows: list[Sequence[Sequence[Any]]] = []
        """More of them, as rows starting ``(ns, key)`` (remote changes): their keys
        are only taken out when a cache holds anything (a catch-up would build a
        tuple per row for an empty cache)."""

    def next_seq(self) -> int:
        """Return the seq the next applied change takes (call ``take_seq`` once applied)."""
        return self.seq + 1

    def take_seq(self) -> int:
        """Consume and return the next seq."""
        self.seq += 1
        return self.seq


@dataclass(slots=True)
class _Request(Generic[T]):
    op: Callable[[Txn], T]
    future: asyncio.Future[T]
    single_statement: bool = False
    outcome: tuple[bool, Any] = field(default=(False, None))


@dataclass(slots=True)
class _Commit:
    """A transaction whose COMMIT is running on the commit thread."""

    batch: list[_Request[Any]]
    txn: Txn
    done: threading.Event = field(default_factory=threading.Event)
    error: BaseException | None = None
    settled: bool = False


class Writer:
    """Owns the write connection and the hybrid logical clock; used from one event loop."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        clock: HybridLogicalClock,
        seq: int,
        invalidate: Callable[[Iterable[tuple[str, bytes]]], None] | None = None,
    ) -> None:
        """Take ownership of ``conn`` (autocommit mode), the clock and the last seq.

        ``invalidate`` is called with the keys of each commit, after it and
        before its writes are acknowledged.
        """
        self._conn = conn
        self._clock = clock
        self._seq = seq
        self._invalidate = invalidate
        self._pending: list[_Request[Any]] = []
        self._flush_scheduled = False
        self._in_flight: _Commit | None = None
        self._closed = False
        self._listeners: list[Callable[[int], None]] = []
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="edgekv-commit")
        self.commits = 0

    @property
    def seq(self) -> int:
        """The seq of the newest committed change."""
        return self._seq

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(seq)`` after each commit that changed data."""
        self._listeners.append(listener)

    def submit(self, op: Callable[[Txn], T], single_statement: bool = False) -> asyncio.Future[T]:
        """Queue ``op``; the returned future resolves after its transaction commits.

        ``single_statement``: the op changes the database with at most one
        statement, which SQLite already applies all or nothing, so it needs no
        savepoint of its own (two statements fewer on the hot path).
        """
        if self._closed:
            raise WriterClosed("the store is closed")
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append(_Request(op, future, single_statement))
        if self._in_flight is None and not self._flush_scheduled:
            # On the next turn of the loop, so writes arriving together share a commit.
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return future

    def close(self, final_sql: str | None = None) -> None:
        """Commit the commit in flight and every queued op, run ``final_sql``, close."""
        if self._closed:
            return
        self._closed = True
        if self._in_flight is not None:
            self._in_flight.done.wait()
            self._settle(self._in_flight)
        while self._pending:
            batch = self._take_batch()
            txn = self._run_batch(batch)
            if txn is not None:
                commit = _Commit(batch, txn)
                self._commit_sql(commit)
                self._settle(commit)
        self._committer.shutdown(wait=True)
        try:
            if final_sql:
                self._conn.execute(final_sql)
        finally:
            self._conn.close()

    def _take_batch(self) -> list[_Request[Any]]:
        batch = self._pending[:MAX_OPS_PER_COMMIT]
        del self._pending[:MAX_OPS_PER_COMMIT]
        return batch

    def _flush(self) -> None:
        self._flush_scheduled = False
        if self._in_flight is not None or not self._pending or self._closed:
            return
        batch = self._take_batch()
        txn = self._run_batch(batch)
        if txn is None:
            self._schedule_next()
            return
        commit = self._in_flight = _Commit(batch, txn)
        loop = asyncio.get_running_loop()
        done = loop.run_in_executor(self._committer, self._commit_sql, commit)
        done.add_done_callback(lambda _: self._settle(commit))

    def _run_batch(self, batch: list[_Request[Any]]) -> Txn | None:
        """Run the ops in an open transaction; None (and all failed) if it cannot begin."""
        txn = Txn(self._conn, self._clock, self._seq)
        try:
            self._conn.execute("BEGIN IMMEDIATE")
            for request in batch:
                request.outcome = self._run_op(txn, request.op, request.single_statement)
                if not request.outcome[0] and not self._conn.in_transaction:
                    # SQLite rolled the whole transaction back (it may on a full disk):
                    # the ops before are undone and later ones would autocommit.
                    raise request.outcome[1]
            if txn.seq != self._seq:
                self._conn.execute(
                    "UPDATE node_state SET hlc = ?, seq = ? WHERE id = 1",
                    (self._clock.last, txn.seq),
                )
        except Exception as exc:
            log.exception("write transaction failed; %d writes rejected", len(batch))
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            for request in batch:
                _resolve(request.future, False, exc)
            return None
        return txn

    def _commit_sql(self, commit: _Commit) -> None:
        """On the commit thread: the fsync happens here, with the GIL released."""
        try:
            self._conn.execute("COMMIT")
        except BaseException as exc:  # the batch fails as a whole
            commit.error = exc
        finally:
            commit.done.set()

    def _settle(self, commit: _Commit) -> None:
        """After COMMIT returned: publish the new state, then acknowledge."""
        if commit.settled:
            return
        commit.settled = True
        if self._in_flight is commit:
            self._in_flight = None
        if commit.error is not None:
            log.error(
                "group commit failed; %d writes rejected: %s", len(commit.batch), commit.error
            )
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            for request in commit.batch:
                _resolve(request.future, False, commit.error)
        else:
            txn = commit.txn
            changed = txn.seq != self._seq
            self._seq = txn.seq
            self.commits += 1
            if self._invalidate is not None and (txn.touched or txn.touched_rows):
                rows = chain.from_iterable(map(_keys_of, txn.touched_rows))
                self._invalidate(chain(txn.touched, rows))
            if changed:
                for listener in self._listeners:
                    listener(self._seq)
            for request in commit.batch:
                _resolve(request.future, *request.outcome)
        self._schedule_next()

    def _schedule_next(self) -> None:
        if self._pending and not self._closed and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    @staticmethod
    def _run_op(txn: Txn, op: Callable[[Txn], Any], single_statement: bool) -> tuple[bool, Any]:
        seq_before, touched_before, rows_before = txn.seq, len(txn.touched), len(txn.touched_rows)
        if not single_statement:
            txn.conn.execute("SAVEPOINT op")
        try:
            result = op(txn)
        except Exception as exc:
            if not single_statement and txn.conn.in_transaction:
                txn.conn.execute("ROLLBACK TO op")
                txn.conn.execute("RELEASE op")
            txn.seq = seq_before
            del txn.touched[touched_before:]
            del txn.touched_rows[rows_before:]
            return False, exc
        if not single_statement:
            txn.conn.execute("RELEASE op")
        return True, result


def _keys_of(rows: Sequence[Sequence[Any]]) -> Iterator[tuple[str, bytes]]:
    return map(_KEY, rows)


_KEY = itemgetter(0, 1)


def _resolve(future: asyncio.Future[Any], ok: bool, value: Any) -> None:
    if future.done():
        return
    if ok:
        future.set_result(value)
    else:
        future.set_exception(value)
