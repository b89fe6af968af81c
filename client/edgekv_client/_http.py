"""A small HTTP/1.1 keep-alive connection for the blocking client (standard library only).

Why not ``http.client``: it parses every answer's headers through the
``email`` package, which costs more per request than the node takes to
answer a cached GET. The framing is :mod:`edgekv_client._wire`'s, shared with
the async client; this adds the socket.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING

from edgekv_client._wire import Answer, AnswerReader, ProtocolError, fixed_head, request_bytes

if TYPE_CHECKING:
    import ssl

__all__ = ["Answer", "Connection", "ProtocolError"]


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
        self._fixed = fixed_head(host, port, {})
        self._reader = AnswerReader()
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
        sock, reader = self._sock, self._reader
        sock.sendall(request_bytes(method, target, self._fixed, headers, body))
        while (answer := reader.answer(method)) is None:
            data = sock.recv(65536)
            if not data:
                self.close()
                answer = reader.answer(method, eof=True)
                assert answer is not None  # at the end, an answer is complete or an error
                return answer
            reader.feed(data)
        if answer.headers.get("connection", "").lower() == "close":
            self.close()
        return answer
