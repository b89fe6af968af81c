"""The stamp ceiling set by the peers' clocks (docs/design.md, "Clock safety")."""

from __future__ import annotations

import time
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from edgekv.skewed_clock import SkewedClock
from edgekv.store.kv import Write
from edgekv.store.store import Store
from edgekv_replication import COUNTER_BITS, HybridLogicalClock, unpack_hlc
from edgekv_replication.peer_clocks import PeerClocks

HOUR_MS = 3_600_000


class FakeTime:
    """A wall clock that may jump anywhere and a monotonic clock that only moves on."""

    def __init__(self, wall: int = 10**12, mono: int = 10**6) -> None:
        self.wall = wall
        self.mono = mono

    def clock(self, last: int = 0) -> HybridLogicalClock:
        return HybridLogicalClock(last, lambda: self.wall, lambda: self.mono)


# ("tick", wall, mono step): stamp a write; ("observe", stamp): merge a remote stamp;
# ("peer", peer, its wall clock): a batch arrives; ("forget", peer).
events = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(0, 2**40), st.integers(0, 5_000)),
        st.tuples(st.just("observe"), st.integers(0, 2**56), st.just(0)),
        st.tuples(st.just("peer"), st.integers(0, 4), st.integers(0, 2**40)),
        st.tuples(st.just("forget"), st.integers(0, 4), st.just(0)),
    ),
    min_size=1,
    max_size=200,
)


@given(events, st.integers(0, 2_000))
def test_stamps_increase_and_stay_within_the_offset_of_the_cluster_clock(
    script: list[tuple[str, int, int]], max_offset_ms: int
) -> None:
    time_ = FakeTime()
    clock = time_.clock()
    peer_clocks = PeerClocks(clock, max_offset_ms, forget_after_ms=2**62)
    readings: dict[int, tuple[int, int]] = {}  # the model: peer -> (its wall, our mono then)
    last = 0
    for kind, a, b in script:
        if kind == "observe":
            clock.observe(a)
            last = max(last, a)
        elif kind == "peer":
            peer_clocks.observe(a, b)
            readings[a] = (b, time_.mono)
        elif kind == "forget":
            peer_clocks.forget(a)
            readings.pop(a, None)
        else:
            time_.wall, time_.mono = a, time_.mono + b
            stamp = clock.now()
            assert stamp > last, "strictly increasing, past everything observed"
            stamp_ms = stamp >> COUNTER_BITS
            if not readings:
                assert stamp >= time_.wall << COUNTER_BITS, "alone: never behind the wall clock"
            else:
                estimates = sorted(wall + time_.mono - heard for wall, heard in readings.values())
                # The lower median of this node's clock and its peers'.
                cluster = sorted([*estimates, time_.wall])[len(estimates) // 2]
                allowed = cluster + max_offset_ms
                assert stamp_ms <= allowed or stamp == last + 1, "capped unless monotonicity"
                assert stamp >= min(time_.wall, allowed) << COUNTER_BITS, "not behind the cap"
            last = stamp


def test_the_ceiling_ignores_a_step_of_the_own_wall_clock() -> None:
    time_ = FakeTime()
    clock = time_.clock()
    peers = PeerClocks(clock, 500)
    peers.observe(1, time_.wall)
    time_.wall += HOUR_MS + 20  # the jump, before any other batch arrives
    time_.mono += 20
    assert unpack_hlc(clock.now()) == (time_.wall - HOUR_MS + 500, 0)
    assert peers.clock_ahead_ms() == HOUR_MS
    time_.wall -= HOUR_MS - 1_000  # corrected: stamps follow the wall clock again
    time_.mono += 1_000
    assert unpack_hlc(clock.now()) == (time_.wall, 0)
    assert peers.clock_ahead_ms() == 0
    assert peers.stamps_ahead_ms() == 0


def test_counter_overflow_at_the_ceiling_carries_past_it() -> None:
    time_ = FakeTime()
    clock = time_.clock()
    peers = PeerClocks(clock, 0)
    peers.observe(1, time_.wall - HOUR_MS)
    stamps = [clock.now() for _ in range(2**16 + 2)]
    assert stamps == sorted(set(stamps)), "monotonicity wins over the ceiling"
    ceiling = time_.wall - HOUR_MS
    assert unpack_hlc(stamps[0]) == (ceiling, 0)
    assert unpack_hlc(stamps[-1]) == (ceiling + 1, 1)


def test_one_slow_peer_among_correct_ones_does_not_hold_stamps_back() -> None:
    time_ = FakeTime()
    clock = time_.clock()
    peers = PeerClocks(clock, 500)
    peers.observe(1, time_.wall)
    peers.observe(2, time_.wall - HOUR_MS)
    stamp = clock.now()
    assert unpack_hlc(stamp)[0] == time_.wall
    assert peers.clock_ahead_ms() == 0
    peers.forget(1)  # the slow peer alone: with no majority, its clock sets the cap
    assert clock.ceiling_ms() == time_.wall - HOUR_MS + 500
    assert clock.now() == stamp + 1, "counting on from the stamps already issued"


def test_peers_not_heard_from_stop_counting() -> None:
    time_ = FakeTime()
    clock = time_.clock()
    peers = PeerClocks(clock, 500, forget_after_ms=60_000)
    assert (peers.clock_ahead_ms(), peers.stamps_ahead_ms()) == (None, None)
    peers.observe(1, time_.wall - HOUR_MS)
    assert peers.peers == 1
    time_.mono += 60_001
    peers.expire()
    assert peers.peers == 0
    assert peers.clock_ahead_ms() is None
    assert unpack_hlc(clock.now())[0] == time_.wall, "alone again: the wall clock"


async def test_a_restart_does_not_bring_a_capped_jump_back(tmp_path: Path) -> None:
    skewed = SkewedClock()
    store = Store(tmp_path, wall_clock_ms=skewed)
    true_ms = time.time_ns() // 1_000_000
    store.peer_clocks.observe(1, true_ms)
    skewed.offset_ms = HOUR_MS
    first = await store.write("ns", [Write(b"k", b"while ahead")])
    assert first.hlc >> COUNTER_BITS < true_ms + HOUR_MS // 2
    store.close()
    reopened = Store(tmp_path)
    try:
        # The persisted high-water mark is the capped stamp, not the jumped clock.
        later = await reopened.write("ns", [Write(b"k", b"after restart")])
        assert first.hlc < later.hlc < (true_ms + HOUR_MS // 2) << COUNTER_BITS
        entry = reopened.get("ns", b"k")
        assert entry is not None
        assert entry.value == b"after restart"
    finally:
        reopened.close()
