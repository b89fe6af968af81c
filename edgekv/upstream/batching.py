"""Concurrent unconditional strong writes share one statement: a group commit upstream.

Each strong write costs a round trip to PostgreSQL and a commit there. When
many arrive at once, the writes waiting for a connection go together in the
next statement (:meth:`~edgekv.store.pg.statements.Statements.strong_upsert` takes
arrays), so the node and PostgreSQL do one statement and one commit for all of
them. A batch is one transaction: its writes take effect at one instant, a
valid linearization point inside each request. A batch never holds the same
key twice (a later write of a key waits for the next batch), and a write
whose caller gave up before it was sent is dropped, never applied.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from edgekv.store.kv import Write
from edgekv_replication.changes import Change

MAX_BATCH_ROWS = 1000


@dataclass(slots=True)
class _Pending:
    ns: str
    writes: Sequence[Write]
    future: asyncio.Future[list[Change]] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class UpsertBatcher:
    """Runs queued writes through ``run`` in batches, at most ``concurrency`` at a time."""

    def __init__(
        self,
        run: Callable[[list[tuple[str, Write]]], Awaitable[list[Change]]],
        concurrency: int,
    ) -> None:
        """``run`` writes ``(namespace, write)`` pairs and returns their changes in order."""
        self._run = run
        self._concurrency = concurrency
        self._pending: collections.deque[_Pending] = collections.deque()
        self._flushers: set[asyncio.Task[None]] = set()

    async def write(self, ns: str, writes: Sequence[Write]) -> list[Change]:
        """Write ``writes`` (no key twice) in the next batch; return their changes."""
        pending = _Pending(ns, writes)
        self._pending.append(pending)
        if len(self._flushers) < self._concurrency:
            task = asyncio.create_task(self._flush())
            self._flushers.add(task)
            task.add_done_callback(self._flushers.discard)
        return await pending.future

    async def close(self) -> None:
        """Stop the batches in flight; their callers see the cancellation."""
        for task in list(self._flushers):
            task.cancel()
        await asyncio.gather(*self._flushers, return_exceptions=True)
        while self._pending:
            self._pending.popleft().future.cancel()

    async def _flush(self) -> None:
        while self._pending:
            batch = self._take()
            if not batch:
                continue
            try:
                changes = await self._run([(p.ns, w) for p in batch for w in p.writes])
            except asyncio.CancelledError:
                for pending in batch:
                    pending.future.cancel()
                raise
            except Exception as exc:  # every caller of the batch gets the failure
                for pending in batch:
                    if not pending.future.done():
                        pending.future.set_exception(exc)
                continue
            start = 0
            for pending in batch:
                end = start + len(pending.writes)
                if not pending.future.done():
                    pending.future.set_result(changes[start:end])
                start = end

    def _take(self) -> list[_Pending]:
        """The next batch, in arrival order, up to the first write of a key already in it."""
        batch: list[_Pending] = []
        slots: set[tuple[str, bytes]] = set()
        rows = 0
        while self._pending:
            pending = self._pending[0]
            if pending.future.done():  # its caller gave up before it was sent
                self._pending.popleft()
                continue
            keys = {(pending.ns, w.key) for w in pending.writes}
            if batch and (keys & slots or rows + len(keys) > MAX_BATCH_ROWS):
                break
            self._pending.popleft()
            batch.append(pending)
            slots |= keys
            rows += len(keys)
        return batch
