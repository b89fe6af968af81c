"""Per-token request-rate limits: a token bucket per token.

Each token may make ``rate`` requests per second on average (its own
``rate_limit``, else the node's ``rate_limit``; 0 means no limit). A token
without a rate of its own may make up to ``rate_limit_burst`` requests at
once; a token with one (and every token when ``rate_limit_burst`` is 0) one
second's worth, at least one request. A request over the limit is answered
429 ``rate_limited`` with ``Retry-After``: the whole seconds until the bucket
holds a request again (at most :data:`MAX_RETRY_AFTER`). Buckets are kept
per token hash, so memory grows with the number of tokens that authenticated,
never with the requests or with unknown tokens; a bucket that has filled up
again is dropped (a new one starts full) once the buckets have doubled, so
tokens revoked or idle (runtime tokens come and go) are not kept for good.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

from edgekv.auth import TokenSpec

MAX_RETRY_AFTER = 86_400
"""Most seconds ``Retry-After`` names: a day. A rate far below one request a day would
name a wait of more digits than a client parses (1e-300/s) or none at all (past a
float's range, which ``math.ceil`` refuses)."""

_FIRST_SWEEP = 1024
"""Buckets kept before full ones are first dropped; then twice those left (amortised O(1))."""


class RateLimiter:
    """The buckets of every token of one node."""

    __slots__ = ("_buckets", "_burst", "_clock", "_rate", "_sweep_at")

    def __init__(
        self, rate: float, burst: int = 0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Limit tokens without a rate of their own to ``rate`` requests per second,
        bursts to ``burst`` requests (0: one second's worth)."""
        self._rate = rate
        self._burst = burst
        self._clock = clock
        self._buckets: dict[str, list[float]] = {}
        """Per token hash: ``[requests available, when last refilled, when full again]``."""
        self._sweep_at = _FIRST_SWEEP
        """Drop full buckets when a new one would make this many."""

    def reconfigure(self, rate: float, burst: int) -> None:
        """Take new node-wide settings (``SIGHUP``); buckets carry on."""
        self._rate = rate
        self._burst = burst

    def retry_after(self, spec: TokenSpec) -> int | None:
        """Take one request from ``spec``'s bucket; None if allowed, else the seconds to wait."""
        own = spec.rate_limit is not None
        rate = spec.rate_limit if spec.rate_limit is not None else self._rate
        if rate <= 0:
            return None
        # The node's burst goes with the node's rate; a token's own rate bursts one second's worth.
        capacity = float(self._burst) if self._burst > 0 and not own else max(1.0, rate)
        now = self._clock()
        bucket = self._buckets.get(spec.hash)
        if bucket is None:
            if len(self._buckets) >= self._sweep_at:
                self._drop_full(now)
            bucket = self._buckets[spec.hash] = [capacity, now, now]
        available = min(capacity, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        allowed = available >= 1.0
        bucket[0] = available - 1.0 if allowed else available
        bucket[2] = now + (capacity - bucket[0]) / rate  # inf for the tiniest rates: kept
        if allowed:
            return None
        wait = (1.0 - available) / rate
        return max(1, math.ceil(wait)) if wait < MAX_RETRY_AFTER else MAX_RETRY_AFTER

    def tracked(self) -> int:
        """How many tokens have a bucket."""
        return len(self._buckets)

    def _drop_full(self, now: float) -> None:
        """Forget the buckets that are full again: a fresh one would be the same."""
        self._buckets = {h: bucket for h, bucket in self._buckets.items() if bucket[2] > now}
        self._sweep_at = max(_FIRST_SWEEP, 2 * len(self._buckets))
