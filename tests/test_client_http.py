"""The blocking client's HTTP/1.1 framing, against canned answers from a real socket."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from edgekv_client._http import Connection, ProtocolError


def serve(answers: list[bytes]) -> tuple[int, threading.Thread]:
    """A one-connection server that answers each request with the next canned bytes."""
    server = socket.create_server(("127.0.0.1", 0))

    def run() -> None:
        conn, _ = server.accept()
        with conn, server:
            for answer in answers:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    data += chunk
                conn.sendall(answer)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


def test_content_length_chunked_and_connection_close() -> None:
    port, thread = serve(
        [
            b'HTTP/1.1 200 OK\r\nContent-Length: 5\r\nETag: "v"\r\n\r\nhello',
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n2;ext=1\r\nde\r\n0\r\n\r\n",
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
        ]
    )
    conn = Connection("127.0.0.1", port, timeout=5)
    first = conn.request("GET", "/a", {}, None)
    assert (first.status, first.body, first.headers["etag"]) == (200, b"hello", '"v"')
    assert conn.request("GET", "/b", {}, None).body == b"abcde"
    last = conn.request("PUT", "/c", {"X": "1"}, b"body")
    assert (last.status, last.body) == (404, b"{}")
    assert not conn.open, "Connection: close is honoured"
    conn.close()
    thread.join(5)


def test_garbage_and_early_close_are_protocol_errors() -> None:
    port, thread = serve([b"SMTP ready\r\n\r\n"])
    conn = Connection("127.0.0.1", port, timeout=5)
    with pytest.raises(ProtocolError, match="not an HTTP"):
        conn.request("GET", "/", {}, None)
    conn.close()
    thread.join(5)
    port, thread = serve([b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"])
    conn = Connection("127.0.0.1", port, timeout=5)
    with pytest.raises(ProtocolError, match="closed"):
        conn.request("GET", "/", {}, None)
    assert not conn.open
    thread.join(5)


def test_a_connection_the_server_closed_is_noticed_before_reuse() -> None:
    port, thread = serve([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"])
    conn = Connection("127.0.0.1", port, timeout=5)
    assert conn.request("GET", "/", {}, None).body == b"ok"
    thread.join(5)  # the server has closed its side
    deadline = time.monotonic() + 5
    while not conn.dropped():  # the FIN may take a moment to arrive
        assert time.monotonic() < deadline
    conn.close()
