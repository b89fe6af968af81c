"""The test proxy itself: it relays, cuts, heals, closes without leaking sockets, and
shapes links (delay, jitter, bandwidth) with the bytes intact."""

from __future__ import annotations

import contextlib
import gc
import random
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from testkit.proxy import TcpProxy
from testkit.waiting import wait_for
from testkit.wan import LinkShape


@pytest.fixture
def echo_port() -> Iterator[int]:
    """A server on loopback that echoes one message per connection, then closes it."""
    server = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, contextlib.suppress(OSError):
                conn.sendall(conn.recv(1024))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.shutdown(socket.SHUT_RDWR)  # wakes the blocked accept (close alone does not)
    server.close()
    thread.join(10)


def _echo(port: int, message: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(message)
        return conn.recv(1024)


def test_relays_until_cut_and_again_after_heal(echo_port: int) -> None:
    proxy = TcpProxy(echo_port)
    try:
        assert _echo(proxy.port, b"one") == b"one"
        proxy.cut()
        with contextlib.suppress(OSError):
            assert _echo(proxy.port, b"two") == b""  # accepted, then closed unanswered
        proxy.heal()
        assert _echo(proxy.port, b"three") == b"three"
    finally:
        proxy.close()


def _connect_until(port: int, stop: threading.Event, attempts: list[int]) -> None:
    while not stop.is_set():
        attempts.append(1)
        with contextlib.suppress(OSError):
            _echo(port, b"x")


def test_closing_while_connections_arrive_leaves_no_socket_open(
    echo_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An unclosed socket is reported when it is collected, through this hook.
    leaks: list[Any] = []
    monkeypatch.setattr(sys, "unraisablehook", leaks.append)
    for _ in range(10):
        proxy = TcpProxy(echo_port)
        attempts: list[int] = []
        stop = threading.Event()
        clients = [
            threading.Thread(target=_connect_until, args=(proxy.port, stop, attempts))
            for _ in range(4)
        ]
        for client in clients:
            client.start()

        def arriving(attempts: list[int] = attempts) -> bool:
            return len(attempts) >= 40

        wait_for(arriving, what="connections arriving")
        proxy.close()
        stop.set()
        for client in clients:
            client.join(10)
    gc.collect()
    assert [str(leak.exc_value) for leak in leaks] == []


@pytest.fixture
def stream_echo_port() -> Iterator[int]:
    """A server on loopback that echoes every byte back on each connection until it closes."""
    server = socket.create_server(("127.0.0.1", 0))

    def echo(conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            while data := conn.recv(65536):
                conn.sendall(data)

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=echo, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    server.shutdown(socket.SHUT_RDWR)
    server.close()
    thread.join(10)


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    parts: list[bytes] = []
    while size:
        part = conn.recv(min(size, 65536))
        assert part, "connection closed early"
        parts.append(part)
        size -= len(part)
    return b"".join(parts)


def _round_trips_ms(port: int, count: int) -> list[float]:
    """Ping-pong ``count`` one-byte messages over one connection; each round trip's time."""
    times = []
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for _ in range(count):
            started = time.perf_counter()
            conn.sendall(b"p")
            assert _recv_exactly(conn, 1) == b"p"
            times.append((time.perf_counter() - started) * 1000)
    return times


def test_delay_sets_the_round_trip_time(stream_echo_port: int) -> None:
    direct = statistics.median(_round_trips_ms(stream_echo_port, 5))
    proxy = TcpProxy(stream_echo_port, LinkShape(delay_ms=20))  # 40 ms RTT
    try:
        times = _round_trips_ms(proxy.port, 8)
    finally:
        proxy.close()
    assert direct < 20
    assert min(times) >= 40  # both directions delayed, every time
    # A shared machine adds scheduling noise, never less delay: the bound is loose.
    assert statistics.median(times) < 40 + 60


def test_jitter_keeps_the_bytes_in_order_and_the_rtt_in_its_band(stream_echo_port: int) -> None:
    proxy = TcpProxy(stream_echo_port, LinkShape(delay_ms=10, jitter_ms=10), seed=1)
    try:
        times = _round_trips_ms(proxy.port, 12)
        payload = random.Random(2).randbytes(300_000)
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
            sender = threading.Thread(target=conn.sendall, args=(payload,))
            sender.start()
            echoed = _recv_exactly(conn, len(payload))
            sender.join(10)
    finally:
        proxy.close()
    assert echoed == payload
    assert min(times) >= 20
    assert max(times) > min(times)  # jitter: not every round trip alike
    assert statistics.median(times) < 40 + 60


def test_latency_does_not_serialise_throughput(stream_echo_port: int) -> None:
    # 50 messages sent back to back over a 200 ms RTT link arrive about one RTT
    # later, not 50 RTTs: every chunk is delayed from its own arrival.
    proxy = TcpProxy(stream_echo_port, LinkShape(delay_ms=100))
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started = time.perf_counter()
            for i in range(50):
                conn.sendall(b"%03d" % i)
                time.sleep(0.002)  # separate chunks, as separate writes of a peer stream
            echoed = _recv_exactly(conn, 150)
            elapsed = time.perf_counter() - started
    finally:
        proxy.close()
    assert echoed == b"".join(b"%03d" % i for i in range(50))
    assert 0.2 <= elapsed < 1.0


def test_bandwidth_limit_paces_the_bytes(stream_echo_port: int) -> None:
    # 256 KiB each way through a 1 MiB/s link with a 16 KiB bucket: at least
    # (256 - 16) KiB / 1 MiB/s = 0.23 s for the echo to come back whole.
    shape = LinkShape(bytes_per_second=1024 * 1024, burst_bytes=16 * 1024)
    proxy = TcpProxy(stream_echo_port, shape)
    payload = random.Random(3).randbytes(256 * 1024)
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
            started = time.perf_counter()
            sender = threading.Thread(target=conn.sendall, args=(payload,))
            sender.start()
            echoed = _recv_exactly(conn, len(payload))
            elapsed = time.perf_counter() - started
            sender.join(10)
    finally:
        proxy.close()
    assert echoed == payload
    assert elapsed >= 0.23
    assert elapsed < 3.0


def test_shape_changes_apply_to_open_connections(stream_echo_port: int) -> None:
    proxy = TcpProxy(stream_echo_port, LinkShape(delay_ms=30))
    try:
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=10) as conn:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            conn.sendall(b"a")
            assert _recv_exactly(conn, 1) == b"a"
            proxy.shape = LinkShape()
            started = time.perf_counter()
            conn.sendall(b"b")
            assert _recv_exactly(conn, 1) == b"b"
            unshaped_ms = (time.perf_counter() - started) * 1000
    finally:
        proxy.close()
    assert unshaped_ms < 30
