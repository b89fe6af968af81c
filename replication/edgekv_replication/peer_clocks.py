"""The clocks of the peers a node hears from, and the cap they put on its stamps.

Peers hold a change stamped more than ``max_clock_offset`` ahead of their own
wall clock until their clock catches up. A node whose wall clock jumps ahead
would stamp such changes, and as its clock never goes backwards, it would go
on stamping them after the jump is corrected. So the node stamps no further
than ``max_clock_offset`` beyond the *cluster clock*: the lower median of its
own wall clock and the clocks of the peers it has heard from lately.

Every batch carries its sender's wall clock. Each reading is kept as that
clock minus this node's monotonic clock at arrival, so an estimate moves on
with real time and no step of this node's own wall clock moves it (the
transit delay makes it err low, the safe side). With this node's clock as one
vote, the lower median of all is ``peers[len(peers) // 2]`` (peers sorted)
whenever this node's clock is above that -- the only case in which the cap
binds -- so the cap needs no per-stamp sorting: it is set on the clock
(:meth:`HybridLogicalClock.cap`) when a reading arrives.

A majority decides: one peer with a slow clock among correct ones does not
drag the others' stamps back. With a single peer the two clocks disagree with
no majority; the cap then follows the slower one, which is what lets the
slower one accept the changes at once. A node that has heard no peer cannot
know and stamps by its own wall clock.
"""

from __future__ import annotations

from edgekv_replication.hlc import COUNTER_BITS, HybridLogicalClock

FORGET_AFTER_MS = 60_000
"""A peer not heard from for this long no longer counts (heartbeats come every second)."""


class PeerClocks:
    """Readings of the peers' wall clocks, and the stamp ceiling they set on ``clock``."""

    __slots__ = ("_clock", "_forget_after_ms", "_max_offset_ms", "_median_base", "_readings")

    def __init__(
        self,
        clock: HybridLogicalClock,
        max_offset_ms: int,
        forget_after_ms: int = FORGET_AFTER_MS,
    ) -> None:
        """Cap ``clock`` at ``max_offset_ms`` beyond the cluster clock once peers are heard."""
        self._clock = clock
        self._max_offset_ms = max_offset_ms
        self._forget_after_ms = forget_after_ms
        self._readings: dict[int, tuple[int, int]] = {}
        """Per peer: (its wall clock minus our monotonic clock, our monotonic clock when heard)."""
        self._median_base: int | None = None

    def observe(self, peer: int, peer_wall_ms: int) -> None:
        """Record ``peer``'s wall clock as it just sent it (a batch's ``wall_ms``)."""
        heard = self._clock.monotonic_ms()
        self._readings[peer] = (peer_wall_ms - heard, heard)
        self._update()

    def forget(self, peer: int) -> None:
        """Stop counting ``peer`` (removed from the cluster)."""
        if self._readings.pop(peer, None) is not None:
            self._update()

    def expire(self) -> None:
        """Stop counting peers not heard from for ``forget_after_ms``."""
        oldest = self._clock.monotonic_ms() - self._forget_after_ms
        stale = [peer for peer, (_, heard) in self._readings.items() if heard < oldest]
        for peer in stale:
            del self._readings[peer]
        if stale:
            self._update()

    def _update(self) -> None:
        if not self._readings:
            self._median_base = None
            self._clock.cap(None)
            return
        bases = sorted(base for base, _ in self._readings.values())
        self._median_base = bases[len(bases) // 2]
        self._clock.cap(self._median_base + self._max_offset_ms)

    @property
    def peers(self) -> int:
        """How many peers' clocks count."""
        return len(self._readings)

    def cluster_ms(self) -> int | None:
        """The clock this node's stamps are held to, now (None: no peer heard).

        The lower median of the peers' clocks with this one, as far as it
        matters: when this node's clock is ahead of it, it is exact.
        """
        base = self._median_base
        return None if base is None else base + self._clock.monotonic_ms()

    def clock_ahead_ms(self) -> int | None:
        """How far this node's wall clock is ahead of the cluster clock (0 if not ahead)."""
        cluster = self.cluster_ms()
        return None if cluster is None else max(0, self._clock.wall_ms() - cluster)

    def stamps_ahead_ms(self) -> int | None:
        """How far this node's newest stamp is ahead of the cluster clock (0 if not ahead).

        Beyond ``max_offset_ms`` peers hold what this node stamps now (it
        counts on from stamps issued before the cap could act) until their
        clocks reach it.
        """
        cluster = self.cluster_ms()
        if cluster is None:
            return None
        return max(0, (self._clock.last >> COUNTER_BITS) - cluster)
