"""The service loop of pull streams served to peers, apart from the WebSocket itself.

What a stream says and when is the sans-IO
:class:`~edgekv_replication.session.ServeSession` (the rules the simulated
network in the tests runs too): admission, the flow-control window, what goes
in each batch, deferrals. Here the node drives it: :func:`admit` records the
admitted puller, :func:`take` what it reports, and :func:`serve` sends its
member list and batches of the change log (the store's
:class:`~edgekv.store.changelog.ChangeLog`, the session's ``Log``), waiting
for new commits once caught up and sending a heartbeat when idle. The route
``GET /v1/peer/stream`` and its WebSocket I/O are
:mod:`edgekv.http.peer_stream`: it sends through a :class:`StreamOutlet`.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Protocol

from edgekv.peers.replicator import Replicator
from edgekv.tasks import wait_event
from edgekv_replication.envelope import (
    MAX_MESSAGE_BYTES,
    Ack,
    Batch,
    Defer,
    Hello,
    Members,
    Progress,
    encode,
)
from edgekv_replication.log import PAGE_BYTES
from edgekv_replication.session import RESYNC_REQUIRED, WITHDRAWN, Refusal, ServeSession

log = logging.getLogger(__name__)

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


@dataclass
class Served:
    """One stream served: its session, and an event set as the puller reports progress."""

    session: ServeSession
    progressed: asyncio.Event = field(default_factory=asyncio.Event)


def open_stream(
    replicator: Replicator, regions: bool, relay_marks: bool = False
) -> tuple[Served, bytes]:
    """A new stream's session, and its first message (the Welcome), encoded.

    ``regions``: the puller announced it reads region fields; a puller of the
    previous version does not, and gets every message in its form.
    ``relay_marks``: it reads relayed marks (``Batch.relayed``).
    """
    session = ServeSession(replicator.identity, regions=regions, relay_marks=relay_marks)
    welcome = session.welcome(replicator.store.seq)
    return Served(session), encode(welcome, regions=regions)


async def admit(replicator: Replicator, served: Served, hello: Hello) -> int | Refusal:
    """The cursor to serve the puller of ``hello`` from, or why it is refused.

    An admitted puller is acknowledged up to its cursor and becomes a member
    this node pulls from in turn.
    """
    store = replicator.store
    cursor = served.session.on_hello(
        hello, store.seq, store.must_resync, replicator.membership.is_removed(hello.node)
    )
    if isinstance(cursor, Refusal):
        if cursor.code == RESYNC_REQUIRED:
            # Tombstones it never saw are gone here, so resuming could resurrect their keys.
            log.warning("peer %x is behind collected tombstones; it must re-sync", hello.node)
        return cursor
    await replicator.record_ack(hello.node, cursor)
    await replicator.membership.introduce(hello.node, hello.url, hello.name, hello.region)
    replicator.ensure_pullers()
    return cursor


async def take(replicator: Replicator, served: Served, message: Ack | Defer | Progress) -> None:
    """Record one of the puller's acknowledgements, deferrals or progress reports."""
    acked = served.session.on_message(message)
    if acked is not None:
        await replicator.record_ack(served.session.peer, acked)
    elif isinstance(message, Progress):
        served.progressed.set()


async def serve(
    outlet: StreamOutlet, replicator: Replicator, served: Served, closed: asyncio.Future[None]
) -> None:
    """Send the puller everything after its cursor, then new commits, until the stream ends.

    ``closed`` completes when the puller closes its side; what it reports
    meanwhile (through :func:`take`) paces the sending.
    """
    session = served.session
    peer = session.peer
    sent_members = None
    label = f"{peer:016x}"
    sent, batches = replicator.metrics.sent.labels(label), replicator.metrics.batches.labels(label)
    while not closed.done() and not outlet.closed and not replicator.stopping:
        # A send below the socket's high-water mark returns without suspending:
        # let the puller's Progress and Defer in before each page.
        await asyncio.sleep(0)
        if replicator.relays.withdrawn(session.relayed_sent):
            # Relayed marks went out of an origin this node no longer vouches for
            # (its own way to it failed): the puller must stop deferring it elsewhere,
            # or the two may each wait on the other for that origin's writes.
            await outlet.close(WITHDRAWN, b"no longer relays an origin")
            return
        if not session.may_send():
            served.progressed.clear()
            if not await wait_event(served.progressed, HEARTBEAT_SECONDS):
                # The puller is still applying the window: a heartbeat meanwhile, or it
                # takes the silence for a dead link (its receive timeout) and drops a
                # live stream -- and with it restarts every stream deferring this node.
                await _send_heartbeat(outlet, replicator, session)
            continue
        members = replicator.membership.members()
        if members != sent_members:
            await outlet.send(encode(Members(tuple(members)), regions=session.regions))
            sent_members = members
        data = _next_message(replicator, session)
        if data is not None:
            batch, encoded = data
            del data  # only the encoded message stays alive while it is sent
            if len(encoded) > MAX_MESSAGE_BYTES:
                await _refuse_oversized(outlet, peer, session.cursor, len(encoded))
                return
            count = len(batch.changes)
            session.sent(batch)
            del batch
            await outlet.send(encoded)
            del encoded
            sent.inc(count)
            if count:
                batches.inc()
            continue
        if not await replicator.feed.wait_beyond(session.cursor, HEARTBEAT_SECONDS):
            await _send_heartbeat(outlet, replicator, session)


async def _send_heartbeat(
    outlet: StreamOutlet, replicator: Replicator, session: ServeSession
) -> None:
    """An empty batch at the cursor: the stream is alive, and the mark of what was sent."""
    cursor = session.cursor
    mark = replicator.store.origin_marks.at(cursor)
    held = replicator.relays.relayed_at
    await outlet.send(encode(session.heartbeat(replicator.wall_ms(), mark, held)))


def _next_message(replicator: Replicator, session: ServeSession) -> tuple[Batch, bytes] | None:
    """The session's next batch and its encoding; None when there is nothing after the cursor.

    A page is bounded in rows and in bytes (:data:`PAGE_BYTES` plus one
    change): with values up to 25 MiB it is at most about 33 MiB, under the
    64 MiB a peer message may hold.
    """
    store = replicator.store
    head = store.seq  # read before the page: every change up to head is visible to it
    marks, held = store.origin_marks.at, replicator.relays.relayed_at
    batch = session.next_batch(store.log, head, replicator.wall_ms(), marks, PAGE_BYTES, held)
    if batch is None:
        return None
    encoded = encode(batch)
    if len(encoded) > MAX_MESSAGE_BYTES and len(batch.changes) > 1:
        # Only with max_value_bytes raised near the limit: one change a page then.
        del batch, encoded
        retried = session.next_batch(store.log, head, replicator.wall_ms(), marks, 0, held)
        assert retried is not None  # the same stretch of the log, one change of it
        batch, encoded = retried, encode(retried)
    return batch, encoded


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
