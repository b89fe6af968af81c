"""Which origins a puller asks its other peers to defer, and when those streams restart."""

from __future__ import annotations

from edgekv_replication.relays import RelayDeferrals

A, B, C = 0xA, 0xB, 0xC


def test_an_origin_is_deferred_elsewhere_once_its_own_stream_carries_marks() -> None:
    relays = RelayDeferrals()
    assert relays.wanted(B) == {}
    relays.committed(A, None)  # a batch without a mark (an unclean origin) changes nothing
    assert relays.wanted(B) == {}
    relays.pulling(A)
    relays.committed(A, 700)
    assert relays.wanted(B) == {A: 700}
    assert relays.wanted(A) == {}  # never ask a server to leave out its own writes
    relays.committed(A, 500)  # marks only move forward
    assert relays.wanted(B) == {A: 700}


def test_a_failed_direct_stream_restarts_the_streams_that_defer_it() -> None:
    relays = RelayDeferrals()
    relays.pulling(A)
    relays.asked(B, {A})
    relays.asked(C, set())
    relays.stream_ended(A)
    assert relays.must_restart(B)
    assert not relays.must_restart(C)
    assert relays.wanted(B) == {}  # and the new stream defers A no more
    relays.stream_started(B)
    assert not relays.must_restart(B)


def test_a_deliberate_restart_restarts_nothing_else() -> None:
    relays = RelayDeferrals()
    relays.pulling(A)
    relays.pulling(B)
    relays.asked(A, {B})
    relays.asked(B, {A})
    relays.stream_ended(B, failed=False)  # B's stream reopens at once, to defer less
    assert not relays.must_restart(A)
    assert relays.wanted(C) == {A: 0, B: 0}
