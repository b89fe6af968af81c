"""The per-token token bucket, and the settings that feed it."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgekv.auth import TokenSpec, hash_token, new_token, parse_tokens, token_toml
from edgekv.config import ConfigError, load_config
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


def test_config_tokens_take_a_rate_limit_and_refuse_a_bad_one(tmp_path: Path) -> None:
    token = new_token()
    entry = {"name": "fn", "hash": hash_token(token), "scopes": ["read:x"], "rate_limit": 5}
    (spec_,) = parse_tokens([entry])
    assert spec_.rate_limit == 5.0
    for bad in (-1, "5", True):
        with pytest.raises(ValueError, match="rate_limit"):
            parse_tokens([{**entry, "rate_limit": bad}])
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text(token_toml("fn", token, ["read:x"]) + "rate_limit = 2.5\n")
    # A top-level rate_limit after a [[tokens]] table belongs to that token in TOML.
    (loaded,) = load_config(env={}, config_file=config_file).tokens
    assert loaded.rate_limit == 2.5


def test_reserved_namespaces_cannot_be_declared_strong() -> None:
    env = {"EDGEKV_UPSTREAM": "postgresql://x/y", "EDGEKV_STRONG_NAMESPACES": "_edgekv.tokens"}
    with pytest.raises(ConfigError, match="reserved"):
        load_config(env=env)
