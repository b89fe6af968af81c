"""The single SQLite writer with group commit.

Every write to a node's database is a plain function ``op(txn) -> result``
submitted on the event loop. Queued ops run together in one transaction, each
inside its own savepoint (so a failing op leaves the others alone), the
transaction commits once, and only then are the callers' futures resolved: a
write is acknowledged only after the commit that holds it. While one commit is
on its way to disk, new ops queue up and form the next one, so under load many
writes share one commit -- and one fsync.

Whatever an op raises, it fails alone: its savepoint is rolled back, the
in-memory effects it registered with :meth:`Txn.on_rollback` are undone, and
its caller gets an ``Exception`` (a ``BaseException`` that is not one, such as
pycrdt's ``PanicException``, arrives as :class:`OpCrashed`). Only
``KeyboardInterrupt`` and ``SystemExit`` stop the batch: it is rolled back
and undone, its callers get :class:`WriterClosed`, and the exception goes on
up, to stop the process. When the transaction itself fails (``BEGIN``, the
last update, ``COMMIT``), every op of it is undone, so no in-memory state
(loaded documents, the read cache, the seq) runs ahead of the database.

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
    """The writer is shut down (or the process is stopping); the write was not applied."""


class OpCrashed(RuntimeError):
    """An op raised a ``BaseException`` that is not an ``Exception``; it failed alone.

    The original (a pycrdt ``PanicException``, a stray ``CancelledError``) is
    the ``__cause__``. Callers get this instead because a ``BaseException``
    would pass every ``except Exception`` above them, leaving a request
    unanswered.
    """


# What asks the process to stop: never turned into an op failure, always raised on.
_STOPPING = (KeyboardInterrupt, SystemExit)


class Txn:
    """What an op sees: the connection inside the open transaction, the clock, the seq."""

    __slots__ = ("clock", "conn", "seq", "touched", "touched_rows", "undo")

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
        self.undo: list[Callable[[], None]] = []
        """What to run if changes are rolled back (see :meth:`on_rollback`)."""

    def on_rollback(self, action: Callable[[], None]) -> None:
        """Run ``action`` if the running op's changes are rolled back, not committed.

        For in-memory state an op changes ahead of the commit (a loaded Y
        document): ``action`` drops it when the op fails, and when its whole
        transaction does (a failed ``COMMIT``), so memory never holds what the
        database does not.
        """
        self.undo.append(action)

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
        self._settled_callbacks: list[Callable[[], None]] = []
        self._committer = ThreadPoolExecutor(1, thread_name_prefix="edgekv-commit")
        self.commits = 0

    @property
    def seq(self) -> int:
        """The seq of the newest committed change."""
        return self._seq

    def when_settled(self, callback: Callable[[], None]) -> None:
        """Call ``callback()`` once the commit under way has settled (at once if none is).

        It runs before the next commit begins, whether or not the commit
        changed anything (commit listeners hear only of those that did).
        """
        if self._in_flight is None:
            callback()
        else:
            self._settled_callbacks.append(callback)

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
        """Run the ops in an open transaction; None (every op failed) if it cannot.

        An op without a savepoint of its own that fails after its statement
        changed rows cannot be rolled back alone: the transaction is rolled
        back and run again without it, so that it still fails alone.
        """
        while batch:
            txn = Txn(self._conn, self._clock, self._seq)
            try:
                self._begin()
                for request in batch:
                    request.outcome = self._run_op(txn, request)
                if txn.seq != self._seq:
                    self._conn.execute(
                        "UPDATE node_state SET hlc = ?, seq = ? WHERE id = 1",
                        (self._clock.last, txn.seq),
                    )
            except _LeftChanges as left:
                self._abort(txn)
                batch.remove(left.request)
                _resolve(left.request.future, False, left.error)
                continue
            except BaseException as exc:
                log.error("write transaction failed; %d writes rejected", len(batch), exc_info=exc)
                self._abort(txn)
                error = _reported(exc)
                for request in batch:
                    _resolve(request.future, False, error)
                if isinstance(exc, _STOPPING):
                    raise
                return None
            return txn
        return None

    def _begin(self) -> None:
        if self._conn.in_transaction:
            # Only a ROLLBACK that failed leaves one open: never build on its remains.
            log.error("a failed write transaction was still open; rolling it back")
            self._conn.execute("ROLLBACK")
        self._conn.execute("BEGIN IMMEDIATE")

    def _abort(self, txn: Txn) -> None:
        """Roll ``txn`` back and undo the in-memory effects of all its ops."""
        if self._conn.in_transaction:
            try:
                self._conn.execute("ROLLBACK")
            except sqlite3.Error:
                log.exception("ROLLBACK failed; the next transaction retries it")
        _undo(txn, 0)

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
            self._abort(commit.txn)
            self._after_failed_commit(commit.txn)
            error = _reported(commit.error)
            for request in commit.batch:
                _resolve(request.future, False, error)
        else:
            txn = commit.txn
            changed = txn.seq != self._seq
            self._seq = txn.seq
            self.commits += 1
            self._invalidate_touched(txn)
            if changed:
                for listener in self._listeners:
                    listener(self._seq)
            for request in commit.batch:
                _resolve(request.future, *request.outcome)
        self._schedule_next()  # on the next turn of the loop: the callbacks run first
        callbacks, self._settled_callbacks = self._settled_callbacks, []
        for callback in callbacks:
            callback()

    def _invalidate_touched(self, txn: Txn) -> None:
        if self._invalidate is not None and (txn.touched or txn.touched_rows):
            rows = chain.from_iterable(map(_keys_of, txn.touched_rows))
            self._invalidate(chain(txn.touched, rows))

    def _after_failed_commit(self, txn: Txn) -> None:
        """Follow the database, whatever a failed COMMIT left in it.

        An I/O error after the commit record reached the write-ahead log
        reports failure for a transaction that is in the database: so its
        keys leave the read cache, and the seq is read back rather than kept.
        """
        self._invalidate_touched(txn)
        try:
            (seq,) = self._conn.execute("SELECT seq FROM node_state WHERE id = 1").fetchone()
        except sqlite3.Error:
            log.exception("cannot read the seq back after a failed commit")
            return
        if seq != self._seq:
            log.error("a COMMIT that failed reached the database (seq %d)", seq)
            self._seq = seq
            for listener in self._listeners:
                listener(seq)

    def _schedule_next(self) -> None:
        if self._pending and not self._closed and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    @staticmethod
    def _run_op(txn: Txn, request: _Request[Any]) -> tuple[bool, Any]:
        """Run one op inside the transaction; return ``(ok, result or error)``."""
        single_statement = request.single_statement
        seq_before, touched_before, rows_before = txn.seq, len(txn.touched), len(txn.touched_rows)
        undo_before = len(txn.undo)
        conn = txn.conn
        if single_statement:
            changes_before = conn.total_changes
        else:
            conn.execute("SAVEPOINT op")
        try:
            result = request.op(txn)
        except _STOPPING:
            raise
        except BaseException as exc:
            error = _reported(exc)
            if error is not exc:
                log.error("a write op crashed; it fails alone", exc_info=exc)
            if not conn.in_transaction:
                # SQLite rolled the whole transaction back (a full disk): the batch fails.
                raise error  # noqa: B904  # its cause is set when it wraps ``exc``
            if single_statement:
                if conn.total_changes != changes_before:
                    raise _LeftChanges(request, error) from exc
            else:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
            txn.seq = seq_before
            del txn.touched[touched_before:]
            del txn.touched_rows[rows_before:]
            _undo(txn, undo_before)
            return False, error
        if not single_statement:
            conn.execute("RELEASE op")
        return True, result


class _LeftChanges(Exception):
    """An op without a savepoint failed after changing rows: rerun the batch without it."""

    def __init__(self, request: _Request[Any], error: Exception) -> None:
        super().__init__("a single-statement op failed after its statement")
        self.request = request
        self.error = error


def _reported(exc: BaseException) -> Exception:
    """What an op's caller is given for ``exc``: always an ``Exception``."""
    if isinstance(exc, Exception):
        return exc
    if isinstance(exc, _STOPPING):
        error: Exception = WriterClosed("the process is stopping; the write was not applied")
    else:
        error = OpCrashed(f"the write crashed ({type(exc).__name__}); nothing was written")
    error.__cause__ = exc
    return error


def _undo(txn: Txn, start: int) -> None:
    """Run the rollback actions registered since ``start``, newest first."""
    actions = txn.undo[start:]
    del txn.undo[start:]
    for action in reversed(actions):
        try:
            action()
        except _STOPPING:
            raise
        except BaseException:
            log.exception("undoing a rolled-back write in memory failed")


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
