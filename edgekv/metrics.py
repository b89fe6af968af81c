"""Prometheus metrics of one node, in a registry of its own.

A registry per app (rather than the global default) lets several nodes run in
one process, as the tests and ``edgekv demo`` do.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from edgekv.store.store import Store

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip


# Bucket bounds as the exposition format spells them.
_BOUND_LABELS = {bound: repr(bound) for bound in _LATENCY_BUCKETS} | {float("inf"): "+Inf"}


class _StoreCollector(Collector):
    """Reads the store's gauges at scrape time, so the hot path updates nothing."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def collect(self) -> Iterator[Metric]:
        store = self._store
        yield GaugeMetricFamily("edgekv_store_seq", "Newest committed change seq.", store.seq)
        yield GaugeMetricFamily(
            "edgekv_store_commits", "Group commits since start.", store.writer.commits
        )
        yield GaugeMetricFamily(
            "edgekv_store_size_bytes", "Database and WAL size.", store.size_bytes()
        )
        clocks = store.peer_clocks
        # Absent (rather than 0) until a peer is heard: a lone node cannot know.
        for name, help_text, value in (
            (
                "edgekv_clock_ahead_ms",
                "How far this node's wall clock is ahead of its peers' (their median); "
                "new stamps go at most max_clock_offset beyond theirs.",
                clocks.clock_ahead_ms(),
            ),
            (
                "edgekv_stamps_ahead_ms",
                "How far this node's newest stamp is ahead of its peers' clocks; "
                "beyond max_clock_offset, peers hold its writes until their clocks reach it.",
                clocks.stamps_ahead_ms(),
            ),
        ):
            if value is not None:
                yield GaugeMetricFamily(name, help_text, value)


class _RequestCollector(Collector):
    """Exposes the per-request tallies as a counter and a histogram at scrape time."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics
        self._stats = metrics.requests

    def collect(self) -> Iterator[Metric]:
        labels = ["method", "route", "status"]
        count = CounterMetricFamily(
            "edgekv_http_requests", "HTTP requests answered, by method, route and status.",
            labels=labels,
        )  # fmt: skip
        latency = HistogramMetricFamily(
            "edgekv_http_request_duration_seconds",
            "Time to answer an HTTP request, by method, route and status.",
            labels=labels,
        )
        for (method, route, status), tally in list(self._stats.items()):
            label_values = [method, route, str(status)]
            count.add_metric(label_values, tally[0])
            cumulative, buckets = 0.0, []
            for bound, hits in zip((*_LATENCY_BUCKETS, float("inf")), tally[2:], strict=True):
                cumulative += hits
                buckets.append((_BOUND_LABELS[bound], cumulative))
            latency.add_metric(label_values, buckets, tally[1])
        yield count
        yield latency
        yield CounterMetricFamily(
            "edgekv_kv_writes", "Keys written (puts and deletes).", self._metrics.writes
        )


class Metrics:
    """The node's metrics and the registry that exposes them."""

    def __init__(self, store: Store) -> None:
        """Create the metrics of a node serving ``store``."""
        self.registry = CollectorRegistry(auto_describe=True)
        # Plain tallies, touched only on the event loop: prometheus_client's
        # locked metrics cost several microseconds per request on the hot path.
        self.requests: dict[tuple[str, str, int], list[float]] = {}
        self.writes = 0
        """Keys written (puts and deletes); exposed as ``edgekv_kv_writes_total``."""
        self.registry.register(_RequestCollector(self))
        self.registry.register(_StoreCollector(store))

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request: ``[count, sum, per-bucket hits...]``."""
        key = (method, route, status)
        tally = self.requests.get(key)
        if tally is None:
            tally = self.requests[key] = [0, 0.0] + [0] * (len(_LATENCY_BUCKETS) + 1)
        tally[0] += 1
        tally[1] += seconds
        tally[2 + bisect_left(_LATENCY_BUCKETS, seconds)] += 1

    def render(self) -> bytes:
        """Return the Prometheus text exposition."""
        return generate_latest(self.registry)
