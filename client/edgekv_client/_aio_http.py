"""A pool of HTTP/1.1 keep-alive connections for the async client, on asyncio protocols.

Why not aiohttp's client session for requests and answers: its per-request
machinery (request and response objects, a stream reader, a cookie jar,
tracing hooks, a timer context) cost about 90 µs of CPU per GET, three times
what the node's own answer leaves to a client; with 64 tasks reading at
once the client, not the node, was the limit. The framing is
:mod:`edgekv_client._wire`'s, shared with the blocking client; this adds the
event loop. aiohttp stays for the watch streams.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Mapping
from typing import TYPE_CHECKING

from edgekv_client._wire import Answer, AnswerReader, ProtocolError, fixed_head, request_bytes

if TYPE_CHECKING:
    import ssl

DEFAULT_LIMIT = 100
"""Connections a pool opens at most (aiohttp's default too); more requests queue."""


class _Connection(asyncio.Protocol):
    """One kept-alive connection; one request in flight at a time."""

    def __init__(self) -> None:
        self._reader = AnswerReader()
        self._transport: asyncio.Transport | None = None
        self._waiter: asyncio.Future[Answer] | None = None
        self._method = "GET"
        self.open = True

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        waiter = self._waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for: the connection is out of step
            return
        self._reader.feed(data)
        try:
            answer = self._reader.answer(self._method)
        except ProtocolError as exc:
            self.close()
            waiter.set_exception(exc)
            return
        if answer is not None:
            self._waiter = None
            waiter.set_result(answer)

    def eof_received(self) -> bool:
        return False  # close the transport: a half-open connection is of no use

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        waiter, self._waiter = self._waiter, None
        if waiter is None or waiter.done():
            return
        try:
            answer = self._reader.answer(self._method, eof=True)
        except ProtocolError as error:
            waiter.set_exception(exc or error)
            return
        assert answer is not None  # at the end, an answer is complete or an error
        waiter.set_result(answer)

    def close(self) -> None:
        self.open = False
        if self._transport is not None:
            self._transport.close()

    async def request(self, data: bytes, method: str) -> Answer:
        assert self._transport is not None
        assert self._waiter is None
        self._waiter = waiter = asyncio.get_running_loop().create_future()
        self._method = method
        self._transport.write(data)
        answer: Answer = await waiter
        if not self._reader.idle or answer.headers.get("connection", "").lower() == "close":
            self.close()  # bytes past the answer: out of step; or the node says it closes
        return answer


class Pool:
    """Kept-alive connections to ``host:port``, at most ``limit`` of them open."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: ssl.SSLContext | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> None:
        """Connect on first use (no I/O here)."""
        self._host, self._port, self._tls = host, port, tls
        self._fixed = fixed_head(host, port, {})
        self._idle: list[_Connection] = []
        self._free = limit  # connections that may still be opened
        self._queue: deque[asyncio.Future[None]] = deque()
        self._closed = False

    async def request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes | None
    ) -> Answer:
        """Send one request on an idle (or new) connection and read its whole answer.

        Raises OSError (ProtocolError included) when the node cannot be
        reached or answers garbage; the caller bounds the time (asyncio.timeout).
        """
        data = request_bytes(method, target, self._fixed, headers, body)
        conn = await self._acquire()
        try:
            answer = await conn.request(data, method)
        except BaseException:  # cancelled or broken mid-answer: the connection is out of step
            conn.close()
            self._release(conn)
            raise
        self._release(conn)
        return answer

    async def _acquire(self) -> _Connection:
        while True:
            while self._idle:
                conn = self._idle.pop()
                if conn.open:
                    return conn
                self._free += 1  # closed while idle (the node timed it out)
            if self._closed:
                raise ProtocolError("the client is closed")
            if self._free > 0:
                self._free -= 1
                try:
                    return await self._connect()
                except BaseException:
                    self._free += 1
                    self._wake()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._queue.append(waiter)
            try:
                await waiter
            except BaseException:
                if not waiter.cancelled():
                    self._wake()  # woken, then cancelled: pass the turn on
                raise

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        host, tls = self._host, self._tls
        _, conn = await loop.create_connection(
            _Connection, host, self._port, ssl=tls, server_hostname=host if tls else None
        )
        return conn

    def _release(self, conn: _Connection) -> None:
        if conn.open and not self._closed:
            self._idle.append(conn)
        else:
            self._free += 1
        self._wake()

    def _wake(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def close(self) -> None:
        """Close every idle connection; those in use close when their request ends."""
        self._closed = True
        for conn in self._idle:
            conn.close()
        self._idle.clear()
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)  # it finds the pool closed
