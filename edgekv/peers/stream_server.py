"""The serving side of pull streams: ``GET /v1/peer/stream`` (WebSocket).

The server speaks first (Welcome), reads the puller's Hello, then sends its
member list and batches of "changes with seq > cursor" in pages; once caught
up it waits for new commits and sends them as they land, with an empty batch
as heartbeat when idle.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from collections import deque
from dataclasses import dataclass, field

from aiohttp import WSMsgType, web

from edgekv.http.errors import ApiError
from edgekv.http.state import NODE
from edgekv.peers.replicator import Replicator
from edgekv.peers.wire import RESYNC_REQUIRED, SECRET_HEADER
from edgekv.tasks import wait_event
from edgekv_replication.envelope import (
    MAX_MESSAGE_BYTES,
    Ack,
    Batch,
    Defer,
    EnvelopeError,
    Hello,
    Members,
    Progress,
    Welcome,
    decode,
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
HELLO_TIMEOUT = 10.0
CLOSE_TIMEOUT = 1.0


def check_peer_secret(request: web.Request) -> None:
    """Refuse a peer request without the cluster secret (401, logged)."""
    config = request.app[NODE].config
    presented = request.headers.get(SECRET_HEADER, "")
    if config.cluster_secret is None:
        if not config.tokens:
            return  # protected mode: loopback only, every local caller trusted
        reason = "no cluster_secret is configured on this node"
    elif hmac.compare_digest(presented.encode(), config.cluster_secret.encode()):
        return
    else:
        reason = "wrong or missing cluster secret"
    log.warning("refused peer request from %s: %s", request.remote, reason)
    raise ApiError("unauthorized", f"peer authentication failed: {reason}")


async def peer_stream(request: web.Request) -> web.StreamResponse:
    """Serve one pull stream to a peer (authenticated by the app's peer-route wrapper)."""
    node = request.app[NODE]
    replicator = node.replicator
    if replicator is None or replicator.stopping:
        raise ApiError("unavailable", "replication is not running")
    # A short close timeout: a stopping node must not wait long for a silent peer.
    ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, timeout=CLOSE_TIMEOUT)
    await ws.prepare(request)
    store = node.store
    me = replicator.identity
    await ws.send_bytes(encode(Welcome(me.node, me.incarnation, me.name, store.seq)))
    try:
        message = await ws.receive(timeout=HELLO_TIMEOUT)
        if message.type != WSMsgType.BINARY:
            raise EnvelopeError("expected a binary Hello")
        hello = decode(message.data)
        if not isinstance(hello, Hello):
            raise EnvelopeError("expected Hello")
    except (EnvelopeError, TimeoutError) as exc:
        log.warning("refused peer stream from %s: %s", request.remote, exc)
        await ws.close(code=1007, message=str(exc)[:100].encode())
        return ws
    if replicator.membership.is_removed(hello.node):
        await ws.close(code=4403, message=b"removed from the cluster")
        return ws
    cursor = resume_point(hello, me, store.seq)
    if store.must_resync(hello.node, cursor):
        # Tombstones it never saw are gone here, so resuming could resurrect their keys.
        log.warning("peer %x is behind collected tombstones; it must re-sync", hello.node)
        await ws.close(code=RESYNC_REQUIRED, message=b"resync required")
        return ws
    await store.record_ack(hello.node, cursor)
    await replicator.membership.introduce(hello.node, hello.url, hello.name)
    replicator.ensure_pullers()
    served = _Served()
    closed = asyncio.ensure_future(_read_acks(ws, replicator, hello.node, served))
    replicator.streams.add(ws)
    try:
        await _stream(ws, replicator, cursor, hello.node, hello.echo, closed, served)
    except (ConnectionResetError, RuntimeError) as exc:  # the peer went away mid-send
        log.info("peer stream to %x ended: %s", hello.node, exc)
    finally:
        replicator.streams.discard(ws)
        closed.cancel()
        with contextlib.suppress(Exception):
            await ws.close()
    return ws


@dataclass
class _Served:
    """What the puller told the server about one stream."""

    deferral: Deferral = field(default_factory=Deferral)
    applied: int | None = None
    """The newest Progress (None: the puller reports none; no flow control)."""
    progressed: asyncio.Event = field(default_factory=asyncio.Event)


async def _read_acks(
    ws: web.WebSocketResponse, replicator: Replicator, peer: int, served: _Served
) -> None:
    """Record the puller's acknowledgements, deferrals and progress; returns when it closes."""
    async for message in ws:
        if message.type != WSMsgType.BINARY:
            continue
        try:
            decoded = decode(message.data)
        except EnvelopeError as exc:
            log.warning("bad message from peer %x: %s", peer, exc)
            return
        if isinstance(decoded, Progress):
            served.applied = max(served.applied or 0, decoded.applied)
            served.progressed.set()
        elif isinstance(decoded, Ack):
            await replicator.store.record_ack(peer, decoded.cursor)
        elif isinstance(decoded, Defer):
            served.deferral.update(decoded.marks)


async def _stream(
    ws: web.WebSocketResponse,
    replicator: Replicator,
    cursor: int,
    peer: int,
    echo: bool,
    closed: asyncio.Future[None],
    served: _Served,
) -> None:
    store = replicator.store
    sent_members = None
    label = f"{peer:016x}"
    sent, batches = replicator.metrics.sent.labels(label), replicator.metrics.batches.labels(label)
    marks_seen: dict[int, int] = {}
    deferral = served.deferral
    in_flight: deque[int] = deque()  # where each batch sent past the puller's progress ends
    window = FIRST_IN_FLIGHT
    while not closed.done() and not ws.closed and not replicator.stopping:
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
            await ws.send_bytes(encode(Members(tuple(members))))
            sent_members = members
        if deferral.marks != marks_seen:
            # Newer marks may cover deferred changes: the puller may save further.
            store.advance_window(deferral, cursor)
            marks_seen = dict(deferral.marks)
        head = store.seq  # read before the query: every change up to head is visible to it
        if echo:
            page = store.changes_after(cursor, PAGE_SIZE)
            end = page[-1].seq if page else cursor
            changes = deferral.split(page)
        else:
            # The puller's own writes would be no-ops there: they stay in SQLite.
            changes, end = store.page_after(cursor, PAGE_SIZE, peer, head, deferral)
        if end > cursor or head > cursor:
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
            await ws.send_bytes(encode(batch))
            sent.inc(len(batch.changes))
            if changes:
                batches.inc()
            cursor = batch.upto
            in_flight.append(cursor)
            continue
        if not await replicator.feed.wait_beyond(cursor, HEARTBEAT_SECONDS):
            mark = store.origin_marks.at(cursor)
            heartbeat = make_batch([], cursor, cursor, replicator.wall_ms(), None, deferral, mark)
            await ws.send_bytes(encode(heartbeat))
