"""The one writer of a pull stream's socket on the pulling side.

The puller sends three kinds of message up its stream: ``Defer`` and ``Ack``
from its receiving loop, and ``Progress`` each time a batch commits -- which
happens in a writer callback, while the receiving loop may be waiting for the
next message (the server holds it back until it hears of progress). One task
sends them all, in order, so that no two sends interleave on the socket.
"""

from __future__ import annotations

import asyncio

import aiohttp

from edgekv.tasks import cancel_and_wait
from edgekv_replication.envelope import Message, Progress, encode


class Outbox:
    """Queues messages for one stream and sends them from a task of its own."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        """Start sending on ``ws``."""
        self._ws = ws
        self._queued: list[bytes] = []
        self._applied = self._reported = -1
        self._wake = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    def send(self, message: Message) -> None:
        """Send ``message`` after those queued before it."""
        self._queued.append(encode(message))
        self._wake.set()

    def applied(self, upto: int) -> None:
        """Report that the server's log is applied up to ``upto`` (only the newest is sent)."""
        if upto > self._applied:
            self._applied = upto
            self._wake.set()

    async def close(self) -> None:
        """Stop sending (what is still queued is dropped with the stream)."""
        await cancel_and_wait(self._task)

    async def _run(self) -> None:
        try:
            while True:
                await self._wake.wait()
                self._wake.clear()
                queued, self._queued = self._queued, []
                for data in queued:
                    await self._ws.send_bytes(data)
                if self._applied > self._reported:
                    self._reported = self._applied
                    await self._ws.send_bytes(encode(Progress(self._applied)))
        except (ConnectionError, RuntimeError, aiohttp.ClientError):
            return  # the stream is gone; its receiving loop notices and ends it
