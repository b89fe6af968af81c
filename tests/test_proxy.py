"""The test proxy itself: it relays, cuts, heals, and closes without leaking sockets."""

from __future__ import annotations

import contextlib
import gc
import socket
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from testkit.proxy import TcpProxy
from testkit.waiting import wait_for


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
