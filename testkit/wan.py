"""The WAN model: regions, the round-trip time between any two, and the shape of a link.

One place for the latency matrix, so the real-process harness (each peer link
through a :class:`~testkit.proxy.TcpProxy` shaped by :meth:`WanModel.shape`)
and the discrete-event simulator (:mod:`testkit.simscale`) see the same
network.

The geography is the issue's: 2 ms RTT between two PoPs of one region, and
40, 80 or 150 ms between regions. Regions are grouped into continents laid
out on a line: two regions of one continent are 40 ms apart, neighbouring
continents 80 ms, farther ones 150 ms. With 4 regions (the 48-PoP bench:
continents ``[0, 0, 1, 2]``) all three inter-region figures occur; with 20
regions (the simulator: 4 continents of 5) likewise, and 150 ms is the
largest RTT either way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

INTRA_REGION_RTT_MS = 2.0
SAME_CONTINENT_RTT_MS = 40.0
NEIGHBOUR_CONTINENT_RTT_MS = 80.0
FAR_RTT_MS = 150.0

JITTER_FRACTION = 0.1
"""Jitter, as a fraction of a link's one-way delay (at most; drawn per chunk)."""


@dataclass(frozen=True)
class LinkShape:
    """What a link does to the bytes of one direction.

    ``delay_ms`` is one way (half the RTT); each chunk also waits a jitter
    drawn uniformly from ``[0, jitter_ms]``; ``bytes_per_second`` (None:
    unlimited) is the link's bandwidth, ``burst_bytes`` its token bucket.
    """

    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    bytes_per_second: float | None = None
    burst_bytes: int = 64 * 1024

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0:
            raise ValueError("delay and jitter are durations (>= 0)")
        if self.bytes_per_second is not None and self.bytes_per_second <= 0:
            raise ValueError("a bandwidth limit is a positive rate")
        if self.burst_bytes <= 0:
            raise ValueError("the token bucket must hold at least one byte")

    @property
    def shaped(self) -> bool:
        """Whether the link does anything at all (else bytes go straight through)."""
        return self.delay_ms > 0 or self.jitter_ms > 0 or self.bytes_per_second is not None

    def one_way_ms(self, rng: random.Random) -> float:
        """The delay of one chunk: the base delay plus a jitter draw."""
        return self.delay_ms + (rng.uniform(0, self.jitter_ms) if self.jitter_ms else 0.0)


@dataclass(frozen=True)
class WanModel:
    """Regions and their RTTs; ``continent_of`` places each region (see the module text)."""

    regions: tuple[str, ...]
    continent_of: tuple[int, ...]
    jitter_fraction: float = JITTER_FRACTION

    def __post_init__(self) -> None:
        if len(self.regions) != len(self.continent_of) or not self.regions:
            raise ValueError("one continent per region, and at least one region")

    def rtt_ms(self, a: str, b: str) -> float:
        """The round-trip time between a PoP of region ``a`` and one of region ``b``."""
        if a == b:
            return INTRA_REGION_RTT_MS
        distance = abs(self.continent(a) - self.continent(b))
        if distance == 0:
            return SAME_CONTINENT_RTT_MS
        return NEIGHBOUR_CONTINENT_RTT_MS if distance == 1 else FAR_RTT_MS

    def continent(self, region: str) -> int:
        return self.continent_of[self.regions.index(region)]

    def shape(self, a: str, b: str, bytes_per_second: float | None = None) -> LinkShape:
        """The shape of one direction of a link from region ``a`` to region ``b``."""
        one_way = self.rtt_ms(a, b) / 2
        return LinkShape(one_way, one_way * self.jitter_fraction, bytes_per_second)

    @property
    def largest_rtt_ms(self) -> float:
        return max(self.rtt_ms(a, b) for a in self.regions for b in self.regions)


def wan_model(n_regions: int, per_continent: int | None = None) -> WanModel:
    """``n_regions`` regions named ``r00``, ``r01``, ...; continents of ``per_continent``.

    By default 4 regions sit on 3 continents (``[0, 0, 1, 2]``, every
    inter-region RTT of the issue occurs) and more regions fill continents of 5.
    """
    names = tuple(f"r{i:02d}" for i in range(n_regions))
    if per_continent is None and n_regions <= 4:
        continents = (0, 0, 1, 2)[:n_regions]
    else:
        size = per_continent or 5
        continents = tuple(i // size for i in range(n_regions))
    return WanModel(names, continents)


def hub_delays(wan: WanModel) -> tuple[dict[str, float], float]:
    """Each region's one-way delay to one server all regions share, and the fit's worst error.

    A single backbone server (NATS, PostgreSQL) cannot sit at every pair's
    distance; the real-process harness and ``bench.scale`` delay each region's
    link to it by these.

    Least squares of ``d[a] + d[b] = rtt(a, b) / 2`` over the region pairs
    (normal equations, solved by Gauss-Jordan: at most a few dozen regions).
    """
    regions = wan.regions
    n = len(regions)
    if n == 1:
        return {regions[0]: wan.rtt_ms(regions[0], regions[0]) / 2}, 0.0
    pairs = [(a, b) for a in range(n) for b in range(a + 1, n)]
    matrix = [[0.0] * n for _ in range(n)]
    rhs = [0.0] * n
    for a, b in pairs:
        target = wan.rtt_ms(regions[a], regions[b]) / 2
        for i in (a, b):
            matrix[i][a] += 1
            matrix[i][b] += 1
            rhs[i] += target
    if n == 2:  # one equation, two unknowns: split it
        half = wan.rtt_ms(regions[0], regions[1]) / 4
        return {regions[0]: half, regions[1]: half}, 0.0
    for col in range(n):
        pivot = matrix[col][col]
        for j in range(n):
            matrix[col][j] /= pivot
        rhs[col] /= pivot
        for row in range(n):
            if row != col and matrix[row][col]:
                factor = matrix[row][col]
                for j in range(n):
                    matrix[row][j] -= factor * matrix[col][j]
                rhs[row] -= factor * rhs[col]
    delays = {regions[i]: max(0.5, rhs[i]) for i in range(n)}
    worst = max(
        abs(delays[regions[a]] + delays[regions[b]] - wan.rtt_ms(regions[a], regions[b]) / 2)
        for a, b in pairs
    )
    return delays, worst
