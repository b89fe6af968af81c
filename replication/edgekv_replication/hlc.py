"""Hybrid logical clock (HLC) and write stamps.

An HLC value is one 64-bit integer ``(wall_ms << 16) | counter``: it sorts like
wall-clock time, yet never goes backwards and always moves past every stamp the
node has seen. Writes are ordered by the pair ``(hlc, node_id)`` -- the
:class:`Stamp` -- so two nodes can never produce equal stamps.

The clock is a plain object with no locking: one thread owns it (the store's
writer thread in a node).
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from typing import NamedTuple

COUNTER_BITS = 16
_COUNTER_MASK = (1 << COUNTER_BITS) - 1
# SQLite INTEGER is a signed 64-bit value; every stamp must fit in it.
MAX_HLC = (1 << 63) - 1


def pack_hlc(wall_ms: int, counter: int) -> int:
    """Return the HLC integer for a wall-clock millisecond and a counter."""
    if not 0 <= counter <= _COUNTER_MASK:
        raise ValueError(f"counter out of range: {counter}")
    return (wall_ms << COUNTER_BITS) | counter


def unpack_hlc(hlc: int) -> tuple[int, int]:
    """Return ``(wall_ms, counter)`` of an HLC integer."""
    return hlc >> COUNTER_BITS, hlc & _COUNTER_MASK


def new_node_id() -> int:
    """Return a random 63-bit node id (positive, fits SQLite's INTEGER)."""
    while True:
        node = secrets.randbits(63)
        if node:
            return node


class Stamp(NamedTuple):
    """The total write order: last writer wins by ``(hlc, node)``."""

    hlc: int
    node: int


def _wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


class HybridLogicalClock:
    """A monotonic hybrid logical clock.

    ``now()`` returns a value greater than every value returned or observed
    before, and equal to the wall clock (shifted into the high bits) whenever
    the wall clock is ahead. When the wall clock steps backwards, or more than
    65,536 stamps are issued within one millisecond, the value simply keeps
    counting upwards from the last one, carrying into the millisecond part.

    >>> clock = HybridLogicalClock(wall_clock_ms=lambda: 1000)
    >>> clock.now() == pack_hlc(1000, 0), clock.now() == pack_hlc(1000, 1)
    (True, True)
    """

    __slots__ = ("_last", "_wall_clock_ms")

    def __init__(
        self,
        last: int = 0,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
    ) -> None:
        """Start the clock after ``last``: the persisted high-water mark."""
        if not 0 <= last <= MAX_HLC:
            raise ValueError(f"HLC high-water mark out of range: {last}")
        self._last = last
        self._wall_clock_ms = wall_clock_ms

    @property
    def last(self) -> int:
        """The high-water mark: the greatest value issued or observed."""
        return self._last

    def now(self) -> int:
        """Return a new HLC value, greater than every earlier one."""
        candidate = max(self._wall_clock_ms() << COUNTER_BITS, self._last + 1)
        if candidate > MAX_HLC:
            raise OverflowError("hybrid logical clock exhausted")
        self._last = candidate
        return candidate

    def observe(self, remote: int) -> None:
        """Move the clock past a remote stamp so later writes order after it."""
        if remote > self._last:
            if remote > MAX_HLC:
                raise ValueError(f"remote HLC out of range: {remote}")
            self._last = remote

    def wall_ms(self) -> int:
        """The current wall-clock time in milliseconds, as this clock reads it."""
        return self._wall_clock_ms()
