"""The last hour of a node's own metrics, sampled every few seconds for the console's charts.

A background task reads counters the node keeps anyway (request tallies in
:class:`~edgekv.metrics.Metrics`, the replication ``applied`` counter, each
link's lag, the held-back count, the database size) every
:data:`SAMPLE_INTERVAL` seconds into fixed-size arrays: nothing is added to the
request path, and the history costs a few KiB plus 2.8 KiB per peer, whether
or not anyone looks at it.
"""

from __future__ import annotations

import asyncio
import math
import time
from array import array
from collections.abc import AsyncIterator, Iterable, Mapping
from typing import Any

from edgekv.node import Node
from edgekv.tasks import cancel_and_wait

SAMPLE_INTERVAL = 5.0
"""Seconds between samples."""
SAMPLES = 720
"""Samples kept: one hour at :data:`SAMPLE_INTERVAL`."""

COLUMNS = ("reads_per_s", "writes_per_s", "applied_per_s", "held_changes", "db_bytes")
"""The node-wide series, besides time and the per-peer lag."""

_DATA_PREFIXES = ("/v1/kv/", "/v1/docs/")
_WRITE_METHODS = frozenset({"PUT", "PATCH", "DELETE", "POST"})
_NOT_WRITES = ("/_get", "/_indexes")


def request_totals(tallies: Iterable[tuple[tuple[str, str, int], list[float]]]) -> tuple[int, int]:
    """Data reads and writes answered so far, from the per-route request tallies.

    A read is a GET (or HEAD) of a key, list, document or query, or a
    ``_get``; a write any other method on a key-value or document route but
    an index declaration.
    """
    reads = writes = 0
    for (method, route, _), tally in tallies:
        if not route.startswith(_DATA_PREFIXES):
            continue
        if method in ("GET", "HEAD") or route.endswith("/_get"):
            reads += int(tally[0])
        elif method in _WRITE_METHODS and not route.endswith(_NOT_WRITES):
            writes += int(tally[0])
    return reads, writes


class History:
    """Ring buffers of samples: one array per series, one per peer's lag, same positions."""

    def __init__(self, capacity: int = SAMPLES) -> None:
        self.capacity = capacity
        self.count = 0
        self._next = 0
        nothing = array("d", [math.nan]) * capacity
        self.times = array("d", nothing)
        # float32 for the series: a chart needs no more, and it halves the memory.
        self.columns = {name: array("f", [math.nan]) * capacity for name in COLUMNS}
        self.lag_ms: dict[str, array[float]] = {}
        self.peer_names: dict[str, str] = {}
        self._last_seen: dict[str, int] = {}
        self._added = 0

    def add(
        self, at: float, values: Mapping[str, float], lags: Mapping[str, tuple[str, float | None]]
    ) -> None:
        """Record one sample taken at ``at`` (epoch seconds); ``lags`` by peer id: (name, ms)."""
        i = self._next
        self.times[i] = at
        for name, column in self.columns.items():
            column[i] = values.get(name, math.nan)
        for column in self.lag_ms.values():
            column[i] = math.nan
        for peer, (name, lag) in lags.items():
            lag_column = self.lag_ms.get(peer)
            if lag_column is None:
                lag_column = self.lag_ms[peer] = array("f", [math.nan]) * self.capacity
            lag_column[i] = math.nan if lag is None else lag
            self.peer_names[peer] = name
            self._last_seen[peer] = self._added
        self._added += 1
        # A peer not seen for a whole window has no point left to draw: forget it.
        gone = [p for p, seen in self._last_seen.items() if self._added - seen > self.capacity]
        for peer in gone:
            del self.lag_ms[peer], self.peer_names[peer], self._last_seen[peer]
        self._next = (i + 1) % self.capacity
        self.count = min(self.count + 1, self.capacity)

    def _ordered(self, column: array[float]) -> list[float | None]:
        start = (self._next - self.count) % self.capacity
        indices = (
            range(start, start + self.count) if start + self.count <= self.capacity
            else [*range(start, self.capacity), *range(self._next)]
        )  # fmt: skip
        # Rounded: float32's 3.4000000953674316 is 3.4 to a chart, and a third of the JSON.
        return [None if math.isnan(column[i]) else round(column[i], 3) for i in indices]

    def document(self) -> dict[str, Any]:
        """The history as JSON: oldest sample first; null where a value was unknown."""
        return {
            "interval_s": SAMPLE_INTERVAL,
            "t": self._ordered(self.times),
            **{name: self._ordered(column) for name, column in self.columns.items()},
            "lag_ms": {
                peer: {"name": self.peer_names[peer], "values": self._ordered(column)}
                for peer, column in self.lag_ms.items()
            },
        }


class Sampler:
    """Reads a node's metrics into a :class:`History` every :data:`SAMPLE_INTERVAL` seconds."""

    def __init__(self, node: Node, history: History | None = None) -> None:
        self._node = node
        self.history = history or History()
        self._previous: tuple[float, int, int, float] | None = None

    def _applied_total(self) -> float:
        counter = self._node.replicator.metrics.applied
        return sum(
            sample.value
            for metric in counter.collect()
            for sample in metric.samples
            if sample.name.endswith("_total")
        )

    def sample(self, now: float | None = None) -> None:
        """Take one sample (rates against the previous one; none for the first)."""
        node = self._node
        at = time.time() if now is None else now
        reads, writes = request_totals(list(node.metrics.requests.items()))
        applied = self._applied_total()
        values: dict[str, float] = {
            "held_changes": node.store.held_count(),
            "db_bytes": node.store.size_bytes(),
        }
        if self._previous is not None:
            then, last_reads, last_writes, last_applied = self._previous
            elapsed = max(at - then, 1e-3)
            values["reads_per_s"] = (reads - last_reads) / elapsed
            values["writes_per_s"] = (writes - last_writes) / elapsed
            values["applied_per_s"] = (applied - last_applied) / elapsed
        self._previous = (at, reads, writes, applied)
        membership = node.replicator.membership
        names = {member: name for member, _, name, _, _ in membership.members()}
        lags = {
            f"{peer:016x}": (names.get(peer, ""), link.lag_ms if link.state == "up" else None)
            for peer, link in membership.links.items()
        }
        self.history.add(at, values, lags)

    async def run(self) -> None:
        """Sample forever, every :data:`SAMPLE_INTERVAL` seconds."""
        while True:
            self.sample()
            await asyncio.sleep(SAMPLE_INTERVAL)

    async def running(self, _: object) -> AsyncIterator[None]:
        """An aiohttp cleanup context: sample while the app serves."""
        task = asyncio.create_task(self.run(), name="console-sampler")
        try:
            yield
        finally:
            await cancel_and_wait(task)
