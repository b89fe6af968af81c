"""The serving side of pull streams, apart from the WebSocket itself.

The server speaks first (:func:`welcome`), reads the puller's Hello
(:func:`admit` decides whether and where the stream resumes), then sends its
member list and batches of "changes with seq > cursor" in pages; once caught
up it waits for new commits and sends them as they land, with an empty batch
as heartbeat when idle (:func:`serve`). The route ``GET /v1/peer/stream`` and
its WebSocket I/O are :mod:`edgekv.http.peer_stream`: it sends through a
:class:`StreamOutlet` and hands what the puller says to :func:`take`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

from edgekv.peers.replicator import Replicator
from edgekv.peers.wire import RESYNC_REQUIRED
from edgekv.store.changelog import PAGE_BYTES
from edgekv.tasks import wait_event
from edgekv_replication.envelope import (
    MAX_MESSAGE_BYTES,
    Ack,
    Batch,
    Defer,
    Hello,
    Members,
    Progress,
    Welcome,
    encode,
)
from edgekv_replication.session import Deferral, make_batch, resume_point

log = logging.getLogger(__name__)

PAGE_SIZE = 500
IN_FLIGHT = 32
"""Batches sent beyond the puller's reported progress (once it reports any):
twice what a puller applies at once, so that the next batches are on their
way while it commits."""
FIRST_IN_FLIGHT = 4
"""The window a stream starts with, doubled with each progress report up to
:data:`IN_FLIGHT`. A puller healed from a partition opens its streams from
every peer at once; before it can ask a relaying peer to defer an origin it
pulls directly, that peer's stream sends a window of relayed copies it then
decodes for nothing (a whole window was a sixth of a 100,000-key catch-up)."""
HEARTBEAT_SECONDS = 1.0


class StreamOutlet(Protocol):
    """Where a stream's messages go: the WebSocket of :mod:`edgekv.http.peer_stream`."""

    @property
    def closed(self) -> bool:
        """Whether the stream is closed (by either side)."""

    async def send(self, data: bytes) -> None:
        """Send one message; return once it may be followed by the next."""

    async def close(self, code: int, message: bytes) -> None:
        """Close the stream with a close code and a reason."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a stream is closed right after the puller's Hello: a close code and reason."""

    code: int
    reason: bytes


def welcome(replicator: Replicator) -> Welcome:
    """The first message of every stream: who this node is and how far its log goes."""
    me = replicator.identity
    return Welcome(me.node, me.incarnation, me.name, replicator.store.seq)


async def admit(replicator: Replicator, hello: Hello) -> int | Refusal:
    """The cursor to serve the puller of ``hello`` from, or why it is refused.

    An admitted puller is acknowledged up to its cursor and becomes a member
    this node pulls from in turn.
    """
    store = replicator.store
    if replicator.membership.is_removed(hello.node):
        return Refusal(4403, b"removed from the cluster")
    cursor = resume_point(hello, replicator.identity, store.seq)
    if store.must_resync(hello.node, cursor):
        # Tombstones it never saw are gone here, so resuming could resurrect their keys.
        log.warning("peer %x is behind collected tombstones; it must re-sync", hello.node)
        return Refusal(RESYNC_REQUIRED, b"resync required")
    await store.record_ack(hello.node, cursor)
    await replicator.membership.introduce(hello.node, hello.url, hello.name)
    replicator.ensure_pullers()
    return cursor


@dataclass
class Served:
    """What the puller told the server about one stream."""

    deferral: Deferral = field(default_factory=Deferral)
    applied: int | None = None
    """The newest Progress (None: the puller reports none; no flow control)."""
    progressed: asyncio.Event = field(default_factory=asyncio.Event)


async def take(
    replicator: Replicator, peer: int, served: Served, message: Ack | Defer | Progress
) -> None:
    """Record one of the puller's acknowledgements, deferrals or progress reports."""
    if isinstance(message, Progress):
        served.applied = max(served.applied or 0, message.applied)
        served.progressed.set()
    elif isinstance(message, Ack):
        await replicator.store.record_ack(peer, message.cursor)
    else:
        served.deferral.update(message.marks)


async def serve(
    outlet: StreamOutlet,
    replicator: Replicator,
    cursor: int,
    peer: int,
    echo: bool,
    closed: asyncio.Future[None],
    served: Served,
) -> None:
    """Send the puller everything after ``cursor``, then new commits, until the stream ends.

    ``closed`` completes when the puller closes its side; ``served`` is what it
    reported meanwhile (through :func:`take`), which paces the sending.
    """
    store = replicator.store
    sent_members = None
    label = f"{peer:016x}"
    sent, batches = replicator.metrics.sent.labels(label), replicator.metrics.batches.labels(label)
    marks_seen: dict[int, int] = {}
    deferral = served.deferral
    in_flight: deque[int] = deque()  # where each batch sent past the puller's progress ends
    window = FIRST_IN_FLIGHT
    while not closed.done() and not outlet.closed and not replicator.stopping:
        # A send below the socket's high-water mark returns without suspending:
        # let the puller's Progress and Defer in before each page.
        await asyncio.sleep(0)
        if served.applied is not None:
            if in_flight and in_flight[0] <= served.applied:
                window = min(IN_FLIGHT, 2 * window)
                while in_flight and in_flight[0] <= served.applied:
                    in_flight.popleft()
            if len(in_flight) >= window:
                served.progressed.clear()
                await wait_event(served.progressed, HEARTBEAT_SECONDS)
                continue
        members = replicator.membership.members()
        if members != sent_members:
            await outlet.send(encode(Members(tuple(members))))
            sent_members = members
        if deferral.marks != marks_seen:
            # Newer marks may cover deferred changes: the puller may save further.
            store.advance_window(deferral, cursor)
            marks_seen = dict(deferral.marks)
        page = _next_page(replicator, cursor, peer, echo, deferral, PAGE_BYTES)
        if page is not None and len(page[0]) > MAX_MESSAGE_BYTES and page[1] > 1:
            # Only with max_value_bytes raised near the limit: one change a page then.
            page = _next_page(replicator, cursor, peer, echo, deferral, 0)
        if page is not None:
            data, count, upto = page
            del page  # only the encoded message stays alive while it is sent
            if len(data) > MAX_MESSAGE_BYTES:
                await _refuse_oversized(outlet, peer, cursor, len(data))
                return
            await outlet.send(data)
            del data
            sent.inc(count)
            if count:
                batches.inc()
            cursor = upto
            in_flight.append(cursor)
            continue
        if not await replicator.feed.wait_beyond(cursor, HEARTBEAT_SECONDS):
            mark = store.origin_marks.at(cursor)
            heartbeat = make_batch([], cursor, cursor, replicator.wall_ms(), None, deferral, mark)
            await outlet.send(encode(heartbeat))


def _next_page(
    replicator: Replicator,
    cursor: int,
    peer: int,
    echo: bool,
    deferral: Deferral,
    max_bytes: int,
) -> tuple[bytes, int, int] | None:
    """The next batch after ``cursor``, encoded: (message, changes in it, upto).

    None when there is nothing after ``cursor``. A page is bounded in rows
    (:data:`PAGE_SIZE`) and in bytes (``max_bytes`` plus one change): with
    :data:`~edgekv.store.changelog.PAGE_BYTES` and values up to 25 MiB it is
    at most about 33 MiB, under the 64 MiB a peer message may hold.
    """
    store = replicator.store
    head = store.seq  # read before the query: every change up to head is visible to it
    if echo:
        page = store.changes_after(cursor, PAGE_SIZE, max_bytes)
        end = page[-1].seq if page else cursor
        changes = deferral.split(page)
    else:
        # The puller's own writes would be no-ops there: they stay in SQLite.
        changes, end = store.page_after(cursor, PAGE_SIZE, peer, head, deferral, max_bytes)
    if end <= cursor and head <= cursor:
        return None
    # A page of nothing but gaps or left-out rows still moves the cursor.
    upto = end if end > cursor else head
    batch = Batch(
        cursor,
        upto,
        tuple(changes),
        replicator.wall_ms(),
        deferral.durable(upto),
        store.origin_marks.at(upto),
    )
    return encode(batch), len(changes), upto


async def _refuse_oversized(outlet: StreamOutlet, peer: int, cursor: int, size: int) -> None:
    """Close a stream whose next page cannot be sent: one change is over the message limit.

    Only a node configured with ``max_value_bytes`` near the 64 MiB message
    limit can hold such a change; the puller would refuse it (close code
    1009) and retry for ever, so the stream is closed here, saying why.
    """
    log.error(
        "cannot send the change after seq %d to peer %x: its page is %d bytes, more than "
        "a peer message may hold (%d); lower max_value_bytes",
        cursor,
        peer,
        size,
        MAX_MESSAGE_BYTES,
    )
    await outlet.close(1009, b"change too large for a peer message")
