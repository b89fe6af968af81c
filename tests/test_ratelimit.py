"""The per-token token bucket."""

from __future__ import annotations

from edgekv.auth import TokenSpec
from edgekv.ratelimit import RateLimiter


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def spec(name: str, rate: float | None = None) -> TokenSpec:
    return TokenSpec(name, f"sha256:{name}", ("admin",), rate)


def test_bucket_refills_at_the_rate_and_names_the_wait() -> None:
    clock = Clock()
    limiter = RateLimiter(2.0, burst=4, clock=clock)
    token = spec("a")
    assert [limiter.retry_after(token) for _ in range(4)] == [None] * 4
    assert limiter.retry_after(token) == 1  # half a request short at 2/s: wait 1 s
    clock.now += 0.5
    assert limiter.retry_after(token) is None
    assert limiter.retry_after(token) == 1


def test_own_rate_overrides_and_zero_means_unlimited() -> None:
    clock = Clock()
    limiter = RateLimiter(0.0, clock=clock)
    assert all(limiter.retry_after(spec("free")) is None for _ in range(1000))
    slow = spec("slow", 0.1)
    assert limiter.retry_after(slow) is None
    assert limiter.retry_after(slow) == 10
    limiter.reconfigure(5.0, 0)
    assert limiter.retry_after(spec("now-limited")) is None
    unlimited = spec("unlimited", 0.0)
    assert all(limiter.retry_after(unlimited) is None for _ in range(100))


def test_buckets_are_per_token() -> None:
    limiter = RateLimiter(1.0, clock=Clock())
    assert limiter.retry_after(spec("a")) is None
    assert limiter.retry_after(spec("a")) == 1
    assert limiter.retry_after(spec("b")) is None
