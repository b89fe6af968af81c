"""The live tail of the change log, read once per commit and fanned out to every watcher.

One reader for all watchers: after each commit the hub reads the new rows of
the log (:meth:`~edgekv.store.changelog.ChangeLog.changes_after`) and hands
each to the watchers whose filter matches, through an index by namespace and
by prefix (or key), so a change costs a few dictionary lookups whatever the
number of watchers. Event data is encoded once per change and per variant
(with or without values) and shared.

Each watcher has a bounded buffer (:class:`Watcher`): one that does not read
is *cut* once its buffer is full -- the events queued are dropped and its
stream is closed, and it resumes from the last event it received. Nothing is
lost by a cut: the token of the last event received names where to resume.

A watcher joins the tail at :attr:`WatchHub.position` after catching up to it
itself (:mod:`edgekv.watch.catchup`); both run on the event loop, so no
change falls between them.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from edgekv.store.store import Store
from edgekv.watch.kinds import Coverage, Kind, WatchFilter
from edgekv_replication.changes import Change

_ROUND_PAGES = 8
"""Pages of the log one dispatch reads before letting other work run."""
_TAIL_ROWS = 500


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
    """One open watch: its filter, its buffer of events, and whether it was cut."""

    kind: Kind
    filter: WatchFilter
    principal: str
    limit: int
    coverage: Coverage | None = None
    """After a resume at another node: what the token holds (those changes are skipped)."""
    queue: collections.deque[tuple[int, bytes]] = field(default_factory=collections.deque)
    queued_bytes: int = 0
    cut: bool = False
    attached: bool = False
    heartbeat_due: bool = False
    """Nothing was sent for a heartbeat interval (set by the hub's heartbeat round)."""
    stopping: bool = False
    """The node is stopping: the stream ends."""
    last_sent: float = 0.0
    """Loop time of the stream's last write."""
    on_cut: Callable[[], None] | None = None
    _waiter: asyncio.Future[None] | None = None

    def wake(self) -> None:
        """Let the stream's writer run (events queued, a cut, a heartbeat, a stop)."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def wait(self) -> None:
        """Until there is something to do: events, a cut or a heartbeat due.

        A future per wait, woken directly: no timer per watcher (the hub's
        heartbeat round covers them all) and no task per wait.
        """
        if self.queue or self.cut or self.heartbeat_due or self.stopping:
            return
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    def offer(self, seq: int, data: bytes) -> bool:
        """Queue an event; False (and the watcher is cut) when the buffer would overflow."""
        if self.cut:
            return False
        size = len(data) + 64
        if self.queued_bytes + size > self.limit:
            self.cut = True
            self.queue.clear()
            self.queued_bytes = 0
            self.wake()
            if self.on_cut is not None:
                self.on_cut()
            return False
        self.queue.append((seq, data))
        self.queued_bytes += size
        self.wake()
        return True

    def take(self) -> list[tuple[int, bytes]]:
        """Everything queued, in order (the buffer is empty after)."""
        items = list(self.queue)
        self.queue.clear()
        self.queued_bytes = 0
        return items


@dataclass(slots=True)
class _Space:
    """The watchers of one namespace or collection, indexed by prefix and by key."""

    by_prefix: dict[bytes, set[Watcher]] = field(default_factory=dict)
    lengths: list[int] = field(default_factory=list)
    by_key: dict[bytes, set[Watcher]] = field(default_factory=dict)

    def add(self, watcher: Watcher) -> None:
        keys = watcher.filter.keys
        if keys is not None:
            for key in keys:
                self.by_key.setdefault(key, set()).add(watcher)
            return
        prefix = watcher.filter.prefix
        self.by_prefix.setdefault(prefix, set()).add(watcher)
        self.lengths = sorted({len(p) for p in self.by_prefix})

    def remove(self, watcher: Watcher) -> None:
        keys = watcher.filter.keys
        if keys is not None:
            for key in keys:
                found = self.by_key.get(key)
                if found is not None:
                    found.discard(watcher)
                    if not found:
                        del self.by_key[key]
            return
        prefix = watcher.filter.prefix
        found = self.by_prefix.get(prefix)
        if found is not None:
            found.discard(watcher)
            if not found:
                del self.by_prefix[prefix]
                self.lengths = sorted({len(p) for p in self.by_prefix})

    def empty(self) -> bool:
        return not self.by_prefix and not self.by_key

    def matching(self, key: bytes) -> list[Watcher]:
        found: list[Watcher] = []
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
        store: Store,
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
        self._covered: dict[int, int] = {}
        self._idle = False
        """Commits came while no watcher was attached: position and vector are stale."""
        self._spaces: dict[tuple[str, str], _Space] = {}
        self._per_principal: collections.Counter[str] = collections.Counter()
        self.open_count = 0
        self.events_sent = 0
        self.cut_count = 0
        self.relists = 0
        self._scheduled = False
        self._open: set[Watcher] = set()
        self.closing = False
        """The node is stopping: every stream ends (its watcher resumes elsewhere)."""
        self._loop: asyncio.AbstractEventLoop | None = None
        self._heartbeats: asyncio.Task[None] | None = None
        self._node_id = store.node_id

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Follow commits from now on (the store's commit listener)."""
        self._loop = loop
        self._idle = True
        self._store.on_commit(self._committed)
        self._heartbeats = loop.create_task(self._heartbeat_rounds())

    async def _heartbeat_rounds(self) -> None:
        """Four times per heartbeat interval, wake the streams that sent nothing for one."""
        interval = self.limits.heartbeat
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(interval / 4)
            quiet_since = loop.time() - interval
            for watcher in self._open:
                if watcher.attached and watcher.last_sent <= quiet_since:
                    watcher.heartbeat_due = True
                    watcher.wake()

    def _catch_up_idle(self) -> None:
        # With no watcher attached nothing is read per commit (not even the vector):
        # both are taken now, together, which is what a joining watcher needs.
        if self._idle and not self._spaces:
            self._position = max(self._position, self._store.seq)
            self._covered = self._covered_now()
            self._idle = False

    @property
    def position(self) -> int:
        """Every change at or below it has been handed to the watchers attached."""
        self._catch_up_idle()
        return self._position

    @property
    def covered(self) -> dict[int, int]:
        """This node's vector as of :attr:`position`."""
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

    def stop(self) -> None:
        """End every stream (the node is stopping); new ones are refused."""
        self.closing = True
        if self._heartbeats is not None:
            self._heartbeats.cancel()
        for watcher in self._open:
            watcher.stopping = True
            watcher.wake()

    def attach(self, watcher: Watcher) -> None:
        """Join the tail: from :attr:`position` on, matching changes are queued to it."""
        key = (watcher.kind.name, watcher.filter.space)
        self._spaces.setdefault(key, _Space()).add(watcher)
        watcher.attached = True

    def close(self, watcher: Watcher) -> None:
        """The watcher's stream ended: forget it."""
        if watcher.attached:
            key = (watcher.kind.name, watcher.filter.space)
            space = self._spaces.get(key)
            if space is not None:
                space.remove(watcher)
                if space.empty():
                    del self._spaces[key]
            watcher.attached = False
        self._open.discard(watcher)
        self.open_count -= 1
        self._per_principal[watcher.principal] -= 1
        if self._per_principal[watcher.principal] <= 0:
            del self._per_principal[watcher.principal]

    # -- the tail ------------------------------------------------------------------

    def _committed(self, seq: int) -> None:
        loop = self._loop
        if not self._spaces:  # nobody to tell (the writer's thread may call: a plain flag)
            self._idle = True
            return
        if loop is None or self._scheduled:
            return
        self._scheduled = True
        try:
            on_loop = asyncio.get_running_loop() is loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            loop.call_soon(self._dispatch)
        else:
            loop.call_soon_threadsafe(self._dispatch)

    def _dispatch(self) -> None:
        """Hand the log's new changes to the watchers (some pages; again soon if more)."""
        self._scheduled = False
        store = self._store
        if not self._spaces:  # nobody to tell: a watcher that joins catches up itself
            self._idle = True  # position and vector are brought up to date when read
            return
        covered = self._covered_now()
        head = store.seq
        for _ in range(_ROUND_PAGES):
            changes = store.changes_after(self._position, _TAIL_ROWS)
            if not changes:
                break
            self._fan_out(changes)
            self._position = changes[-1].seq
            if self._position >= head:
                break
        else:
            self._committed(head)  # more to read: let other work run first
            return
        self._position = max(self._position, head)
        if covered != self._covered:  # a new object only when it changed: streams cache its text
            self._covered = covered

    def _fan_out(self, changes: list[Change]) -> None:
        spaces = self._spaces
        kinds = list(self.kinds.values())
        node_id = self._node_id
        # A folding kind (documents): a key's changes in one round make one event,
        # its state now, read once (per variant) and offered once to each watcher.
        folded: dict[tuple[str, bytes], tuple[dict[bool, bytes | None], set[Watcher]]] = {}
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
            watchers = space.matching(kind.name_of(change))
            if not watchers:
                continue
            offered: set[Watcher] | None = None
            encoded: dict[bool, bytes | None]
            if kind.folds:
                fold = (change.ns, kind.fold_key(change))
                encoded, offered = folded.setdefault(fold, ({}, set()))
            else:
                encoded = {}
            for watcher in watchers:
                if offered is not None and watcher in offered:
                    continue
                coverage = watcher.coverage
                if coverage is not None and kind.resumed_skip(change, coverage):
                    continue
                variant = watcher.filter.include_values
                if variant not in encoded:
                    encoded[variant] = kind.live(change, watcher.filter, node_id)
                data = encoded[variant]
                if data is not None:
                    watcher.offer(change.seq, data)
                    if offered is not None:
                        offered.add(watcher)
