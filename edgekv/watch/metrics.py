"""The watch feed's Prometheus metrics, read from the hub's tallies at scrape time."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from edgekv.watch.hub import WatchHub


class _WatchCollector(Collector):
    def __init__(self, hub: WatchHub) -> None:
        self._hub = hub

    def collect(self) -> Iterator[Metric]:
        hub = self._hub
        yield GaugeMetricFamily("edgekv_watchers_open", "Watch streams open.", hub.open_count)
        yield GaugeMetricFamily(
            "edgekv_watchers_in_fanout",
            "Watch streams whose live events the fan-out process writes (of those open).",
            hub.handed_over_count,
        )
        yield GaugeMetricFamily(
            "edgekv_watch_fanout_behind_seconds",
            "Age of the oldest round of the log the fan-out process has not read yet (0: none).",
            hub.fanout_behind,
        )
        yield CounterMetricFamily(
            "edgekv_watch_events_sent", "Watch events sent (changes, not heartbeats).",
            hub.events_sent,
        )  # fmt: skip
        yield CounterMetricFamily(
            "edgekv_watchers_cut",
            "Watchers cut for not reading (their buffer full); each resumes from its last id.",
            hub.cut_count,
        )
        yield CounterMetricFamily(
            "edgekv_watch_relists",
            "Watch resumes refused with a relist event (tombstones collected past the token).",
            hub.relists,
        )


def register(hub: WatchHub, registry: CollectorRegistry) -> None:
    """Expose ``hub``'s tallies in ``registry``."""
    registry.register(_WatchCollector(hub))


def status(hub: WatchHub) -> dict[str, int]:
    """The watch fields of ``/v1/cluster/status``."""
    return {
        "watchers_open": hub.open_count,
        "watchers_in_fanout": hub.handed_over_count,
        "fanout_behind_ms": round(hub.fanout_behind * 1000),
        "events_sent": hub.events_sent,
        "watchers_cut": hub.cut_count,
        "relists": hub.relists,
    }
