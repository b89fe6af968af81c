"""A small HTTP/1.1 keep-alive connection for the blocking client (standard library only).

Why not ``http.client``: it parses every answer's headers through the
``email`` package, which costs more per request than the node takes to
answer a cached GET. This speaks just what the node speaks: one request at a
time on a kept-alive connection, answers framed by ``Content-Length`` or
chunked, ``Connection: close`` honoured.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import ssl

_MAX_HEAD = 64 * 1024


class ProtocolError(OSError):
    """The node's answer is not HTTP/1.1 this client understands."""


class Answer(NamedTuple):
    """Status, headers (lower-case names) and body of one answer."""

    status: int
    headers: dict[str, str]
    body: bytes


class Connection:
    """One kept-alive connection to ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        timeout: float,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        """Connect now (raises OSError when the node cannot be reached)."""
        sock = socket.create_connection((host, port), timeout=timeout)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = tls.wrap_socket(sock, server_hostname=host)
        self._sock = sock
        self._host = f"{host}:{port}"
        self._buffer = bytearray()
        self.open = True

    def close(self) -> None:
        """Close the connection."""
        self.open = False
        self._sock.close()

    def dropped(self) -> bool:
        """Whether the node closed this idle connection (it would fail the next request).

        Between requests nothing may arrive; readable means closed (or broken).
        Checked before reuse, so a write after a long pause does not fail on a
        connection the node timed out.
        """
        if not self.open:
            return True
        readable, _, _ = select.select([self._sock], [], [], 0)
        return bool(readable)

    def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        """Send one request and read its whole answer."""
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self._host}"]
        lines.extend(f"{name}: {value}" for name, value in headers.items())
        if body is not None or method in ("POST", "PUT"):
            lines.append(f"Content-Length: {len(body or b'')}")
        head = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        self._sock.sendall(head + body if body else head)
        status, answer_headers = self._read_head()
        if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
            payload = b""
        elif answer_headers.get("transfer-encoding", "").lower() == "chunked":
            payload = self._read_chunked()
        elif "content-length" in answer_headers:
            payload = self._read_exactly(int(answer_headers["content-length"]))
        else:  # framed by the end of the connection
            payload = self._read_to_close()
        if answer_headers.get("connection", "").lower() == "close":
            self.close()
        return Answer(status, answer_headers, payload)

    def _fill(self) -> None:
        data = self._sock.recv(65536)
        if not data:
            self.close()
            raise ProtocolError("the node closed the connection")
        self._buffer += data

    def _read_line(self) -> bytes:
        while (end := self._buffer.find(b"\r\n")) < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise ProtocolError("answer line too long")
            self._fill()
        line = bytes(self._buffer[:end])
        del self._buffer[: end + 2]
        return line

    def _read_head(self) -> tuple[int, dict[str, str]]:
        while (end := self._buffer.find(b"\r\n\r\n")) < 0:
            if len(self._buffer) > _MAX_HEAD:
                raise ProtocolError("answer head too long")
            self._fill()
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1."):
            raise ProtocolError(f"not an HTTP/1.x answer: {lines[0][:60]!r}")
        try:
            status = int(rest[:3])
        except ValueError:
            raise ProtocolError(f"bad status line: {lines[0][:60]!r}") from None
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise ProtocolError(f"bad header line: {line[:60]!r}")
            headers[name.strip().lower()] = value.strip()
        return status, headers

    def _read_exactly(self, size: int) -> bytes:
        while len(self._buffer) < size:
            self._fill()
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    def _read_chunked(self) -> bytes:
        parts: list[bytes] = []
        while True:
            size_line = self._read_line().split(b";", 1)[0]
            try:
                size = int(size_line, 16)
            except ValueError:
                raise ProtocolError("bad chunk size") from None
            if size == 0:
                while self._read_line():  # trailers, up to the empty line
                    pass
                return b"".join(parts)
            parts.append(self._read_exactly(size))
            if self._read_line():
                raise ProtocolError("chunk not followed by CRLF")

    def _read_to_close(self) -> bytes:
        while True:
            data = self._sock.recv(65536)
            if not data:
                self.close()
                body = bytes(self._buffer)
                self._buffer.clear()
                return body
            self._buffer += data
