"""The benchmark's watch clients: many SSE streams read in one process, as cheaply as it gets.

Each stream is a raw asyncio protocol over its own connection (HTTP/1.1, the
node's chunked body decoded by hand) rather than an aiohttp client response:
on the 2-core reference machine the reading process shares the cores with the
node and the PUT load generator, and aiohttp's per-chunk cost there was about
as large as the node's own cost of sending the events. Two modes:

* *measuring*: the body is decoded (chunks, then SSE blocks) and the arrival
  time of every change event is noted with its key;
* *draining*: every byte is read and dropped unparsed, by a thread polling
  the sockets every 5 ms (:meth:`Readers.drain`); a stream's client still
  reads everything, so the node never holds it back or cuts it.

A stream is decoded until it is live (its ``ready`` event) and while delays
are measured; once switched to draining it stays so (its framing is lost).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import select
import threading
import time
from urllib.parse import urlsplit

from edgekv_client._watch import SseParser

POLL_SECONDS = 0.005
"""How often the draining thread reads the sockets (well within their buffers)."""


class ChunkedBody:
    """An HTTP/1.1 chunked body decoded as it arrives (no trailers expected)."""

    def __init__(self) -> None:
        self._buffer = b""
        self._left = 0
        """Bytes of the current chunk still to come (then its CRLF)."""
        self.ended = False

    def feed(self, data: bytes) -> bytes:
        """The body bytes ``data`` completes."""
        self._buffer += data
        out = []
        while self._buffer and not self.ended:
            if self._left:
                piece = self._buffer[: self._left]
                out.append(piece)
                self._left -= len(piece)
                self._buffer = self._buffer[len(piece) :]
                continue
            if self._buffer.startswith(b"\r\n"):  # the end of the chunk before
                self._buffer = self._buffer[2:]
                continue
            end = self._buffer.find(b"\r\n")
            if end < 0:
                break
            size = int(self._buffer[:end].split(b";")[0], 16)
            self._buffer = self._buffer[end + 2 :]
            if size == 0:
                self.ended = True
            self._left = size
        return b"".join(out)


class Stream(asyncio.Protocol):
    """One watch stream: the request, its answer's head, then its body by mode."""

    def __init__(self, readers: Readers, request: bytes) -> None:
        self._readers = readers
        self._request = request
        self._head = b""
        self._body: ChunkedBody | None = None
        self._events = SseParser()
        self.live = False
        self.draining = False
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self._request)

    def data_received(self, data: bytes) -> None:
        if self.draining:
            return
        now = time.perf_counter()
        if self._body is None:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            head, data = self._head[:end], self._head[end + 4 :]
            if not head.startswith(b"HTTP/1.1 200") or b"transfer-encoding: chunked" not in (
                head.lower()
            ):
                self._readers.refusals.append((head + data).decode(errors="replace")[:300])
                self.draining = True
                if self.transport is not None:
                    self.transport.close()
                return
            self._body = ChunkedBody()
        for kind, text, _ in self._events.feed(self._body.feed(data)):
            if kind == "ready" and not self.live:
                self.live = True
                self._readers.became_live(self)
            elif kind == "change" and self._readers.recording:
                self._readers.arrivals.append((json.loads(text)["key"], now))
            elif kind == "cut":
                self._readers.cut += 1

    def connection_lost(self, exc: Exception | None) -> None:
        self._readers.ended(self)


class Readers:
    """Every stream of the run, the arrivals noted while recording, and how many ended."""

    def __init__(self, url: str, path: str, filters: list[str]) -> None:
        parts = urlsplit(url)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._path = path
        self._filters = filters
        self.streams: list[Stream] = []
        self.arrivals: list[tuple[str, float]] = []
        self.recording = False
        self.live = 0
        self.ended_count = 0
        self.cut = 0
        self.refusals: list[str] = []
        self._all_live = asyncio.Event()
        self._stop_polling = threading.Event()
        self._drainer: threading.Thread | None = None

    async def open(self) -> None:
        """Open every stream; return once each is live (or raise if one ended before)."""
        loop = asyncio.get_running_loop()
        for prefix in self._filters:
            query = f"?prefix={prefix}" if prefix else ""
            request = (
                f"GET {self._path}{query} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
                "Accept: text/event-stream\r\n\r\n"
            ).encode()
            stream = Stream(self, request)
            await loop.create_connection(functools.partial(_same, stream), self._host, self._port)
            self.streams.append(stream)
        await self._all_live.wait()
        if self.refusals or self.ended_count:
            raise RuntimeError(
                f"{self.ended_count} watch streams ended before they were live: {self.refusals[:1]}"
            )

    def drain(self) -> None:
        """From now on every stream's bytes are read and dropped, by a thread that polls.

        The event loop stops reading the sockets; a thread reads every socket
        with data every :data:`POLL_SECONDS` (``epoll`` without waiting, then
        one ``recv`` per ready socket). Blocking in ``epoll`` instead, as the
        loop does, wakes the process for every event the node writes: a cost of
        co-locating 1,010 clients with the node that remote clients would not
        put on its cores. Polling reads the same bytes, in fewer wake-ups.
        """
        sockets = []
        for stream in self.streams:
            stream.draining = True
            if stream.transport is not None and not stream.transport.is_closing():
                stream.transport.pause_reading()
                sockets.append(stream.transport.get_extra_info("socket").fileno())
        self._drainer = threading.Thread(target=self._poll, args=(sockets,), daemon=True)
        self._drainer.start()

    def _poll(self, fds: list[int]) -> None:
        poller = select.epoll()
        for fd in fds:
            poller.register(fd, select.EPOLLIN)
        try:
            while not self._stop_polling.is_set():
                time.sleep(POLL_SECONDS)
                for fd, _ in poller.poll(0):
                    try:
                        if not os.read(fd, 1 << 18):
                            poller.unregister(fd)  # the node ended the stream
                    except BlockingIOError:
                        pass
                    except OSError:
                        poller.unregister(fd)
        finally:
            poller.close()

    def close(self) -> None:
        self._stop_polling.set()
        if self._drainer is not None:
            self._drainer.join()
        for stream in self.streams:
            if stream.transport is not None:
                stream.transport.close()

    def became_live(self, stream: Stream) -> None:
        self.live += 1
        self._check()

    def ended(self, stream: Stream) -> None:
        if not stream.live:
            self.ended_count += 1
        self._check()

    def _check(self) -> None:
        if self.live + self.ended_count >= len(self._filters):
            self._all_live.set()


def _same(stream: Stream) -> Stream:
    return stream
