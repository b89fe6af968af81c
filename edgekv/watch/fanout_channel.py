"""The node's channel to its watch fan-out process: framed messages, with sockets passed along.

One Unix stream socket pair. A message is a 4-byte length and a msgpack map;
a message that hands a watch stream over carries that connection's socket as
ancillary data (``SCM_RIGHTS``), which the kernel delivers with the first
byte of the send that carried it, so it is there by the time the message is
whole. Both ends are non-blocking and neither waits on the other: what the
socket does not take is queued and sent as it drains (:class:`Outbox`).
"""

from __future__ import annotations

import asyncio
import collections
import os
import socket
import struct
from typing import Any

import msgpack

_LENGTH = struct.Struct("!I")
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
"""A message's bound: the largest is a cut watcher's unsent bytes (``watch_buffer_bytes``)."""
COALESCE_AFTER = 1024
"""Messages waiting here before a round replaces the last (about 5 s of rounds under
load): the bound of this queue when the process stops reading. Short of it every round
is sent; the process reads those that arrived together as one."""
_READ_BYTES = 256 * 1024
_MAX_FDS = 64

Message = dict[str, Any]

SERVED_KINDS = frozenset({"kv"})
"""The kinds the fan-out process serves: a key-value event comes whole from its log row.
Documents, counters and sets are sent in their state now, which only the node's rounds
(run between its commits) read no newer than the log."""


class ChannelClosed(Exception):
    """The other end went (its process ended) or sent what is not a message."""


def encode(message: Message) -> bytes:
    body: bytes = msgpack.packb(message, use_bin_type=True)
    return _LENGTH.pack(len(body)) + body


class Outbox:
    """Messages to the other end, in order, without blocking the event loop."""

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self._sock = sock
        self._loop = loop
        self._queue: collections.deque[tuple[bytes, int | None]] = collections.deque()
        """Waiting for the socket: bytes, and a descriptor to pass with their first."""
        self._tail_replaceable = False
        """The queue's last message is waiting whole and a newer one may replace it."""
        self.closed = False

    def send(self, message: Message, fd: int | None = None, replaceable: bool = False) -> None:
        """Send ``message`` (with descriptor ``fd``, closed here once passed on).

        ``replaceable``: once :data:`COALESCE_AFTER` messages wait, a newer
        replaceable message takes the place of the last (a round's reach), so a
        process that stopped reading costs a bounded queue here.
        """
        if self.closed:
            if fd is not None:
                os.close(fd)
            raise ChannelClosed("the watch fan-out process has gone")
        data = encode(message)
        queue = self._queue
        if replaceable and self._tail_replaceable and len(queue) > COALESCE_AFTER:
            queue[-1] = (data, None)  # not the head: none of it is sent yet
            return
        self._tail_replaceable = replaceable
        queue.append((data, fd))
        if len(queue) == 1:
            self._flush()

    def _flush(self) -> None:
        queue = self._queue
        while queue:
            data, fd = queue[0]
            ancillary = [] if fd is None else [(socket.SOL_SOCKET, socket.SCM_RIGHTS, _fds(fd))]
            try:
                sent = self._sock.sendmsg([data], ancillary)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                self.close()
                return
            if fd is not None:
                os.close(fd)  # the other end holds its own copy now
            if sent < len(data):
                queue[0] = (data[sent:], None)
                break
            queue.popleft()
        if queue:
            self._loop.add_writer(self._sock.fileno(), self._flush)
        else:
            self._loop.remove_writer(self._sock.fileno())

    def close(self) -> None:
        """No more messages; descriptors not passed yet are closed."""
        if self.closed:
            return
        self.closed = True
        self._loop.remove_writer(self._sock.fileno())
        for _, fd in self._queue:
            if fd is not None:
                os.close(fd)
        self._queue.clear()


def _fds(fd: int) -> bytes:
    return struct.pack("i", fd)


class Inbox:
    """Messages from the other end as they arrive, and the descriptors that came with them."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._buffer = bytearray()
        self.fds: collections.deque[int] = collections.deque()

    def receive(self) -> list[Message]:
        """The messages completed by what the socket holds now (raises :class:`ChannelClosed`)."""
        try:
            data, fds, _, _ = socket.recv_fds(self._sock, _READ_BYTES, _MAX_FDS)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError as exc:
            raise ChannelClosed(str(exc)) from exc
        self.fds.extend(fds)
        if not data:
            raise ChannelClosed("the other end closed the channel")
        buffer = self._buffer
        buffer += data
        messages: list[Message] = []
        while len(buffer) >= _LENGTH.size:
            (size,) = _LENGTH.unpack_from(buffer)
            if size > MAX_MESSAGE_BYTES:
                raise ChannelClosed(f"a message of {size} bytes")
            end = _LENGTH.size + size
            if len(buffer) < end:
                break
            message = msgpack.unpackb(bytes(buffer[_LENGTH.size : end]), raw=False)
            del buffer[:end]
            if not isinstance(message, dict):
                raise ChannelClosed("a message that is not a map")
            messages.append(message)
        return messages

    def close(self) -> None:
        """Close the descriptors received and not taken."""
        while self.fds:
            os.close(self.fds.popleft())
