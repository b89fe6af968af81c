"""The live tail of the change log, read in rounds and fanned out to every watcher.

One reader for all watchers: in each round (as a commit settles, at least
:data:`ROUND_GAP` after the last under load) the hub reads the new rows of
the log (:meth:`~edgekv.store.changelog.ChangeLog.changes_after`) and hands
each to the watchers whose filter matches, through an index by namespace and
by prefix (or key), so a change costs a few dictionary lookups whatever the
number of watchers. Watchers with one filter form a group, matched once.
Event data is encoded once per change and per variant (with or without
values) and shared.

The hub also writes the events, to each watcher's connection itself (a
:class:`~edgekv.watch.frames.Sink`): no queue, task or wake-up per watcher.
A round costs a read of the log and, per watcher it concerns, a write (a
system call and a wake-up of the client) whatever it holds, so under a write
load rounds are at least :data:`ROUND_GAP` apart and take several commits.

Each watcher's unsent bytes are bounded (:class:`Watcher`): one that does not
read is *cut* once what its connection still holds and the next write would
pass the bound -- the write is dropped, its stream is closed, and it resumes
from the last event it received. Nothing is lost by a cut: the token of the
last event received names where to resume. A round holds a group's events up
to half the bound, then writes them and holds on: a large commit reaches a
watcher that reads in pieces it can take.

A watcher joins the tail at :attr:`WatchHub.position` after catching up to it
itself (:mod:`edgekv.watch.stream`); both run on the event loop, so no change
falls between them.

With a :class:`Handover` (the watch fan-out process,
:mod:`edgekv.watch.fanout_link`), a watcher that joins is handed to it
instead when it can be (a key-value stream on a plain connection): this
hub's rounds then tell it how far they reached, and it writes the events.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from edgekv.watch.frames import Position, Sink, Transferable, VectorText
from edgekv.watch.kinds import Coverage, Kind, WatchFilter
from edgekv_replication.changes import Change

_ROUND_PAGES = 8
"""Pages of the log one dispatch reads before letting other work run."""
_TAIL_ROWS = 500
ROUND_GAP = 0.005
"""Least seconds between two rounds of the tail.

A round runs as a commit settles, before the next begins (so what it reads of
the store is no newer than the log it reads), and at once after a quiet
spell: the gap delays events only under a write load, where it makes a
round carry the commits of a few milliseconds.
"""


class LogSource(Protocol):
    """What the hub reads: the node's store, or the fan-out process's view of its log."""

    @property
    def node_id(self) -> int: ...

    @property
    def seq(self) -> int: ...

    def on_commit(self, listener: Callable[[int], None]) -> None: ...

    def when_settled(self, callback: Callable[[], None]) -> None: ...

    def changes_after(self, cursor: int, limit: int) -> list[Change]: ...


class Handover(Protocol):
    """Where watchers go to be served from another process (the watch fan-out)."""

    @property
    def serving(self) -> int:
        """Watchers handed over and not ended yet."""
        ...

    def take(
        self, watcher: Watcher, position: Position, sink: Transferable, hub: VectorText
    ) -> bool:
        """Serve ``watcher`` from ``position`` on (where ``hub`` holds); False: it cannot."""
        ...

    def reached(self, head: int, covered: dict[int, int]) -> None:
        """A round read up to ``head``, where ``covered`` holds."""
        ...

    def drop(self, watcher: Watcher) -> None:
        """The stream of a watcher handed over ended here: stop serving it."""
        ...

    def stop(self) -> None:
        """The node is stopping: every stream handed over ends."""
        ...

    def tick(self) -> None:
        """A heartbeat round ran here: this node is alive (its streams may keep beating)."""
        ...

    def behind(self) -> float:
        """Seconds since the oldest round it has not read yet was told (0: none)."""
        ...


class TooManyWatchers(Exception):
    """The node or the token already has as many watchers as it may."""


@dataclass(frozen=True, slots=True)
class WatchLimits:
    """Bounds of the watch feed (settings ``max_watchers`` and the like)."""

    max_watchers: int = 10_000
    max_watchers_per_token: int = 1_000
    buffer_bytes: int = 1024 * 1024
    heartbeat: float = 15.0


@dataclass(eq=False, slots=True)
class Watcher:
    """One open watch: its filter, where it has got, its connection, and how it ended."""

    kind: Kind
    filter: WatchFilter
    principal: str
    limit: int
    """Most bytes its connection may hold unsent; past them the watcher is cut."""
    coverage: Coverage | None = None
    """After a resume at another node: what the token holds (those changes are skipped)."""
    position: Position | None = None
    """Set when it joins the tail: the seq and vector its next id names."""
    sink: Sink | None = None
    id_head: bytes = b""
    """``id: <token head>``: what every id of this node's incarnation starts with."""
    group: _Group | None = None
    """While attached: the watchers it shares its events with."""
    cut: bool = False
    gone: bool = False
    """Its connection went (a write found it closed)."""
    stopping: bool = False
    """The node is stopping: the stream ends."""
    attached: bool = False
    handed_over: bool = False
    """Served by the fan-out process (:class:`Handover`) since it joined the tail."""
    fanout_id: int = 0
    """Its id at the fan-out process."""
    unsent: bytes | None = b""
    """Handed over and ended: the bytes it had not written, to write before the last
    frame (None: unknown, the connection is dropped)."""
    last_sent: float = 0.0
    """Loop time of the stream's last write."""
    _waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Let the stream's task run: the watcher was cut, its client went, or the node stops."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    @property
    def ended(self) -> bool:
        """Whether the stream is to end (cut, gone or stopping)."""
        return self.cut or self.gone or self.stopping

    async def wait_end(self) -> None:
        """Until the stream is to end; meanwhile the hub writes its events, not its task."""
        while not self.ended:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None


@dataclass(eq=False, slots=True)
class _Group:
    """Watchers that get the same events: one filter and no token's coverage to skip.

    A round matches a change to the group once, holds its events once, and
    builds each write once per vector its members' ids name (usually one).
    A watcher resumed from another node's token has a group of its own.
    """

    filter: WatchFilter
    coverage: Coverage | None
    members: dict[Watcher, None] = field(default_factory=dict)
    held: list[tuple[int, bytes]] = field(default_factory=list)
    """The round's events (seq, event data), written at its end."""
    held_bytes: int = 0


@dataclass(slots=True)
class _Space:
    """The watchers of one namespace or collection, in groups indexed by prefix and by key."""

    by_prefix: dict[bytes, set[_Group]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)
    by_key: dict[bytes, set[_Group]] = field(default_factory=dict)
    shared: dict[WatchFilter, _Group] = field(default_factory=dict)
    """The groups open to more members, by filter."""

    def add(self, watcher: Watcher) -> None:
        group = self.shared.get(watcher.filter) if watcher.coverage is None else None
        if group is None:
            group = _Group(watcher.filter, watcher.coverage)
            if watcher.coverage is None:
                self.shared[watcher.filter] = group
            self._index(group)
        group.members[watcher] = None
        watcher.group = group

    def remove(self, watcher: Watcher) -> None:
        group = watcher.group
        watcher.group = None
        if group is None:
            return
        group.members.pop(watcher, None)
        if group.members:
            return
        if self.shared.get(group.filter) is group:
            del self.shared[group.filter]
        self._unindex(group)

    def _index(self, group: _Group) -> None:
        keys = group.filter.keys
        if keys is not None:
            for key in keys:
                self.by_key.setdefault(key, set()).add(group)
            return
        prefix = group.filter.prefix
        self.by_prefix.setdefault(prefix, set()).add(group)
        self.lengths = sorted({len(p) for p in self.by_prefix})

    def _unindex(self, group: _Group) -> None:
        keys = group.filter.keys
        if keys is not None:
            for key in keys:
                found = self.by_key.get(key)
                if found is not None:
                    found.discard(group)
                    if not found:
                        del self.by_key[key]
            return
        prefix = group.filter.prefix
        found = self.by_prefix.get(prefix)
        if found is not None:
            found.discard(group)
            if not found:
                del self.by_prefix[prefix]
                self.lengths = sorted({len(p) for p in self.by_prefix})

    def empty(self) -> bool:
        return not self.by_prefix and not self.by_key

    def matching(self, key: bytes) -> list[_Group]:
        found: list[_Group] = []
        exact = self.by_key.get(key)
        if exact:
            found.extend(exact)
        by_prefix = self.by_prefix
        size = len(key)
        for length in self.lengths:
            if length > size:
                break
            hit = by_prefix.get(key[:length])
            if hit:
                found.extend(hit)
        return found


class WatchHub:
    """Every open watcher of a node and the one reader of the log that feeds them."""

    def __init__(
        self,
        store: LogSource,
        kinds: Mapping[str, Kind],
        limits: WatchLimits,
        covered_now: Callable[[], dict[int, int]],
    ) -> None:
        """Serve ``kinds`` of ``store``'s changes; ``covered_now`` gives this node's vector.

        ``covered_now()``: origin -> the stamp up to which every write of that
        origin is in this node's store (or superseded there), read before a
        round reads the log, so it holds for the round's end.
        """
        self._store = store
        self.kinds = dict(kinds)
        self.limits = limits
        self._covered_now = covered_now
        self._position = store.seq
        self._covered = VectorText({})
        self._idle = False
        """Commits came while no watcher was attached: position and vector are stale."""
        self._spaces: dict[tuple[str, str], _Space] = {}
        self._per_principal: collections.Counter[str] = collections.Counter()
        self.open_count = 0
        self.events_sent = 0
        self.cut_count = 0
        self.relists = 0
        self._scheduled = False
        self._behind = False
        """Commits settled that no round has read yet."""
        self._last_round = 0.0
        self._round_due: asyncio.TimerHandle | None = None
        self._rounds_waited: list[asyncio.Future[None]] = []
        self._holding: dict[_Group, None] = {}
        """Groups with events held in this round, in order of their first."""
        self._open: set[Watcher] = set()
        self.closing = False
        """The node is stopping: every stream ends (its watcher resumes elsewhere)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._node_id = store.node_id
        self.round_gap = ROUND_GAP
        self.handover: Handover | None = None
        """The watch fan-out process, when the node has one."""
        self.beating: Callable[[], bool] | None = None
        """Whether heartbeats are due (None: always). The fan-out process's hub beats
        only while the node is heard from: a stream that beats says its node is alive,
        and a client whose node hangs must time out and go elsewhere."""

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow commits from now on (the store's commit listener)."""
        self._loop = loop
        self._idle = True
        self._store.on_commit(self._committed)
        self._heartbeats = loop.create_task(self._heartbeat_rounds())

    async def _heartbeat_rounds(self) -> None:
        """Four times per heartbeat interval: end the streams whose client went, and
        send a heartbeat to those that sent nothing for an interval.

        Written here, like events: a quiet stream costs no task wake-up. A
        stream whose client went is counted out within a quarter interval,
        not at its next write (which, for a quiet filter, may be far off).
        """
        interval = self.limits.heartbeat
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval / 4)
            now = loop.time()
            quiet_since = now - interval
            handover = self.handover
            if handover is not None and handover.serving > 0:
                handover.tick()
            beat = self.beating is None or self.beating()
            for watcher in list(self._open):
                sink = watcher.sink
                if not watcher.attached or sink is None:
                    continue
                if sink.closed():
                    self._gone(watcher)
                elif beat and watcher.last_sent <= quiet_since:
                    self._heartbeat(watcher, now)

    def _heartbeat(self, watcher: Watcher, now: float) -> None:
        # Between rounds (as here) no group holds events: an id may name the hub's position.
        position, sink = watcher.position, watcher.sink
        if position is None or sink is None:
            return
        data = b": heartbeat\n\n"
        if self._position > position.seq:  # the tail moved on: an id to resume from close by
            position.reach(self._position, self._covered)
            data = b"%b%x.%b\n: heartbeat\n\n" % (
                watcher.id_head,
                position.seq,
                position.text.encode(),
            )
        if sink.pending() + len(data) > watcher.limit:
            self._cut(watcher)
        elif sink.send(data):
            watcher.last_sent = now
        else:
            self._gone(watcher)

    @property
    def handed_over_count(self) -> int:
        """Watchers the fan-out process serves now."""
        return 0 if self.handover is None else self.handover.serving

    @property
    def fanout_behind(self) -> float:
        """How far the fan-out process is behind this hub's rounds, in seconds."""
        return 0.0 if self.handover is None else self.handover.behind()

    def _following(self) -> bool:
        """Whether a round has anyone to tell: a watcher here, or the fan-out process."""
        return bool(self._spaces) or (self.handover is not None and self.handover.serving > 0)

    def _catch_up_idle(self) -> None:
        # With no watcher attached nothing is read per commit (not even the vector):
        # both are taken now, together, which is what a joining watcher needs.
        if self._idle and not self._following():
            self._position = max(self._position, self._store.seq)
            self._set_covered(self._covered_now())
            self._idle = False

    def _set_covered(self, covered: dict[int, int]) -> None:
        if covered != self._covered.vector:  # a new encoding only when it changed
            self._covered = VectorText(covered)

    @property
    def position(self) -> int:
        """Every change at or below it has been handed to the watchers attached."""
        self._catch_up_idle()
        return self._position

    @property
    def covered(self) -> dict[int, int]:
        """This node's vector as of :attr:`position`."""
        self._catch_up_idle()
        return self._covered.vector

    @property
    def covered_text(self) -> VectorText:
        """:attr:`covered` with its wire text (one object while the vector stays the same)."""
        self._catch_up_idle()
        return self._covered

    # -- watchers ----------------------------------------------------------------

    def open(self, kind: str, watch: WatchFilter, principal: str) -> Watcher:
        """A new watcher, or :class:`TooManyWatchers` over a limit."""
        limits = self.limits
        if self.closing:
            raise TooManyWatchers("this node is stopping")
        if self.open_count >= limits.max_watchers:
            raise TooManyWatchers(f"this node serves at most {limits.max_watchers} watchers")
        if self._per_principal[principal] >= limits.max_watchers_per_token:
            raise TooManyWatchers(
                f"a token may hold at most {limits.max_watchers_per_token} watchers per node"
            )
        self.open_count += 1
        self._per_principal[principal] += 1
        watcher = Watcher(self.kinds[kind], watch, principal, limits.buffer_bytes)
        self._open.add(watcher)
        return watcher

    def adopt(self, watcher: Watcher) -> None:
        """Count in a watcher opened elsewhere (the node's, in the fan-out process)."""
        self.open_count += 1
        self._per_principal[watcher.principal] += 1
        self._open.add(watcher)

    def join_at(self, seq: int, covered: dict[int, int]) -> None:
        """Where the node's tail is (in the fan-out process): an idle tail moves there."""
        if not self._spaces and seq >= self._position:
            self._position = seq
            self._set_covered(covered)
            self._idle = False

    def stop(self) -> None:
        """End every stream (the node is stopping); new ones are refused."""
        self.closing = True
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        self._wake_waiting()
        if self.handover is not None:
            self.handover.stop()
        for watcher in self._open:
            if watcher.handed_over:
                continue  # it ends when the fan-out process says so
            self._detach(watcher)  # nothing after the stream's last frame
            watcher.stopping = True
            watcher.wake()

    def attach(self, watcher: Watcher, position: Position, sink: Sink, id_head: bytes) -> None:
        """Join the tail at ``position`` (the hub's): from now on the hub writes its events.

        ``position`` must be at :attr:`position` (the caller read up to it
        without awaiting since), so no change falls between.
        """
        assert position.seq >= self._position
        watcher.position, watcher.sink, watcher.id_head = position, sink, id_head
        handover = self.handover
        if (
            handover is not None
            and isinstance(sink, Transferable)
            and handover.take(watcher, position, sink, self._covered)
        ):
            watcher.handed_over = True
            return
        key = (watcher.kind.name, watcher.filter.space)
        self._spaces.setdefault(key, _Space()).add(watcher)
        watcher.attached = True
        watcher.last_sent = self._loop_time()

    def _detach(self, watcher: Watcher) -> None:
        if watcher.attached:
            key = (watcher.kind.name, watcher.filter.space)
            space = self._spaces.get(key)
            if space is not None:
                space.remove(watcher)
                if space.empty():
                    del self._spaces[key]
            watcher.attached = False

    def close(self, watcher: Watcher) -> None:
        """The watcher's stream ended: forget it."""
        if watcher.handed_over and not watcher.ended and self.handover is not None:
            self.handover.drop(watcher)  # its handler ended first (cancelled)
        self._detach(watcher)
        if watcher in self._open:
            self._open.discard(watcher)
            self.open_count -= 1
            self._per_principal[watcher.principal] -= 1
            if self._per_principal[watcher.principal] <= 0:
                del self._per_principal[watcher.principal]

    def _cut(self, watcher: Watcher) -> None:
        """Its client does not read: no more events; its task sends ``cut`` and ends."""
        self._detach(watcher)
        if not watcher.cut:
            watcher.cut = True
            self.cut_count += 1
        watcher.wake()

    def _gone(self, watcher: Watcher) -> None:
        self._detach(watcher)
        watcher.gone = True
        watcher.wake()

    def gone(self, watcher: Watcher) -> None:
        """Its client went: the stream ends."""
        self._gone(watcher)

    def handed_back(self, watcher: Watcher, why: str, unsent: bytes | None) -> None:
        """The fan-out process ended a watcher's stream (``why``: gone, cut, stopping)."""
        watcher.unsent = unsent
        if why == "cut":
            self.cut_count += 1
            watcher.cut = True
        elif why == "stopping":
            watcher.stopping = True
        else:
            watcher.gone = True
        watcher.wake()

    def _loop_time(self) -> float:
        loop = self._loop
        return loop.time() if loop is not None else 0.0

    # -- the tail ------------------------------------------------------------------

    async def settled(self) -> None:
        """Until a round has read every commit settled by now (at most a gap and a commit).

        A stream starts after it: a client that wrote, was answered and
        opened a stream finds its write in the catch-up, not after ``ready``.
        """
        if not self._behind or self._loop is None:
            return
        waited = self._loop.create_future()
        self._rounds_waited.append(waited)
        await waited

    def _committed(self, seq: int) -> None:
        loop = self._loop
        if not self._following():  # nobody to tell (the writer's thread may call: a plain flag)
            self._idle = True
            return
        if loop is None:
            return
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if not on_loop:
            loop.call_soon_threadsafe(self._committed, seq)
            return
        self._behind = True
        if self._scheduled:
            return
        wait = self._last_round + self.round_gap - loop.time()
        if wait <= 0:
            # The writer settles a commit here: the round runs before the next begins.
            self._scheduled = True
            loop.call_soon(self._dispatch)
        elif self._round_due is None:
            self._round_due = loop.call_later(wait, self._gap_over)

    def _gap_over(self) -> None:
        """The gap is over with commits unread: a round as soon as no commit is under way.

        A commit under way makes its rows visible before the store's caches
        drop what they replace; a round reading state then could send a state
        newer than the log it read. It settles soon; the round runs then.
        """
        self._round_due = None
        if self._behind and not self._scheduled:
            self._store.when_settled(self._round_now)

    def _round_now(self) -> None:
        if self._behind and not self._scheduled:
            self._dispatch()

    def _dispatch(self) -> None:
        """Hand the log's new changes to the watchers (some pages; again soon if more)."""
        self._scheduled = False
        self._behind = False
        self._last_round = self._loop_time()
        store = self._store
        if not self._following():  # nobody to tell: a watcher that joins catches up itself
            self._idle = True  # position and vector are brought up to date when read
            self._wake_waiting()
            return
        covered = self._covered_now()
        head = store.seq
        if not self._spaces:  # only the fan-out process to tell: it reads the log itself
            self._position = max(self._position, head)
            self._set_covered(covered)
            self._tell_handover(head, covered)
            self._wake_waiting()
            return
        for _ in range(_ROUND_PAGES):
            page = store.changes_after(self._position, _TAIL_ROWS)
            # Rows past head are of a commit not settled yet (the store's caches may
            # not show it): they come with a round after it settles.
            changes = [c for c in page if c.seq <= head] if page and page[-1].seq > head else page
            if not changes:
                break
            self._fan_out(changes)
            self._position = changes[-1].seq
            if self._position >= head or len(changes) < len(page):
                break
        else:
            self._write()
            self._tell_handover(self._position, self._covered.vector)
            self._behind = True
            self._committed(head)  # more to read: let other work run first
            return
        # Read before the log up to head: the vector holds from here on (ids say so).
        self._position = max(self._position, head)
        self._set_covered(covered)
        self._write()
        self._tell_handover(head, covered)
        self._wake_waiting()

    def _tell_handover(self, head: int, covered: dict[int, int]) -> None:
        handover = self.handover
        if handover is not None and handover.serving > 0:
            handover.reached(head, covered)

    def read_to_head(self) -> None:
        """Read the log up to the source's head now, however many pages that takes.

        The fan-out process's round: the node's next message may attach a
        watcher at that head, so nothing below it may be left for later.
        """
        while self._behind:
            self._dispatch()

    def _wake_waiting(self) -> None:
        waiting, self._rounds_waited = self._rounds_waited, []
        for waited in waiting:
            if not waited.done():
                waited.set_result(None)

    def _fan_out(self, changes: list[Change]) -> None:
        """Hold each matching group's events of ``changes``, in order (seq, event data)."""
        spaces = self._spaces
        kinds = list(self.kinds.values())
        node_id = self._node_id
        holding = self._holding
        # A group's held events are written once they reach half a buffer: a round that
        # carries a large commit is written in pieces a reading watcher takes.
        flush_at = self.limits.buffer_bytes // 2
        # A folding kind (documents): a key's changes in one round make one event,
        # its state now, read once (per variant) and offered once to each group.
        folded: dict[tuple[str, bytes], tuple[dict[bool, bytes | None], set[_Group]]] = {}
        for change in changes:
            for kind in kinds:
                space_name = kind.space_of(change)
                if space_name is not None:
                    break
            else:
                continue
            space = spaces.get((kind.name, space_name))
            if space is None:
                continue
            groups = space.matching(kind.name_of(change))
            if not groups:
                continue
            offered: set[_Group] | None = None
            encoded: dict[bool, bytes | None]
            if kind.folds:
                fold = (change.ns, kind.fold_key(change))
                encoded, offered = folded.setdefault(fold, ({}, set()))
            else:
                encoded = {}
            for group in groups:
                if offered is not None and group in offered:
                    continue
                coverage = group.coverage
                if coverage is not None and kind.resumed_skip(change, coverage):
                    continue
                watch = group.filter
                variant = watch.include_values
                if variant not in encoded:
                    encoded[variant] = kind.live(change, watch, node_id)
                data = encoded[variant]
                if data is None:
                    continue
                if offered is not None:
                    offered.add(group)
                size = len(data) + 64  # and its id
                if group.held and group.held_bytes + size > flush_at:
                    held, group.held, group.held_bytes = group.held, [], 0
                    self._write_group(group, held, held[-1][0], None)
                    if not group.members:  # each was cut (or went): the group is gone
                        holding.pop(group, None)
                        continue
                group.held.append((change.seq, data))
                group.held_bytes += size
                holding[group] = None

    def _write(self) -> None:
        """Write each watcher its events of the round as one piece; cut one that is full.

        Every id but the last names the event's seq with the vector the
        watcher had; the last names the hub's position with its vector now,
        as everything up to it has been handed over. Members of a group with
        the same vectors get the same bytes, built once.
        """
        position_now, covered = self._position, self._covered
        holding, self._holding = self._holding, {}
        for group in holding:
            items = group.held
            group.held, group.held_bytes = [], 0
            if items:
                self._write_group(group, items, position_now, covered)

    def _write_group(
        self,
        group: _Group,
        items: list[tuple[int, bytes]],
        last_seq: int,
        covered: VectorText | None,
    ) -> None:
        """Write ``items`` to each member of ``group``; the last event's id names ``last_seq``.

        ``covered``: the hub's vector at ``last_seq`` (the round's end), merged
        into each watcher's; None in mid-round, where the ids keep the vector
        each watcher had (it holds at any later seq too).
        """
        now = self._loop_time()
        sent = 0
        built: dict[tuple[int, int], tuple[bytes, VectorText, VectorText]] = {}
        for watcher in list(group.members):
            position, sink = watcher.position, watcher.sink
            if position is None or sink is None or not watcher.attached:
                continue
            before = position.encoded
            if covered is None:
                position.seq = last_seq
            else:
                position.reach(last_seq, covered)
            after = position.encoded
            key = (id(before), id(after))
            found = built.get(key)
            if found is None:
                head = watcher.id_head
                payload = _payload(head, items, before.tail, last_seq, after.tail)
                built[key] = (payload, before, after)  # kept: their ids stay theirs
            else:
                payload = found[0]
            if sink.pending() + len(payload) > watcher.limit:
                self._cut(watcher)
            elif sink.send(payload):
                watcher.last_sent = now
                sent += len(items)
            else:
                self._gone(watcher)
        self.events_sent += sent


def _payload(
    head: bytes, items: list[tuple[int, bytes]], tail: bytes, last_seq: int, last_tail: bytes
) -> bytes:
    """Change frames (``<head><seq><tail><data>``, a blank line); the last at ``last_seq``."""
    parts: list[bytes] = []
    for seq, data in items[:-1]:
        parts += (head, b"%x" % seq, tail, data, b"\n\n")
    parts += (head, b"%x" % last_seq, last_tail, items[-1][1], b"\n\n")
    return b"".join(parts)
