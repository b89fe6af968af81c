"""Commit notifications for the event loop: streams wake when the log grows."""

from __future__ import annotations

import asyncio

from edgekv.tasks import wait_event


class ChangeFeed:
    """Lets coroutines wait until the store's seq passes a value.

    The writer calls :meth:`notify_threadsafe` after each commit; every
    waiting stream is released at once.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, seq: int) -> None:
        """Start at ``seq``, the store's current head."""
        self._loop = loop
        self.seq = seq
        self._changed = asyncio.Event()

    def notify_threadsafe(self, seq: int) -> None:
        """Record a commit up to ``seq`` (from any thread).

        On the loop's own thread -- where the writer settles its commits --
        directly: waking the loop through its self-pipe costs a system call
        per commit.
        """
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._advance(seq)
        else:
            self._loop.call_soon_threadsafe(self._advance, seq)

    def _advance(self, seq: int) -> None:
        if seq > self.seq:
            self.seq = seq
            self._changed.set()
            self._changed = asyncio.Event()

    async def wait_beyond(self, seq: int, within: float) -> bool:
        """Wait up to ``within`` seconds for the head to pass ``seq``; False if it did not."""
        if self.seq > seq:
            return True
        return await wait_event(self._changed, within) and self.seq > seq
