"""Applying one pull stream's batches: the next is decoded while the last commits.

A stream's batches are submitted to the writer as they arrive, up to
:data:`MAX_APPLYING` ahead of the oldest commit, instead of one at a time.
Decoding a batch then overlaps the commit (the fsync) of the one before, and
batches that queue up behind a commit share the next one (the writer's group
commit). They are settled -- cursor, acknowledgement, metrics -- strictly in
order.

Why it is safe: each batch's transaction moves the peer's cursor only if that
cursor still stands where the batch continues from (``after`` of
:meth:`~edgekv.store.merge.Merger.apply_changes`). If one batch fails, every
later one finds the cursor short of its start and applies nothing, and the
stream is ended; the next stream resumes from the cursor that committed.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client import Counter, Histogram

from edgekv.peers.membership import LinkStatus
from edgekv.peers.recent import RecentStamps
from edgekv.store.merge import ApplyResult
from edgekv.store.store import Store
from edgekv_replication.changes import Change
from edgekv_replication.envelope import Batch
from edgekv_replication.hlc import COUNTER_BITS
from edgekv_replication.relays import RelayDeferrals
from edgekv_replication.session import PullSession

MAX_APPLYING = 16
"""Batches of one stream submitted to the writer ahead of the oldest commit."""
REPORT_EVERY = 4
"""Committed batches per Progress report (the server sends 32 ahead of the last)."""


class ApplyMetrics(Protocol):
    """The replication metrics an applier counts in (the replicator's, by their shape:
    naming its class here would tie the two modules into an import cycle)."""

    received: Counter
    applied: Counter
    apply_seconds: Histogram


@dataclass(frozen=True, slots=True)
class _Submitted:
    batch: Batch
    offered: Sequence[Change]
    done: asyncio.Future[Any]
    started: float


class StreamApplier:
    """Submits a stream's batches as they arrive and settles them in order."""

    def __init__(
        self,
        store: Store,
        session: PullSession,
        peer: int,
        link: LinkStatus,
        recent: RecentStamps,
        max_offset_ms: int,
        metrics: ApplyMetrics,
        relays: RelayDeferrals,
        on_applied: Callable[[int], None],
    ) -> None:
        """Apply batches of ``session`` (from ``peer``) to ``store``."""
        self._store = store
        self._session = session
        self._peer = peer
        self._link = link
        self._recent = recent
        self._max_offset_ms = max_offset_ms
        label = f"{peer:016x}"
        # The children of this peer, looked up once (``labels`` takes a lock each call).
        self._received = metrics.received.labels(label)
        self._applied = metrics.applied.labels(label)
        self._apply_seconds = metrics.apply_seconds
        self._relays = relays
        self._on_applied = on_applied
        self._unreported = 0
        self._in_flight: deque[_Submitted] = deque()
        self.failure: BaseException | None = None
        """The first batch that failed to apply; nothing after it was applied."""

    def submit(self, batch: Batch) -> None:
        """Start applying ``batch`` (raises ProtocolError unless it continues the stream)."""
        after = self._session.accept(batch)
        cursor = self._session.cursor_after(batch)
        if batch.changes:
            self._received.inc(len(batch.changes))
            # Copies of changes already applied (relayed by other peers) cannot win.
            offered = self._recent.unseen(batch.changes)
            done: asyncio.Future[Any] = self._store.apply_changes(
                offered, self._peer, cursor, self._max_offset_ms, after=after
            )
        elif cursor.cursor != after.cursor:
            offered = ()
            done = self._store.save_peer_cursor(self._peer, cursor, after=after)
        else:  # nothing to write, but settled in its turn like the others
            offered = ()
            done = asyncio.get_running_loop().create_future()
            done.set_result(None)
        item = _Submitted(batch, offered, done, time.perf_counter())
        self._in_flight.append(item)
        done.add_done_callback(lambda _: self.settle_ready())

    def settle_ready(self) -> None:
        """Settle the committed batches at the head of the line, in order."""
        while self._in_flight and self._in_flight[0].done.done():
            item = self._in_flight.popleft()
            if self.failure is not None:
                continue  # behind a failed batch: it applied nothing
            error = None if item.done.cancelled() else item.done.exception()
            if item.done.cancelled() or error is not None:
                self.failure = error or asyncio.CancelledError()
                continue
            self._settled(item, item.done.result())

    def _settled(self, item: _Submitted, result: ApplyResult | None) -> None:
        batch, session, link = item.batch, self._session, self._link
        if result is not None and result.held:
            self._relays.holding = True  # until the release loop finds none held
        self._relays.committed(self._peer, batch.mark, batch.relayed or (), head=self._store.seq)
        if not batch.changes:
            link.lag_ms = 0 if batch.upto >= session.head else link.lag_ms
        elif result is not None:
            self._recent.remember(item.offered, self._peer)
            self._apply_seconds.observe(time.perf_counter() - item.started)
            self._applied.inc(result.applied)
            newest_ms = batch.changes[-1].hlc >> COUNTER_BITS
            link.lag_ms = max(0, self._store.clock.wall_ms() - newest_ms)
        session.advanced(batch)
        link.cursor, link.head = session.cursor, session.head
        link.lag_changes = session.lag
        # Progress lets the server send on: every few batches, and whenever
        # nothing is left in flight (a message per batch costs a write each).
        self._unreported += 1
        if self._unreported >= REPORT_EVERY or not self._in_flight:
            self._unreported = 0
            self._on_applied(session.cursor)

    async def wait_for_room(self) -> None:
        """Wait until fewer than :data:`MAX_APPLYING` batches are in flight."""
        while len(self._in_flight) >= MAX_APPLYING and self.failure is None:
            await asyncio.wait([self._in_flight[0].done])
            self.settle_ready()

    async def drain(self) -> None:
        """Wait for every submitted batch to commit or fail, and settle them."""
        while self._in_flight:
            await asyncio.wait([item.done for item in self._in_flight])
            self.settle_ready()
