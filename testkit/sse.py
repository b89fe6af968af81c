"""A raw Server-Sent Events reader for tests: what a node sends, byte for byte, parsed.

The client's watch drops repeats and reconnects by itself; tests of the node's
own guarantees read the stream with this instead.
"""

from __future__ import annotations

import http.client
import json
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from edgekv_client._watch import SseParser


@dataclass
class SseBlock:
    """One block of a stream: its event type (``id`` for an id-only heartbeat), data, id."""

    type: str
    data: str
    id: str | None

    def json(self) -> Any:
        return json.loads(self.data)


class SseStream:
    """One watch stream opened on a node, read block by block."""

    def __init__(
        self,
        url: str,
        path: str,
        token: str | None = None,
        headers: dict[str, str] | None = None,
        timeout: float = 30.0,
        receive_buffer: int | None = None,
    ) -> None:
        parts = urlsplit(url)
        self.conn = http.client.HTTPConnection(
            parts.hostname or "127.0.0.1", parts.port, timeout=timeout
        )
        if receive_buffer is not None:  # a small window: a client that stops reading blocks soon
            sock = socket.create_connection((parts.hostname, parts.port), timeout)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
            self.conn.sock = sock
        all_headers = dict(headers or {})
        if token is not None:
            all_headers["Authorization"] = f"Bearer {token}"
        self.conn.request("GET", path, headers=all_headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self._parser = SseParser()
        self._pending: list[SseBlock] = []

    def body(self) -> Any:
        """The JSON body of a refused stream (the connection is closed after)."""
        try:
            return json.loads(self.response.read())
        finally:
            self.close()

    def blocks(self) -> Iterator[SseBlock]:
        """Every block until the node ends the stream."""
        while True:
            while self._pending:
                yield self._pending.pop(0)
            chunk = self.response.read1(65536)
            if not chunk:
                return
            self._pending.extend(SseBlock(*parsed) for parsed in self._parser.feed(chunk))

    def until(self, kind: str) -> tuple[list[SseBlock], SseBlock]:
        """The change blocks before the first block of type ``kind``, and that block."""
        before: list[SseBlock] = []
        for block in self.blocks():
            if block.type == kind:
                return before, block
            if block.type == "change":
                before.append(block)
        raise AssertionError(f"the stream ended before a {kind!r} event")

    def close(self) -> None:
        self.response.close()
        self.conn.close()

    def __enter__(self) -> SseStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
