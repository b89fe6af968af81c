"""Hybrid logical clock: monotonic, ordered, persisted across restarts."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edgekv.store.kv import Write
from edgekv.store.store import Store
from edgekv_replication import COUNTER_BITS, HybridLogicalClock, Stamp, pack_hlc, unpack_hlc

# A sequence of clock events: ("tick", wall_ms) reads the clock at that wall time,
# ("observe", remote) merges a remote stamp. Wall time may jump backwards freely.
events = st.lists(
    st.one_of(
        st.tuples(st.just("tick"), st.integers(0, 2**40)),
        st.tuples(st.just("observe"), st.integers(0, 2**56)),
    ),
    min_size=1,
    max_size=200,
)


@given(events)
def test_now_is_strictly_increasing_and_passes_everything_observed(
    script: list[tuple[str, int]],
) -> None:
    wall = [0]
    clock = HybridLogicalClock(wall_clock_ms=lambda: wall[0])
    issued: list[int] = []
    seen = 0
    for kind, value in script:
        if kind == "observe":
            clock.observe(value)
            seen = max(seen, value)
        else:
            wall[0] = value
            stamp = clock.now()
            assert stamp > seen
            assert stamp >= value << COUNTER_BITS, "never behind the wall clock"
            if issued:
                assert stamp > issued[-1]
            issued.append(stamp)
            seen = stamp


@given(st.integers(0, 2**40), st.integers(0, 2**16 - 1))
def test_pack_and_unpack_are_inverse(wall_ms: int, counter: int) -> None:
    assert unpack_hlc(pack_hlc(wall_ms, counter)) == (wall_ms, counter)


@given(st.integers(0, 2**40), st.integers(0, 2**40))
def test_hlc_order_follows_wall_time(a: int, b: int) -> None:
    if a < b:
        assert pack_hlc(a, 2**16 - 1) < pack_hlc(b, 0)


@given(
    st.tuples(st.integers(0, 2**62), st.integers(1, 2**63 - 1)),
    st.tuples(st.integers(0, 2**62), st.integers(1, 2**63 - 1)),
)
def test_stamps_are_totally_ordered_by_hlc_then_node(
    a: tuple[int, int], b: tuple[int, int]
) -> None:
    sa, sb = Stamp(*a), Stamp(*b)
    assert (sa < sb) or (sb < sa) or (sa == sb)
    if sa.hlc != sb.hlc:
        assert (sa < sb) == (sa.hlc < sb.hlc)


def test_counter_overflow_carries_into_the_millisecond() -> None:
    clock = HybridLogicalClock(wall_clock_ms=lambda: 5)
    stamps = [clock.now() for _ in range(2**16 + 2)]
    assert stamps == sorted(set(stamps))
    assert unpack_hlc(stamps[-1])[0] == 6


def test_clock_rejects_out_of_range_high_water() -> None:
    with pytest.raises(ValueError, match="out of range"):
        HybridLogicalClock(-1)


async def test_high_water_mark_survives_restart_with_clock_stepped_back(tmp_path: Path) -> None:
    store = Store(tmp_path)
    result = await store.write("ns", [Write(b"k", b"v")])
    store.close()
    reopened = Store(tmp_path)
    try:
        # Even with a wall clock far in the past, the next stamp is newer.
        reopened.clock._wall_clock_ms = lambda: 0
        assert reopened.clock.now() > result.hlc
        later = await reopened.write("ns", [Write(b"k", b"w")])
        assert later.hlc > result.hlc
        entry = reopened.get("ns", b"k")
        assert entry is not None
        assert entry.value == b"w"
    finally:
        reopened.close()
