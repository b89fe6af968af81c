"""Small statistics for reports: quantiles of latencies."""

from __future__ import annotations

import math
from collections.abc import Iterable

QUANTILES = (0.0, 0.5, 0.95, 0.99, 1.0)


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (nearest rank)."""
    if not values:
        return math.nan
    rank = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return values[rank]


def quantiles(values: Iterable[float]) -> dict[str, float | None]:
    """Min, median, p95, p99 and max of ``values``, in seconds (None when empty)."""
    ordered = sorted(values)
    names = {0.0: "min", 0.5: "p50", 0.95: "p95", 0.99: "p99", 1.0: "max"}
    return {names[q]: (round(quantile(ordered, q), 4) if ordered else None) for q in QUANTILES}
