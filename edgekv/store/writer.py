"""The single SQLite writer with group commit.

Every write to a node's database is a plain function ``op(txn) -> result``
queued to one writer thread. The thread takes every queued op, runs them in one
transaction (each inside its own savepoint, so a failing op leaves the others
alone), commits once, and only then resolves the callers' futures: a write is
acknowledged only after the commit that holds it. Under load many writes share
one commit -- and one fsync -- which is what makes durable writes fast.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
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

    __slots__ = ("clock", "conn", "seq", "touched")

    def __init__(self, conn: sqlite3.Connection, clock: HybridLogicalClock, seq: int) -> None:
        self.conn = conn
        self.clock = clock
        self.seq = seq
        self.touched: list[tuple[str, bytes]] = []
        """Keys this transaction may have changed: invalidated in caches after commit."""

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
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]
    outcome: tuple[bool, Any] = field(default=(False, None))


_STOP = object()


class Writer:
    """Owns the write connection and the hybrid logical clock, on one thread."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        clock: HybridLogicalClock,
        seq: int,
        invalidate: Callable[[list[tuple[str, bytes]]], None] | None = None,
    ) -> None:
        """Take ownership of ``conn`` (autocommit mode), the clock and the last seq.

        ``invalidate`` is called with the keys of each commit, after it and
        before its writes are acknowledged.
        """
        self._conn = conn
        self._invalidate = invalidate
        self._clock = clock
        self._seq = seq
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._closed = False
        self._lock = threading.Lock()
        self._listeners: list[Callable[[int], None]] = []
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="edgekv-writer", daemon=True)
        self._thread.start()

    @property
    def seq(self) -> int:
        """The seq of the newest committed change."""
        return self._seq

    def add_commit_listener(self, listener: Callable[[int], None]) -> None:
        """Call ``listener(seq)`` on the writer thread after each commit that changed data."""
        self._listeners.append(listener)

    def submit(self, op: Callable[[Txn], T]) -> asyncio.Future[T]:
        """Queue ``op``; the returned future resolves after its transaction commits."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._lock:
            if self._closed:
                raise WriterClosed("the store is closed")
            self._queue.put(_Request(op, loop, future))
        return future

    def close(self, final_sql: str | None = None) -> None:
        """Commit every queued op, run ``final_sql`` if given, then close the connection."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        if final_sql:
            self._conn.execute(final_sql)
        self._conn.close()

    def _run(self) -> None:
        stopping = False
        while not stopping:
            batch: list[_Request[Any]] = []
            item = self._queue.get()
            while True:
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
                if len(batch) >= MAX_OPS_PER_COMMIT:
                    break
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Request[Any]]) -> None:
        conn = self._conn
        txn = Txn(conn, self._clock, self._seq)
        try:
            conn.execute("BEGIN IMMEDIATE")
            for request in batch:
                request.outcome = self._run_op(txn, request.op)
            if txn.seq != self._seq:
                conn.execute(
                    "UPDATE node_state SET hlc = ?, seq = ? WHERE id = 1",
                    (self._clock.last, txn.seq),
                )
            conn.execute("COMMIT")
        except Exception as exc:  # the commit itself failed: nothing of the batch holds
            log.exception("group commit failed; %d writes rejected", len(batch))
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            for request in batch:
                request.outcome = (False, exc)
        else:
            changed = txn.seq != self._seq
            self._seq = txn.seq
            self.commits += 1
            if self._invalidate is not None and txn.touched:
                self._invalidate(txn.touched)
            if changed:
                for listener in self._listeners:
                    listener(self._seq)
        self._resolve(batch)

    @staticmethod
    def _run_op(txn: Txn, op: Callable[[Txn], Any]) -> tuple[bool, Any]:
        seq_before, touched_before = txn.seq, len(txn.touched)
        txn.conn.execute("SAVEPOINT op")
        try:
            result = op(txn)
        except Exception as exc:
            txn.conn.execute("ROLLBACK TO op")
            txn.conn.execute("RELEASE op")
            txn.seq = seq_before
            del txn.touched[touched_before:]
            return False, exc
        txn.conn.execute("RELEASE op")
        return True, result

    @staticmethod
    def _resolve(batch: list[_Request[Any]]) -> None:
        by_loop: dict[asyncio.AbstractEventLoop, list[_Request[Any]]] = {}
        for request in batch:
            by_loop.setdefault(request.loop, []).append(request)
        for loop, requests in by_loop.items():
            # One wake-up of the event loop per commit, not one per write. A closed
            # loop raises RuntimeError: its callers are gone, nobody awaits them.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(_settle, requests)


def _settle(requests: list[_Request[Any]]) -> None:
    for request in requests:
        if request.future.done():
            continue
        ok, value = request.outcome
        if ok:
            request.future.set_result(value)
        else:
            request.future.set_exception(value)
