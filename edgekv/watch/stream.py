"""One watch stream from its start to its end: catch-up, then the live tail, as SSE.

How a stream starts, by what the client presents:

* *Nothing*: the tail from now on.
* ``snapshot``: first every matching live key, by key, as it stood at the
  hub's position ``S0`` when the stream began (rows changed since have moved
  past ``S0`` and come from the tail instead, so every key comes once, in a
  state no older than the snapshot's), then the tail.
* *A token of this node* (same incarnation): the changes after its seq, then
  the tail. Exact: nothing sent twice.
* *A token of another node*: every matching key whose state here its vector
  does not cover -- deletes and expiries included -- by key as at ``S0``,
  then the changes after ``S0`` it does not cover, then the tail (which
  skips what it covers too). The key may have changed several times since
  the watcher last heard of it; it gets the newest state only: intermediate
  states are *folded*. A state the watcher already had may come again (one
  relayed to the other node ahead of its origin's mark), or one older than
  it had (this node is behind the other): events carry each key's version,
  so a client keeps the newer (the Python client does).
* *A token this node cannot serve* -- tombstone collection here removed a
  delete the token does not cover, or collected past its seq -- gets a
  ``relist`` event and the stream ends: the client must list again
  (``snapshot=true``), never silently miss a delete.

Event ids are resume tokens (:mod:`edgekv_replication.watch_tokens`). Events
of a snapshot or of a cross-node scan carry no id (a half-done scan cannot be
resumed; the token from before it still can); the ``ready`` event that ends
the catch-up carries the token of everything sent. An idle stream gets a
heartbeat comment every ``watch_heartbeat`` seconds, with an ``id`` line once
the tail has moved on, so a watcher of a quiet prefix resumes from close by.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping

from edgekv.store.store import Store
from edgekv.watch.frames import Position, Sink, Transferable, frame
from edgekv.watch.hub import Watcher, WatchHub
from edgekv.watch.kinds import PAGE_ROWS, Coverage, Event
from edgekv_replication.bookmarks import Bookmark
from edgekv_replication.watch_tokens import (
    WatchToken,
    below_any,
    covers,
    encode_token,
    merged,
    token_head,
)

_CUT_WRITE_SECONDS = 1.0
_TAKE_CHECK_SECONDS = 1.0
"""How often a catch-up waiting for its client looks whether it took anything."""


class _Stalled(Exception):
    """The client took nothing of the catch-up for a heartbeat interval (or the node stops)."""


class WatchStream:
    """Serves one watcher: what to send first, then the tail (written by the hub), its end."""

    def __init__(
        self, hub: WatchHub, store: Store, incarnation: int, watcher: Watcher, sink: Sink
    ) -> None:
        """Send through ``sink`` (the stream's connection)."""
        self._hub = hub
        self._store = store
        self._incarnation = incarnation
        self._watcher = watcher
        self._sink = sink
        self._node_id = store.node_id
        self._id_head = f"id: {token_head(self._node_id, incarnation)}".encode()

    def _token(self, position: Position, seq: int | None = None) -> str:
        """The token at ``position`` (or at ``seq`` with its vector: an event inside a batch)."""
        at = position.seq if seq is None else seq
        return encode_token(self._node_id, self._incarnation, at, position.text)

    async def run(self, token: WatchToken | None, snapshot: bool) -> None:
        """Serve the stream until the client goes, the watcher is cut or must re-list."""
        try:
            await self._run(token, snapshot)
        except _Stalled:
            # What was written is not being taken: a closing frame would wait behind it.
            # The connection goes; the client resumes from its last id.
            if not self._hub.closing:
                self._hub.cut_count += 1
            self._sink.abort()

    async def _run(self, token: WatchToken | None, snapshot: bool) -> None:
        hub, watcher = self._hub, self._watcher
        reads = self._store.watch_reads
        await hub.settled()  # every write answered before the stream began is in its catch-up
        if self._issued_here(token):
            assert token is not None
            if token.seq < self._store.purged_seq():
                await self._relist("tombstones after this token were collected here")
                return
            await self._catch_up(Position.of(token.seq, dict(token.covered)), None)
            return
        if token is not None:
            if below_any(token.covered, reads.collected()):
                await self._relist("deletes this token does not cover were collected here")
                return
            coverage = Coverage(token.covered, self._floor(token.covered))
            watcher.coverage = coverage
            start = Position.of(hub.position, merged(token.covered, hub.covered))
            await self._scan(start.seq, coverage)
            await self._catch_up(start, coverage)
            return
        seq, now = hub.position, hub.covered_text
        start = Position(seq, now.vector, now, now)
        if snapshot:
            await self._scan(start.seq, None)
        await self._catch_up(start, None)

    def _issued_here(self, token: WatchToken | None) -> bool:
        """Whether ``token`` is a position in this node's log as it is (same incarnation)."""
        return (
            token is not None
            and token.node == self._node_id
            and token.incarnation == self._incarnation
            and token.seq <= self._hub.position
        )

    def _floor(self, vector: Mapping[int, int]) -> int:
        """The least hlc ``vector`` covers over every origin this node knows (-1: one lacks)."""
        known = {self._node_id} | {member[0] for member in self._store.members()}
        if not known <= set(vector):
            return -1
        return min(vector[origin] for origin in known)

    async def _scan(self, upto: int, coverage: Coverage | None) -> None:
        watcher = self._watcher
        after: bytes | None = None
        while True:
            events, after = watcher.kind.scan(
                watcher.filter, after, upto, PAGE_ROWS, self._node_id, coverage
            )
            if events:
                await self._send([frame("change", e.data, None) for e in events], len(events))
            if after is None:
                return

    async def _catch_up(self, start: Position, coverage: Coverage | None) -> None:
        """Changes after ``start`` up to the tail's position, then join the tail and follow it."""
        hub, watcher = self._hub, self._watcher
        position = start
        while True:
            upto = hub.position
            if position.seq >= upto:
                break
            events, end, _ = watcher.kind.after(
                watcher.filter, position.seq, upto, PAGE_ROWS, self._node_id
            )
            events = [e for e in events if not _covered(e, coverage)]
            frames = [frame("change", e.data, self._token(position, e.seq)) for e in events]
            position.seq = end
            if frames:
                await self._send(frames, len(frames))
        # No await from reading up to the hub's position to joining it: nothing falls between.
        position.reach(hub.position, hub.covered_text)
        ready = {"bookmark": Bookmark(self._node_id, position.seq, 0).encode()}
        if not self._sink.send(frame("ready", json.dumps(ready).encode(), self._token(position))):
            return  # the client went
        hub.attach(watcher, position, self._sink, self._id_head)
        await self._follow()

    async def _follow(self) -> None:
        """While the hub writes the tail: wait for the end, and say why when there is one."""
        watcher = self._watcher
        await watcher.wait_end()
        if watcher.handed_over and isinstance(self._sink, Transferable):
            # Served by the fan-out process until now: what it had not sent goes first.
            self._sink.take_back(None if watcher.gone else watcher.unsent)
            if watcher.unsent is None:
                return
        if watcher.gone:
            return
        if watcher.stopping:
            await self._send_cut("the node is stopping: resume at another PoP")
        else:
            await self._send_cut("the watcher fell behind: resume from the last event id")

    async def _send(self, frames: list[bytes], events: int) -> None:
        """Frames of the catch-up, at the pace the client reads them."""
        if self._hub.closing:
            await self._send_cut("the node is stopping: resume at another PoP")
            raise ConnectionResetError("the node is stopping")
        if not self._sink.send(b"".join(frames)):
            raise ConnectionResetError("the watch client went")
        self._hub.events_sent += events
        await self._taken()

    async def _taken(self) -> None:
        """Until the client has taken most of what was written (aiohttp's drain).

        A page at a time, so a catch-up holds one page per watcher. A client
        that takes nothing of it for a heartbeat interval has stalled, as has
        any client once the node is stopping: :class:`_Stalled`.
        """
        sink, hub = self._sink, self._hub
        loop = asyncio.get_running_loop()
        # Waited on, never cancelled: aiohttp's drain waiter is shared and would stay
        # cancelled. The connection's end (abort) settles it.
        drained = asyncio.ensure_future(sink.drained())
        drained.add_done_callback(_retrieve)
        pending, progress_at = sink.pending(), loop.time()
        while True:
            done, _ = await asyncio.wait({drained}, timeout=_TAKE_CHECK_SECONDS)
            if done:
                drained.result()  # raises if the client went meanwhile
                return
            now = sink.pending()
            if now < pending:
                pending, progress_at = now, loop.time()
            elif hub.closing or loop.time() - progress_at >= hub.limits.heartbeat:
                raise _Stalled

    async def _send_cut(self, reason: str) -> None:
        data = json.dumps({"reason": reason})
        # Past the buffer's bound, by one small frame: the client learns why if it reads on.
        self._sink.send(frame("cut", data.encode(), None))
        try:
            await asyncio.wait_for(self._sink.drained(), _CUT_WRITE_SECONDS)
        except TimeoutError:
            self._sink.abort()

    async def _relist(self, reason: str) -> None:
        self._hub.relists += 1
        data = json.dumps({"reason": reason + ": list again (snapshot=true)"})
        await self._send([frame("relist", data.encode(), None)], 0)


def _retrieve(task: asyncio.Future[None]) -> None:
    """Consume the outcome of a drain nobody awaits any more (a stream that ended)."""
    if not task.cancelled():
        task.exception()


def _covered(event: Event, coverage: Coverage | None) -> bool:
    return coverage is not None and covers(coverage.vector, event.hlc, event.node)
