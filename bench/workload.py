"""The data set every part of the benchmark shares.

The node, the bare aiohttp baseline and the raw ``sqlite3`` baseline must
serve *the same bytes* for the comparison to be fair, so keys and values are
derived here, deterministically, and each process regenerates them.
"""

from __future__ import annotations

import hashlib

NAMESPACE = "bench"
"""Namespace of every key the benchmark writes."""

GET_KEY_FORMAT = "k{:08d}"
"""Pre-populated keys, read by the GET runs: ``k00000000`` ... (9 bytes)."""

PUT_KEY_SPACE = 100_000_000
"""PUT runs write random keys ``p00000000`` ... ``p99999999``: the size of GET keys."""


def get_key(index: int) -> str:
    """Return the name of pre-populated key ``index``."""
    return GET_KEY_FORMAT.format(index)


def put_key(index: int) -> str:
    """Return the name of PUT key ``index`` (same length as :func:`get_key`)."""
    return f"p{index:08d}"


def value_for(index: int, size: int) -> bytes:
    """Return the value of key ``index``: ``size`` printable bytes, distinct per key."""
    digest = hashlib.blake2b(index.to_bytes(8, "big"), digest_size=32).hexdigest().encode()
    return (digest * (size // len(digest) + 1))[:size]


def dataset(keys: int, size: int) -> dict[str, bytes]:
    """Return every pre-populated key and its value."""
    return {get_key(i): value_for(i, size) for i in range(keys)}
