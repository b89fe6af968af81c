"""Relay suppression: origin marks and deferrals (the serving side), what to defer (the puller).

In a mesh every change reaches a node once from its origin and once more
relayed by each other peer. A node that pulls an origin directly asks its
other peers to defer that origin's changes
(:class:`~edgekv_replication.envelope.Defer`), and sends them the origin's
mark so their streams know what it holds already
(:class:`Deferral`). An origin is deferred only
while its own stream is up and sends marks. When that stream ends, every
stream that defers it is restarted: it resumes from its saved cursor, which
never passed a deferred change the marks did not cover, so the relayed
copies come again.

**Origin marks.** A pull stream tells the puller, with each batch ending at
seq ``upto``, the mark ``W``: every write this node stamped at or below ``W`` lies in its log at
or below ``upto`` (or its key has moved on to a newer state there). A puller
that committed that batch therefore holds all of them, and can ask its other
peers to leave this node's writes out of their streams up to ``W``
(:class:`Deferral`).

Why the marks hold: local writes are stamped and logged by the single writer
in one order, so a checkpoint taken after each commit -- the seq it reached
and the clock's reading then -- covers every local stamp issued so far. Stamps
issued outside the writer (strong writes, stamped before PostgreSQL commits
them and logged here after) hold the marks below them while they are in
flight (:meth:`OriginMarks.stamping_outside`). After an unclean stop a strong
write may have been stamped and never logged, so such a node claims no mark
until it is restarted cleanly.

The classes are free of I/O: a node and the simulated network run them alike.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

from edgekv_replication.changes import Change
from edgekv_replication.documents import is_document
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


class HeldMarks:
    """What this node holds of other origins' writes, as of each point of its own log.

    After a batch commits here, every write of origin ``o`` stamped at or below
    ``marks[o]`` (:attr:`RelayDeferrals.marks`) is in this log at or below
    the head it committed at (or its key moved on to a newer state). A stream
    relaying ``o`` to a puller sends that mark with each batch
    (``Batch.relayed``): the puller that committed the batch holds those writes
    too, so its other peers may leave ``o`` out up to it -- the origin marks of
    a relayed origin, one hop further.
    """

    def __init__(self, kept: int = 64) -> None:
        """Keep the newest ``kept`` checkpoints of each origin (older: no claim)."""
        self._kept = kept
        self._seqs: dict[int, list[int]] = {}
        self._marks: dict[int, list[int]] = {}

    def record(self, head: int, marks: Iterable[tuple[int, int]]) -> None:
        """Every write of each origin at or below its mark is in the log at or below ``head``."""
        for origin, mark in marks:
            seqs = self._seqs.setdefault(origin, [])
            values = self._marks.setdefault(origin, [])
            if values and mark <= values[-1]:
                continue
            if seqs and head <= seqs[-1]:
                values[-1] = mark  # the same point of the log, a newer mark
                continue
            seqs.append(head)
            values.append(mark)
            if len(seqs) > 2 * self._kept:
                del seqs[: self._kept], values[: self._kept]

    def at(self, upto: int) -> dict[int, int]:
        """Origin -> mark for a batch ending at ``upto`` (origins without one left out)."""
        held = {}
        for origin, seqs in self._seqs.items():
            i = bisect.bisect_right(seqs, upto)
            if i:
                held[origin] = self._marks[origin][i - 1]
        return held


class RelayDeferrals:
    """Marks of the origins pulled directly or relayed, and what each stream was asked to defer.

    An origin pulled directly is deferred at every other stream. An origin
    reached only by relay (``designate``, from :func:`~edgekv_replication.
    topology.chosen_relays`) is deferred at every stream but its chosen relay's, once
    that stream is up and has sent a relayed mark of that origin
    (``Batch.relayed``); when it fails, the streams deferring the origin
    restart without it.

    A node sends relayed marks of an origin only while it *vouches* for it
    (:meth:`vouches`): it pulls it directly, or its own chosen relay for it
    vouches for it. Were it to pass on marks of an origin it takes from every
    peer (its chosen relay gone), a puller that chose it could defer that
    origin at its other streams while this node takes it from that very
    puller only: a cycle of relays, and neither gets the origin's writes. A
    served stream that sent marks of an origin no longer vouched for is
    closed (:meth:`withdrawn`): the puller restarts the streams deferring it.
    """

    def __init__(self) -> None:
        """Nothing pulled yet."""
        self.marks: dict[int, int] = {}
        """Origin -> the newest mark known to hold here (its own stream's, or relayed)."""
        self.held = HeldMarks()
        """The same marks per point of this node's log, for the streams it serves."""
        self.relayable: Callable[[int], bool] = lambda origin: True
        """Origins whose marks this node passes on (with a backbone: its own region's)."""
        self._direct: set[int] = set()
        self._relay_of: dict[int, int] = {}
        self._relays_for: dict[int, set[int]] = {}
        self._deferred: dict[int, set[int]] = {}
        self._restart: set[int] = set()
        self._unrecorded: set[int] = set()
        self.holding = False
        """This node holds remote changes back (clock skew): no marks are recorded meanwhile."""

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

    def relaying(self, server: int, origins: Iterable[int] = ()) -> bool:
        """A batch of ``server`` arrived carrying relayed marks of ``origins``.

        ``server`` vouches for those origins while its stream lasts: it may relay
        them for us. Returns True when it is the chosen relay of one of them it
        did not vouch for before: the other streams should be asked to defer it now.
        """
        vouched = self._relays_for.setdefault(server, set())
        new = set(origins) - vouched
        vouched |= new
        return any(self._relay_of.get(origin) == server for origin in new)

    def vouches(self, origin: int) -> bool:
        """Whether this node gets ``origin``'s writes by a chain that ends at a direct stream.

        Only then may it pass on relayed marks of ``origin``: a puller that
        chose it as relay defers ``origin`` everywhere else.
        """
        if origin in self._direct:
            return True
        relay = self._relay_of.get(origin)
        return relay is not None and origin in self._relays_for.get(relay, ())

    def relayed_at(self, upto: int) -> dict[int, int]:
        """The held marks of a batch ending at ``upto`` this node vouches for (sent on)."""
        return {o: mark for o, mark in self.held.at(upto).items() if self.vouches(o)}

    def withdrawn(self, sent: Iterable[int]) -> bool:
        """Whether a stream that sent relayed marks of ``sent`` must close: one is not vouched."""
        return not all(self.vouches(origin) for origin in sent)

    def designate(self, relay_of: Mapping[int, int]) -> None:
        """Origin -> the one server to take it through (the others defer it).

        A stream that was asked to defer an origin it should now carry restarts.
        """
        self._relay_of = dict(relay_of)
        self._mark_restarts()

    def committed(
        self,
        server: int,
        mark: int | None,
        relayed: Iterable[tuple[int, int]] = (),
        head: int | None = None,
    ) -> None:
        """A batch of ``server``'s stream committed here, carrying ``mark`` and ``relayed``.

        ``relayed`` marks count only for origins this stream was not asked to
        defer (of those, the batch says nothing). ``head``: this node's log
        head after the commit, where the marks are recorded for the streams
        it serves (None: not recorded). Not while :attr:`holding` either:
        changes held back are not in the log; a later commit records them.
        """
        moved = self._unrecorded
        if mark is not None and mark > self.marks.get(server, -1):
            self.marks[server] = mark
            moved.add(server)
        deferred = self._deferred.get(server, set())
        for origin, relayed_mark in relayed:
            if origin not in deferred and relayed_mark > self.marks.get(origin, -1):
                self.marks[origin] = relayed_mark
                moved.add(origin)
        if head is not None and moved and not self.holding:
            self.held.record(head, [(o, self.marks[o]) for o in moved if self.relayable(o)])
            moved.clear()

    def wanted(self, server: int) -> dict[int, int]:
        """The origins (with their marks) the stream from ``server`` should defer now."""
        wanted = {origin: self.marks.get(origin, 0) for origin in self._direct if origin != server}
        for origin, relay in self._relay_of.items():
            if (
                relay != server
                and origin in self._relays_for.get(relay, ())
                and origin != server
                and origin not in self._direct
            ):
                wanted[origin] = self.marks.get(origin, 0)
        return wanted

    def asked(self, server: int, origins: set[int]) -> None:
        """The stream from ``server`` was asked to defer ``origins`` (more than before)."""
        self._deferred.setdefault(server, set()).update(origins)

    def stream_started(self, server: int) -> None:
        """A new stream from ``server`` defers nothing yet."""
        self._deferred.pop(server, None)
        self._restart.discard(server)

    def stream_ended(self, server: int, failed: bool = True) -> None:
        """The stream from ``server`` ended (or a connection to it failed).

        If it ``failed``, ``server`` is not pulled directly any more, nor a
        relay: the streams that defer what it brought restart. Not after a
        deliberate restart (to change what it defers), which reconnects at
        once; were every restart to restart the others, two streams deferring
        each other's origins would restart each other for ever.
        """
        self._deferred.pop(server, None)
        if not failed:
            return
        self._direct.discard(server)
        self._relays_for.pop(server, None)
        self._mark_restarts()

    def _mark_restarts(self) -> None:
        for other, origins in self._deferred.items():
            if origins - self.wanted(other).keys():
                self._restart.add(other)

    def must_restart(self, server: int) -> bool:
        """Whether the stream from ``server`` defers an origin it should carry now."""
        return server in self._restart


@dataclass
class Deferral:
    """The server's side of a puller's :class:`~edgekv_replication.envelope.Defer`.

    Key-value changes written by a deferred origin stay out of the stream:
    the puller gets them from that origin directly. Those at or below the
    origin's mark the puller already holds; the others hold the puller's saved
    cursor back (``window``) until a later mark covers them, so that if the
    puller loses its direct link it can ask for them again by resuming from
    the saved cursor. Document changes are never deferred (Y updates carry
    no stamp order to cover them with).
    """

    marks: dict[int, int] = field(default_factory=dict)
    """Deferred origin -> the newest mark the puller sent for it."""
    window: int | None = None
    """The seq of the first deferred change sent past that no mark covers yet."""

    def update(self, marks: Iterable[tuple[int, int]]) -> None:
        """Take a Defer message: new origins, newer marks."""
        for origin, mark in marks:
            if mark > self.marks.get(origin, -1):
                self.marks[origin] = mark

    def defers(self, change: Change) -> bool:
        """Whether ``change`` stays out of the stream."""
        return change.node in self.marks and not is_document(change)

    def covers(self, change: Change) -> bool:
        """Whether the puller holds ``change`` (or newer) already, by its origin's mark."""
        return change.hlc <= self.marks.get(change.node, -1)

    def split(self, changes: Sequence[Change]) -> list[Change]:
        """The changes of a page to send; opens the window at a deferred one not covered."""
        if not self.marks:
            return list(changes)
        send = []
        for change in changes:
            if not self.defers(change):
                send.append(change)
            elif self.window is None and not self.covers(change):
                self.window = change.seq
        return send

    def advance(self, sent_past: Iterable[Change]) -> None:
        """Move the window past what the marks now cover.

        ``sent_past``: the log from the window up to where the stream has got
        (no further), in seq order.
        """
        if self.window is not None:
            self.window = self.first_uncovered(sent_past)

    def first_uncovered(self, changes: Iterable[Change]) -> int | None:
        """The seq of the first of ``changes`` deferred and not covered by a mark, if any."""
        for change in changes:
            if self.defers(change) and not self.covers(change):
                return change.seq
        return None

    def durable(self, upto: int) -> int:
        """How far the puller may save its cursor with a batch ending at ``upto``."""
        return upto if self.window is None else min(upto, self.window - 1)
