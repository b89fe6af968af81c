"""The peer route ``GET /v1/peer/stream``: the WebSocket of a pull stream.

Only the I/O lives here: the cluster-secret check, the handshake's messages,
reading what the puller sends and sending without waiting for ever on a peer
that stops reading. What to send and when (admission, paging, the flow-control
window) is the sans-IO :class:`~edgekv_replication.session.ServeSession`,
driven by :mod:`edgekv.peers.stream_server`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
from dataclasses import dataclass

from aiohttp import WSMsgType, web

from edgekv.http.errors import ApiError
from edgekv.http.state import NODE
from edgekv.peers import stream_server as stream
from edgekv.peers.replicator import Replicator
from edgekv.peers.wire import FEATURES_HEADER, SECRET_HEADER
from edgekv_replication.envelope import Ack, Defer, EnvelopeError, Hello, Progress, decode
from edgekv_replication.session import Refusal, reads_regions, reads_relay_marks

log = logging.getLogger(__name__)

PULLER_MESSAGE_BYTES = 1024 * 1024
"""The largest message a puller may send (Hello, Ack, Progress, Defer: a few
bytes per member). Pages flow the other way, up to the 64 MiB message limit;
a stream need not buffer that much of what a puller sends."""
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
    elif _matches(presented, config.cluster_secret, config.cluster_secret_accept):
        return
    else:
        reason = "wrong or missing cluster secret"
    log.warning("refused peer request from %s: %s", request.remote, reason)
    raise ApiError("unauthorized", f"peer authentication failed: {reason}")


def _matches(presented: str, secret: str, also: str | None) -> bool:
    """Whether ``presented`` is the secret or the one also accepted while it rotates
    (both compared, in constant time, whichever matches)."""
    given = presented.encode()
    current = hmac.compare_digest(given, secret.encode())
    rotating = also is not None and hmac.compare_digest(given, also.encode())
    return current or rotating


async def peer_stream(request: web.Request) -> web.StreamResponse:
    """Serve one pull stream to a peer (authenticated by the app's peer-route wrapper)."""
    node = request.app[NODE]
    replicator = node.replicator
    if replicator.stopping:
        raise ApiError("unavailable", "replication is not running")
    # A short close timeout: a stopping node must not wait long for a silent peer.
    ws = web.WebSocketResponse(max_msg_size=PULLER_MESSAGE_BYTES, timeout=CLOSE_TIMEOUT)
    await ws.prepare(request)
    # A puller of the previous version announces nothing: it reads only its own form.
    announced = request.headers.get(FEATURES_HEADER, "")
    served, welcome = stream.open_stream(
        replicator, reads_regions(announced), relay_marks=reads_relay_marks(announced)
    )
    await ws.send_bytes(welcome)
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
    cursor = await stream.admit(replicator, served, hello)
    if isinstance(cursor, Refusal):
        await ws.close(code=cursor.code, message=cursor.reason)
        return ws
    closed = asyncio.ensure_future(_read_acks(ws, replicator, hello.node, served))
    replicator.streams.add(ws)
    transport = request.transport
    outlet = _Outlet(ws, transport, node.config.peer_stall_timeout)
    try:
        await stream.serve(outlet, replicator, served, closed)
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


async def _read_acks(
    ws: web.WebSocketResponse, replicator: Replicator, peer: int, served: stream.Served
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
        if isinstance(decoded, (Progress, Ack, Defer)):
            await stream.take(replicator, served, decoded)


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

    @property
    def closed(self) -> bool:
        """Whether the WebSocket is closed."""
        return self.ws.closed

    async def close(self, code: int, message: bytes) -> None:
        """Close the WebSocket with ``code`` and ``message``."""
        await self.ws.close(code=code, message=message)
