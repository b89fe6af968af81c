"""A watch stream's connection in the fan-out process: its socket, written directly.

The node answered the request and sent the response's head; this process
got the connection's socket and writes the live tail's events to it, in the
body's framing (HTTP/1.1 chunks, or the bytes as they are for HTTP/1.0). It
is a :class:`~edgekv.watch.frames.Sink` with a buffer of its own for what the
kernel does not take at once, and it notices the client going by reading the
socket (the node stopped reading it when it handed it over). The socket is a
copy of the node's: closing it here leaves the connection open, and
:meth:`SocketSink.release` hands back the bytes not sent, for the node to
write before it ends the stream.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable

_READ_BYTES = 4096


class SocketSink:
    """One handed-over watch connection."""

    def __init__(
        self,
        sock: socket.socket,
        chunked: bool,
        loop: asyncio.AbstractEventLoop,
        on_gone: Callable[[], None],
    ) -> None:
        """Write to ``sock``; ``on_gone()`` once the client is seen going (not on a write)."""
        self._sock = sock
        self._on_gone = on_gone
        self._fd = sock.fileno()
        self._chunked = chunked
        self._loop = loop
        self._unsent = bytearray()
        self._closed = False
        self._released = False
        sock.setblocking(False)
        loop.add_reader(self._fd, self._readable)

    def send(self, data: bytes) -> bool:
        """Write ``data`` now; what the kernel does not take waits here."""
        if self._closed:
            return False
        if self._chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        if self._unsent:
            self._unsent += data
            return True
        try:
            sent = self._sock.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            self._gone()
            return False
        if sent < len(data):
            self._unsent += data[sent:]
            self._loop.add_writer(self._fd, self._writable)
        return True

    def _writable(self) -> None:
        try:
            sent = self._sock.send(self._unsent)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            self._gone()
            return
        del self._unsent[:sent]
        if not self._unsent:
            self._loop.remove_writer(self._fd)

    def _readable(self) -> None:
        # A watch client sends nothing after its request: what comes is dropped;
        # the end of the stream (or an error) is the client going.
        try:
            data = self._sock.recv(_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._gone()
            self._on_gone()  # counted out now, not at the next write or heartbeat round

    def _gone(self) -> None:
        self._closed = True
        self._stop_watching()

    def _stop_watching(self) -> None:
        if not self._released:
            self._released = True
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._sock.close()  # this process's copy: the node still holds the connection

    def closed(self) -> bool:
        """Whether the client went (or a write failed)."""
        return self._closed

    def pending(self) -> int:
        """Bytes written here that the kernel has not taken."""
        return len(self._unsent)

    async def drained(self) -> None:
        """Not awaited here: the hub never waits on a connection."""

    def abort(self) -> None:
        """Stop writing; the node ends the connection."""
        self._gone()

    def release(self) -> bytes:
        """Stop writing and hand back the bytes the kernel has not taken (already framed)."""
        unsent = bytes(self._unsent)
        self._unsent.clear()
        self._stop_watching()
        return unsent
