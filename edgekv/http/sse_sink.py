"""A watch stream's connection as a :class:`~edgekv.watch.frames.Sink`: written directly.

The watch hub writes each round's events to every watcher it concerns, from
one callback: through ``StreamResponse.write`` that would be a coroutine and a
task per watcher. So after ``prepare`` the frames go straight to the
transport, framed as aiohttp frames the body (HTTP/1.1 chunks, or the bytes
as they are for HTTP/1.0, whose body ends with the connection); aiohttp's
``write_eof`` ends the body as usual when the handler returns.
"""

from __future__ import annotations

import os

from aiohttp import hdrs, web


class ResponseSink:
    """The transport under a prepared ``StreamResponse``, in its transfer framing."""

    def __init__(self, request: web.Request, response: web.StreamResponse) -> None:
        """``response`` must be prepared (its headers sent, its framing chosen)."""
        self._request = request
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("the watch client went")
        # The same transport for the connection's life; closing once the client goes.
        self._transport = transport
        self._chunked = response.headers.get(hdrs.TRANSFER_ENCODING) == "chunked"
        self._response = response

    def send(self, data: bytes) -> bool:
        """Write ``data`` now (the kernel takes what it can, the transport buffers the rest)."""
        transport = self._transport
        if transport.is_closing():
            return False
        if self._chunked:
            transport.write(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            transport.write(data)
        return True

    def closed(self) -> bool:
        """Whether the connection has gone."""
        return self._transport.is_closing()

    def pending(self) -> int:
        """Bytes the transport holds that the kernel has not taken."""
        return self._transport.get_write_buffer_size()

    async def drained(self) -> None:
        """Until the transport is below its high-water mark (aiohttp's own flow control)."""
        await self._request.writer.drain()

    def abort(self) -> None:
        """Drop the connection."""
        self._transport.abort()

    def hand_over(self) -> tuple[int, bool] | None:
        """A copy of the socket for the watch fan-out process; reading here paused.

        Not for TLS (the session's state is in this process) or a connection
        closing. The connection is closed once the stream ends: the other
        process had it meanwhile.
        """
        transport = self._transport
        if transport.is_closing() or transport.get_extra_info("sslcontext"):
            return None
        sock = transport.get_extra_info("socket")
        if sock is None or transport.get_write_buffer_size():
            return None  # bytes queued here would come after the other process's
        fd = os.dup(sock.fileno())
        transport.pause_reading()  # the other process notices the client going
        self._response.force_close()  # not kept alive: the other process had it
        return fd, self._chunked

    def take_back(self, unsent: bytes | None) -> None:
        """Write here again: first the bytes the other process had not sent (framed)."""
        if unsent is None:
            self._transport.abort()
        elif unsent:
            self._transport.write(unsent)
