"""Prometheus metrics of one node, in a registry of its own.

A registry per app (rather than the global default) lets several nodes run in
one process, as the tests and ``edgekv demo`` do.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgekv.store.store import Store

_LATENCY_BUCKETS = (
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 5.0,
)  # fmt: skip


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


class Metrics:
    """The node's metrics and the registry that exposes them."""

    def __init__(self, store: Store) -> None:
        """Create the metrics of a node serving ``store``."""
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "edgekv_http_requests",
            "HTTP requests answered, by method, route and status.",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "edgekv_http_request_duration_seconds",
            "Time to answer an HTTP request, by method and route.",
            ["method", "route"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.writes = Counter(
            "edgekv_kv_writes", "Keys written (puts and deletes).", registry=self.registry
        )
        self.registry.register(_StoreCollector(store))
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request."""
        key = (method, route, status)
        children = self._children.get(key)
        if children is None:
            # Label lookups cost more than the observation itself; cache the children.
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def render(self) -> bytes:
        """Return the Prometheus text exposition."""
        return generate_latest(self.registry)
