"""Peer streams with large values and with peers that misbehave, on real processes.

Large values: a log page is bounded in bytes, so a log of values up to the
25 MiB limit replicates (before, three 22 MiB values made one 66 MiB page the
receiver refused for ever). Peers that do not read: what a stream holds unsent
is bounded, and a stream that does not drain is closed and logged. A puller
whose stream breaks on a message over the limit says so in its status.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import io
import os
import socket
import struct
import termios
import threading
import time
from collections.abc import Callable, Iterator
from urllib.parse import urlsplit

import pytest

from edgekv.peers.replicator import RECEIVE_TIMEOUT
from edgekv_replication.envelope import (
    MAX_MESSAGE_BYTES,
    Batch,
    Hello,
    Progress,
    Welcome,
    decode,
    encode,
)
from edgekv_replication.log import PAGE_BYTES
from edgekv_replication.session import FIRST_IN_FLIGHT
from testkit.processes import NodeProcess
from testkit.waiting import wait_for

SECRET = "s3cret-for-bounds"
SECRET_ARGS = ["--cluster-secret", SECRET]
MIB = 1024 * 1024
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


# -- the WebSocket wire, by hand: a peer that reads only what it chooses to ------------------


def _frame(payload: bytes, *, masked: bool) -> bytes:
    """One final binary frame (masked as a client must send it)."""
    size = len(payload)
    mask_bit = 0x80 if masked else 0
    if size < 126:
        header = bytes([0x82, mask_bit | size])
    elif size < 65536:
        header = bytes([0x82, mask_bit | 126]) + size.to_bytes(2, "big")
    else:
        header = bytes([0x82, mask_bit | 127]) + size.to_bytes(8, "big")
    if not masked:
        return header + payload
    key = os.urandom(4)
    return header + key + bytes(byte ^ key[i % 4] for i, byte in enumerate(payload))


def _read_frame(reader: io.BufferedIOBase) -> bytes:
    read = reader.read
    first, second = read(2)
    size = second & 0x7F
    if size == 126:
        size = int.from_bytes(read(2), "big")
    elif size == 127:
        size = int.from_bytes(read(8), "big")
    assert first & 0x0F == 0x2, f"expected a binary frame, got opcode {first & 0x0F}"
    return bytes(read(size))


def _read_head(reader: io.BufferedIOBase) -> list[bytes]:
    lines = []
    while (line := reader.readline()) not in (b"\r\n", b""):
        lines.append(line.rstrip())
    return lines


def open_silent_puller(node: NodeProcess, peer_id: int) -> socket.socket:
    """Open a pull stream with a real Hello, read the Welcome, then never read again.

    A small receive buffer keeps what the kernel absorbs small: the rest of
    what the node sends waits in the node.
    """
    parts = urlsplit(node.url)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    sock.connect((parts.hostname or "127.0.0.1", parts.port or 80))
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET /v1/peer/stream HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"EdgeKV-Cluster-Secret: {SECRET}\r\n\r\n"
        ).encode()
    )
    reader = sock.makefile("rb")
    head = _read_head(reader)
    assert head, "no answer to the upgrade"
    assert b" 101 " in head[0], head
    welcome = decode(_read_frame(reader))
    assert isinstance(welcome, Welcome)
    hello = Hello(peer_id, 1, f"silent-{peer_id:x}", "http://127.0.0.1:9", 0, welcome.incarnation)
    sock.sendall(_frame(encode(hello), masked=True))
    return sock


def _unread_bytes(sock: socket.socket) -> int:
    """What the kernel holds received on ``sock`` and not read yet."""
    return struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]  # type: ignore[no-any-return]


class OversizedPeer:
    """A serving peer on the real wire format whose first batch is over the message limit."""

    NODE_ID = 0x0BADBAD0

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._stream, args=(conn,), daemon=True).start()

    def _stream(self, conn: socket.socket) -> None:
        with conn:
            try:
                reader = conn.makefile("rb")
                head = _read_head(reader)
                key = next(
                    h.split(b":", 1)[1].strip()
                    for h in head
                    if h.lower().startswith(b"sec-websocket-key")
                )
                accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
                conn.sendall(
                    (
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                        f"Connection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
                    ).encode()
                )
                conn.sendall(_frame(encode(Welcome(self.NODE_ID, 7, "oversized", 1)), masked=False))
                conn.sendall(_frame(b"\0" * (MAX_MESSAGE_BYTES + 1), masked=False))
                conn.recv(1)  # until the puller closes
            except OSError:
                pass

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def oversized_peer() -> Iterator[OversizedPeer]:
    peer = OversizedPeer()
    yield peer
    peer.close()


# -- the tests ------------------------------------------------------------------------------


def _members(node: NodeProcess) -> list[dict]:  # type: ignore[type-arg]
    return node.request("GET", "/v1/cluster/status").json()["members"]  # type: ignore[no-any-return]


def test_values_near_the_limit_replicate_and_later_writes_follow(
    start_node: Callable[..., NodeProcess],
) -> None:
    a = start_node("a", SECRET_ARGS)
    values = {f"big{i}": os.urandom(22 * MIB) for i in range(3)}  # one page of them: 66 MiB
    for key, value in values.items():
        assert a.request("PUT", f"/v1/kv/blobs/{key}", body=value).status == 200
    del value
    digests = {key: hashlib.sha256(value).hexdigest() for key, value in values.items()}
    values.clear()
    b = start_node("b", [*SECRET_ARGS, "--peer", a.url])

    def digest_at_b(key: str) -> str | None:
        answer = b.request("GET", f"/v1/kv/blobs/{key}")
        return hashlib.sha256(answer.body).hexdigest() if answer.status == 200 else None

    wait_for(lambda: digest_at_b("big2") is not None, timeout=30, what="the values reach b")
    assert {key: digest_at_b(key) for key in digests} == digests
    a.request("PUT", "/v1/kv/blobs/small", body=b"after")
    wait_for(lambda: b.request("GET", "/v1/kv/blobs/small").body == b"after", what="a later write")
    assert all(m["state"] == "up" for m in _members(b))


def test_a_message_over_the_limit_shows_in_the_pullers_status_and_log(
    start_node: Callable[..., NodeProcess], oversized_peer: OversizedPeer
) -> None:
    b = start_node("b", [*SECRET_ARGS, "--peer", oversized_peer.url])
    peer_id = f"{OversizedPeer.NODE_ID:016x}"

    def last_error() -> str:
        for member in _members(b):
            if member["node_id"] == peer_id:
                return str(member["last_error"] or "")
        return ""

    wait_for(lambda: "1009" in last_error(), timeout=20, what="the reason in b's status")
    assert "limit" in last_error()
    assert any("ended: a message over the" in line for line in b.output), "".join(b.output[-20:])


SILENT_PULLERS = 10
STALL_TIMEOUT = 1.0
LOG_VALUE_BYTES = 8 * MIB
LOG_VALUES = 6  # 48 MiB: one page of it before pages were bounded in bytes
PER_STREAM_BOUND = 2 * (PAGE_BYTES + LOG_VALUE_BYTES)
"""A stalled stream holds its message and the unsent part of it (copied into the
transport's buffer); a message is a page, at most PAGE_BYTES plus one change."""


@pytest.mark.slow
def test_peers_that_never_read_hold_bounded_memory_and_are_closed(
    start_node: Callable[..., NodeProcess],
) -> None:
    a = start_node("a", [*SECRET_ARGS, "--peer-stall-timeout", str(STALL_TIMEOUT)])
    for i in range(LOG_VALUES):
        body = os.urandom(LOG_VALUE_BYTES)
        assert a.request("PUT", f"/v1/kv/blobs/v{i}", body=body).status == 200
    a.request("PUT", "/v1/kv/small/k", body=b"still served")
    baseline = a.rss_bytes()
    pullers = [open_silent_puller(a, 0x5100 + i) for i in range(SILENT_PULLERS)]
    peak = baseline
    try:
        started = time.monotonic()
        answer = a.request("GET", "/v1/kv/small/k", timeout=5)
        get_seconds = time.monotonic() - started
        assert answer.body == b"still served"

        def all_closed() -> bool:
            nonlocal peak
            peak = max(peak, a.rss_bytes())
            growth = peak - baseline
            assert growth < SILENT_PULLERS * PER_STREAM_BOUND, f"RSS grew {growth / MIB:.0f} MiB"
            closed = [line for line in a.output if "closed the stream to peer" in line]
            return len(closed) >= SILENT_PULLERS

        wait_for(all_closed, timeout=30, what="every silent stream closed")
    finally:
        for puller in pullers:
            puller.close()
    print(f"RSS {baseline / MIB:.0f} MiB -> peak {peak / MIB:.0f} MiB; GET {get_seconds:.3f} s")
    assert get_seconds < 2.0
    assert "read none of the" in next(line for line in a.output if "closed the stream" in line)
    metrics = a.request("GET", "/metrics").body.decode()
    stalled = [
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("edgekv_repl_streams_stalled_total{")
    ]
    assert sum(stalled) == SILENT_PULLERS


def test_a_node_stops_promptly_while_peers_do_not_read(
    start_node: Callable[..., NodeProcess],
) -> None:
    a = start_node("a", SECRET_ARGS)  # the default stall timeout: far longer than the stop
    for i in range(2):
        assert (
            a.request("PUT", f"/v1/kv/blobs/v{i}", body=os.urandom(LOG_VALUE_BYTES)).status == 200
        )
    pullers = [open_silent_puller(a, 0x5200 + i) for i in range(3)]
    try:
        wait_for(
            lambda: all(_unread_bytes(puller) >= 64 * 1024 for puller in pullers),
            what="each stream has sent more than its puller's buffer holds",
        )
        started = time.monotonic()
        assert a.stop(timeout=15) == 0
        assert time.monotonic() - started < 5
    finally:
        for puller in pullers:
            puller.close()


def test_a_stream_waiting_for_the_pullers_progress_still_sends_heartbeats(
    start_node: Callable[..., NodeProcess],
) -> None:
    """A puller still applying what it got (no Progress yet) keeps hearing from the server.

    The server sends a fresh stream a window of pages (FIRST_IN_FLIGHT) and
    then waits for the puller's Progress. It used to wait in silence: a
    puller whose applying took longer than its receive timeout (5 s; a
    starved machine, a writer behind 47 streams) dropped a live stream, and
    each drop restarted every stream deferring that peer. Heartbeats go on
    while it waits.
    """
    a = start_node("a", SECRET_ARGS)
    pages = FIRST_IN_FLIGHT + 1  # a page ends at the change that reaches PAGE_BYTES
    for i in range(pages):
        body = os.urandom(PAGE_BYTES)
        assert a.request("PUT", f"/v1/kv/blobs/v{i}", body=body).status == 200
    puller = open_silent_puller(a, 0x5300)
    try:
        # Applied up to its cursor (0), as a puller reports first: the window applies.
        puller.sendall(_frame(encode(Progress(0)), masked=True))
        puller.settimeout(RECEIVE_TIMEOUT)  # the deadline a real puller gives a live stream
        reader = puller.makefile("rb")
        batches: list[Batch] = []
        while len(batches) < FIRST_IN_FLIGHT + 1:
            message = decode(_read_frame(reader))
            if isinstance(message, Batch):  # the member list comes first
                batches.append(message)
        window, heartbeat = batches[:FIRST_IN_FLIGHT], batches[-1]
        assert all(batch.changes for batch in window)
        # Never reported as applied: the rest of the log waits, the stream goes on.
        assert heartbeat.changes == ()
        assert heartbeat.after == heartbeat.upto == window[-1].upto
    finally:
        puller.close()
