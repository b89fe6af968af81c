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
from edgekv.store.changelog import PAGE_BYTES
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
PULLER_MESSAGE_BYTES = 1024 * 1024
"""The largest message a puller may send (Hello, Ack, Progress, Defer: a few
bytes per member). Pages flow the other way, up to the 64 MiB message limit;
a stream need not buffer that much of what a puller sends."""
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
    ws = web.WebSocketResponse(max_msg_size=PULLER_MESSAGE_BYTES, timeout=CLOSE_TIMEOUT)
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
    transport = request.transport
    outlet = _Outlet(ws, transport, node.config.peer_stall_timeout)
    try:
        await _stream(outlet, replicator, cursor, hello.node, hello.echo, closed, served)
    except StreamStalled as stalled:
        log.warning("closed the stream to peer %x at %s: %s", hello.node, request.remote, stalled)
        replicator.metrics.stalled.labels(f"{hello.node:016x}").inc()
        if transport is not None:
            transport.abort()  # a close would wait for the unsent bytes; drop them now
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


class StreamStalled(Exception):
    """The peer read nothing of what is queued for it for ``peer_stall_timeout``."""


@dataclass
class _Outlet:
    """Sends a stream's messages, bounding what waits unsent for a peer that does not read.

    aiohttp writes a message into the transport at once and then, above the
    transport's high-water mark (64 KiB), awaits a drain with no deadline:
    a peer that never reads held each stream's last page for good. Here a
    send that must wait is watched: once the peer has read nothing of what
    is queued for ``stall_seconds``, :class:`StreamStalled` is raised. While
    it waits a stream holds one message twice (the message, and its unsent
    part copied into the transport's buffer) plus the high-water mark.
    """

    ws: web.WebSocketResponse
    transport: asyncio.Transport | None
    stall_seconds: float

    async def send(self, data: bytes) -> None:
        """Send one message; raise :class:`StreamStalled` if the peer stops reading."""
        transport = self.transport
        if transport is None or (
            transport.get_write_buffer_size() + len(data) <= transport.get_write_buffer_limits()[0]
        ):
            # Below the low-water mark the write cannot pause the transport:
            # aiohttp returns without waiting (heartbeats, live changes).
            await self.ws.send_bytes(data)
            return
        sending = asyncio.ensure_future(self.ws.send_bytes(data))
        del data  # the send holds it; an exception raised here must not keep it alive
        loop = asyncio.get_running_loop()
        look_every = min(1.0, self.stall_seconds / 4)
        queued, since = -1, loop.time()
        while not (await asyncio.wait((sending,), timeout=look_every))[0]:
            if self.ws.closed:
                # Closed meanwhile (the node stops): a close would wait behind the
                # unsent bytes for as long as the peer does not read. Drop them.
                sending.cancel()
                transport.abort()
                raise ConnectionResetError("the stream closed while a message waited for the peer")
            left = transport.get_write_buffer_size()
            if queued < 0 or left < queued:  # the first look (after the write), or progress
                queued, since = left, loop.time()
            elif loop.time() - since >= self.stall_seconds:
                sending.cancel()
                raise StreamStalled(
                    f"it read none of the {left} bytes queued for it in {self.stall_seconds:g} s"
                )
        sending.result()


async def _stream(
    outlet: _Outlet,
    replicator: Replicator,
    cursor: int,
    peer: int,
    echo: bool,
    closed: asyncio.Future[None],
    served: _Served,
) -> None:
    ws = outlet.ws
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
                await _refuse_oversized(ws, peer, cursor, len(data))
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


async def _refuse_oversized(ws: web.WebSocketResponse, peer: int, cursor: int, size: int) -> None:
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
    await ws.close(code=1009, message=b"change too large for a peer message")
