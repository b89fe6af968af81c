"""HTTP over a raw socket: send exactly the bytes a test gives, read what comes back."""

from __future__ import annotations

import contextlib
import socket
from urllib.parse import urlsplit

from testkit.processes import NodeProcess
from testkit.responses import Response


def address(node: NodeProcess) -> tuple[str, int]:
    """The node's host and port."""
    parts = urlsplit(node.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def exchange(node: NodeProcess, data: bytes, timeout: float = 10.0) -> bytes:
    """Send ``data`` on a new connection and return every byte until the node closes it."""
    with socket.create_connection(address(node), timeout=timeout) as sock:
        # The node may answer and close before reading everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(data)
        received = b""
        while True:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


def parse(raw: bytes) -> Response:
    """The first response in ``raw`` (status line, headers, body of Content-Length bytes)."""
    head, separator, rest = raw.partition(b"\r\n\r\n")
    assert separator, raw[:300]
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    headers: dict[str, str] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().title()] = value.strip()
    length = int(headers.get("Content-Length", len(rest)))
    return Response(status, headers, rest[:length])


def request(node: NodeProcess, line: bytes, headers: bytes = b"", body: bytes = b"") -> Response:
    """Send one request made of a raw request line, raw header lines and a body."""
    data = line + b"\r\nHost: 127.0.0.1\r\nConnection: close\r\n" + headers
    if body:
        data += b"Content-Length: %d\r\n" % len(body)
    return parse(exchange(node, data + b"\r\n" + body))
