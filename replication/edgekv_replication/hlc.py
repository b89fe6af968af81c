"""Hybrid logical clock (HLC) and write stamps.

An HLC value is one 64-bit integer ``(wall_ms << 16) | counter``: it sorts like
wall-clock time, yet never goes backwards and always moves past every stamp the
node has seen. Writes are ordered by the pair ``(hlc, node_id)`` -- the
:class:`Stamp` -- so two nodes can never produce equal stamps.

The clock is a plain object with no locking: one thread owns it (the store's
writer thread in a node).

A clock may be given a *ceiling* (:meth:`HybridLogicalClock.cap`): the
greatest wall-clock millisecond a new stamp may take from the wall clock,
expressed against the monotonic clock so that a jump of the wall clock cannot
move it. :class:`edgekv_replication.peer_clocks.PeerClocks` sets it from the
clocks of the peers, so a node whose own clock runs ahead stamps what its
peers accept at once (docs/design.md, "Clock safety").
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


def monotonic_ms() -> int:
    """This process's monotonic clock in milliseconds: unmoved by wall-clock steps."""
    return time.monotonic_ns() // 1_000_000


class HybridLogicalClock:
    """A monotonic hybrid logical clock.

    ``now()`` returns a value greater than every value returned or observed
    before, and equal to the wall clock (shifted into the high bits) whenever
    the wall clock is ahead. When the wall clock steps backwards, or more than
    65,536 stamps are issued within one millisecond, the value simply keeps
    counting upwards from the last one, carrying into the millisecond part.

    With a ceiling (:meth:`cap`), the wall clock counts for no more than the
    ceiling: a new value is ``max(min(wall, ceiling) << 16, last + 1)``.
    Monotonicity wins over the ceiling: a value already issued or observed
    beyond it is counted on from, never taken back.

    >>> clock = HybridLogicalClock(wall_clock_ms=lambda: 1000)
    >>> clock.now() == pack_hlc(1000, 0), clock.now() == pack_hlc(1000, 1)
    (True, True)
    """

    __slots__ = ("_ceiling_base", "_last", "_monotonic_ms", "_wall_clock_ms")

    def __init__(
        self,
        last: int = 0,
        wall_clock_ms: Callable[[], int] = _wall_clock_ms,
        monotonic_clock_ms: Callable[[], int] = monotonic_ms,
    ) -> None:
        """Start the clock after ``last``: the persisted high-water mark."""
        if not 0 <= last <= MAX_HLC:
            raise ValueError(f"HLC high-water mark out of range: {last}")
        self._last = last
        self._wall_clock_ms = wall_clock_ms
        self._monotonic_ms = monotonic_clock_ms
        self._ceiling_base: int | None = None

    @property
    def last(self) -> int:
        """The high-water mark: the greatest value issued or observed."""
        return self._last

    def now(self) -> int:
        """Return a new HLC value, greater than every earlier one."""
        wall = self._wall_clock_ms()
        # On every write: one attribute test without a ceiling, one more clock read with.
        if self._ceiling_base is not None:
            ceiling = self._ceiling_base + self._monotonic_ms()
            if wall > ceiling:
                wall = ceiling
        candidate = max(wall << COUNTER_BITS, self._last + 1)
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

    def monotonic_ms(self) -> int:
        """The monotonic clock ceilings are expressed against, in milliseconds."""
        return self._monotonic_ms()

    def cap(self, ceiling_base: int | None) -> None:
        """Cap the wall clock's part of new stamps at ``ceiling_base + monotonic_ms()``.

        ``None`` lifts the cap. The ceiling is kept against the monotonic
        clock, so it moves on at the rate of real time whatever the wall
        clock does in between.
        """
        self._ceiling_base = ceiling_base

    def ceiling_ms(self) -> int | None:
        """The current ceiling in wall-clock milliseconds (None: no cap)."""
        base = self._ceiling_base
        return None if base is None else base + self._monotonic_ms()
