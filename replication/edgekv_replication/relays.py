"""Relay suppression: origin marks (the serving side) and deferrals (the pulling side).

In a mesh every change reaches a node once from its origin and once more
relayed by each other peer. A node that pulls an origin directly asks its
other peers to defer that origin's changes
(:class:`~edgekv_replication.envelope.Defer`), and sends them the origin's
mark so their streams know what it holds already
(:class:`~edgekv_replication.session.Deferral`). An origin is deferred only
while its own stream is up and sends marks. When that stream ends, every
stream that defers it is restarted: it resumes from its saved cursor, which
never passed a deferred change the marks did not cover, so the relayed
copies come again.

**Origin marks.** A pull stream tells the puller, with each batch ending at
seq ``upto``, the mark ``W``: every write this node stamped at or below ``W`` lies in its log at
or below ``upto`` (or its key has moved on to a newer state there). A puller
that committed that batch therefore holds all of them, and can ask its other
peers to leave this node's writes out of their streams up to ``W``
(:class:`~edgekv_replication.session.Deferral`).

Why the marks hold: local writes are stamped and logged by the single writer
in one order, so a checkpoint taken after each commit -- the seq it reached
and the clock's reading then -- covers every local stamp issued so far. Stamps
issued outside the writer (strong writes, stamped before PostgreSQL commits
them and logged here after) hold the marks below them while they are in
flight (:meth:`OriginMarks.stamping_outside`). After an unclean stop a strong
write may have been stamped and never logged, so such a node claims no mark
until it is restarted cleanly.

Both classes are free of I/O: a node and the simulated network run them alike.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Iterator
from contextlib import contextmanager

from edgekv_replication.hlc import HybridLogicalClock

KEPT = 100_000
"""Checkpoints kept (one per commit); a page older than all of them has no mark."""


class OriginMarks:
    """Checkpoints ``(seq, mark)`` after each commit, and stamps in flight outside the writer."""

    def __init__(self, clock: HybridLogicalClock, seq: int, valid: bool) -> None:
        """Start at the log's head ``seq``; ``valid`` False: claim no mark (unclean stop)."""
        self._clock = clock
        self._valid = valid
        self._seqs: list[int] = []
        self._marks: list[int] = []
        self._floors: dict[int, int] = {}
        self._tokens = itertools.count()
        if valid:
            self.committed(seq)

    def committed(self, seq: int) -> None:
        """The writer committed up to ``seq`` (a commit listener)."""
        if not self._valid:
            return
        mark = self._clock.last
        if self._floors:
            mark = min(mark, min(self._floors.values()))
        if self._seqs and seq <= self._seqs[-1]:
            self._marks[-1] = min(self._marks[-1], mark)
            return
        self._seqs.append(seq)
        self._marks.append(mark)
        if len(self._seqs) > 2 * KEPT:
            del self._seqs[:KEPT], self._marks[:KEPT]

    def at(self, upto: int) -> int | None:
        """The mark of a page ending at ``upto``; None when it cannot be told."""
        i = bisect.bisect_right(self._seqs, upto)
        return self._marks[i - 1] if i else None

    @contextmanager
    def stamping_outside(self) -> Iterator[None]:
        """Hold the marks below stamps issued in this block until it ends.

        Enter before the first stamp and leave after what it stamped is
        committed to the log (or given up).
        """
        token = next(self._tokens)
        self._floors[token] = self._clock.last
        try:
            yield
        finally:
            del self._floors[token]


class RelayDeferrals:
    """Marks of the origins pulled directly, and what each stream was asked to defer."""

    def __init__(self) -> None:
        """Nothing pulled yet."""
        self.marks: dict[int, int] = {}
        """Origin -> the mark of its newest batch committed here."""
        self._direct: set[int] = set()
        self._deferred: dict[int, set[int]] = {}
        self._restart: set[int] = set()

    def pulling(self, origin: int) -> bool:
        """A batch of ``origin``'s own stream arrived carrying a mark: defer it elsewhere.

        From the first such batch on, not from its commit: deferring rests on
        the stream being up (and restarted streams when it fails), not on
        marks, which only let saved cursors move on. An origin that claims no
        marks (after an unclean stop) is never deferred: the windows behind
        it would never close. Returns True when ``origin`` was not pulled
        directly before: the other streams should be asked to defer it now.
        """
        if origin in self._direct:
            return False
        self._direct.add(origin)
        return True

    def committed(self, origin: int, mark: int | None) -> None:
        """A batch of ``origin``'s own stream committed here, carrying ``mark``."""
        if mark is not None and mark > self.marks.get(origin, -1):
            self.marks[origin] = mark

    def wanted(self, server: int) -> dict[int, int]:
        """The origins (with their marks) the stream from ``server`` should defer now."""
        return {origin: self.marks.get(origin, 0) for origin in self._direct if origin != server}

    def asked(self, server: int, origins: set[int]) -> None:
        """The stream from ``server`` was asked to defer ``origins`` (more than before)."""
        self._deferred.setdefault(server, set()).update(origins)

    def stream_started(self, server: int) -> None:
        """A new stream from ``server`` defers nothing yet."""
        self._deferred.pop(server, None)
        self._restart.discard(server)

    def stream_ended(self, server: int, failed: bool = True) -> None:
        """The stream from ``server`` ended (or a connection to it failed).

        If it ``failed``, ``server`` is not pulled directly any more: the
        streams that defer it restart. Not after a deliberate restart (to
        change what it defers), which reconnects at once; were every restart
        to restart the others, two streams deferring each other's origins
        would restart each other for ever.
        """
        self._deferred.pop(server, None)
        if not failed:
            return
        self._direct.discard(server)
        for other, origins in self._deferred.items():
            if server in origins:
                self._restart.add(other)

    def must_restart(self, server: int) -> bool:
        """Whether the stream from ``server`` defers an origin no longer pulled directly."""
        return server in self._restart
