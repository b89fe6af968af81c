"""Watching a node while a big request is served: its peak RSS and the slowest small GET.

The memory-bound tests send one large request and assert both that the node's
resident memory stays within the documented bound and that other clients are
served meanwhile.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from testkit.processes import NodeProcess

SMALL_GET_BOUND = 3.0
"""Seconds a small GET may take while a big request is served (14 s for get-many before
its answers were bounded)."""


class Watch:
    """While a big request runs: the node's peak RSS, and the slowest small GET from another
    client (a GET is always in flight, so one of them lands while the request is parsed)."""

    def __init__(self, node: NodeProcess) -> None:
        self.node = node
        self.baseline = node.rss_bytes()
        self.peak = self.baseline
        self.slowest_get = 0.0
        self._done = threading.Event()
        self._threads = [
            threading.Thread(target=self._sample, daemon=True),
            threading.Thread(target=self._probe, daemon=True),
        ]

    def _sample(self) -> None:
        while not self._done.is_set():
            self.peak = max(self.peak, self.node.rss_bytes())
            self._done.wait(0.002)

    def _probe(self) -> None:
        while not self._done.is_set():
            started = time.perf_counter()
            answer = self.node.request("GET", "/v1/kv/probe/small", timeout=120)
            assert answer.status == 200
            self.slowest_get = max(self.slowest_get, time.perf_counter() - started)
            self._done.wait(0.005)

    def __enter__(self) -> Watch:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        for thread in self._threads:
            thread.join(150)

    @property
    def growth(self) -> int:
        """Bytes the RSS grew by, at its peak, since the watch began."""
        return self.peak - self.baseline


def watched(node: NodeProcess, send: Callable[[], Any]) -> tuple[Any, Watch]:
    """Run ``send`` while watching ``node``; a small GET must stay within the bound."""
    with Watch(node) as watch:
        result = send()
    assert watch.slowest_get < SMALL_GET_BOUND, watch.slowest_get
    return result, watch
