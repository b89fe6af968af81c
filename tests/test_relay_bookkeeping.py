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


def test_an_origin_reached_by_relay_is_deferred_at_every_stream_but_its_relays() -> None:
    relays = RelayDeferrals()
    relays.designate({C: A})
    assert relays.wanted(B) == {}  # A has not shown it sends relayed marks yet
    assert not relays.relaying(A, [])  # marks of nothing: it vouches for nothing yet
    assert relays.wanted(B) == {}
    assert relays.relaying(A, [C])  # its first batch with relayed marks of C: ask the others
    assert not relays.relaying(A, [C])
    assert relays.wanted(B) == {C: 0}
    assert relays.wanted(A) == {}
    relays.asked(B, {C})
    relays.committed(A, None, [(C, 900)], head=5)
    assert relays.wanted(B) == {C: 900}
    assert relays.held.at(5) == {C: 900}  # passed on to this node's own pullers
    assert relays.held.at(4) == {}


def test_relayed_marks_of_a_deferred_origin_say_nothing() -> None:
    relays = RelayDeferrals()
    relays.pulling(C)
    relays.asked(B, {C})
    relays.committed(B, None, [(C, 900)], head=5)  # B leaves C out: its mark is not ours
    assert C not in relays.marks


def test_a_failed_relay_lifts_the_deferral_of_what_it_relayed() -> None:
    relays = RelayDeferrals()
    relays.designate({C: A})
    relays.relaying(A, [C])
    relays.asked(B, {C})
    relays.stream_ended(A, failed=False)  # a deliberate restart: the deferral stays
    assert not relays.must_restart(B)
    relays.stream_ended(A)
    assert relays.must_restart(B)
    assert relays.wanted(B) == {}


def test_a_new_relay_restarts_the_stream_that_defers_what_it_should_carry() -> None:
    relays = RelayDeferrals()
    relays.designate({C: A})
    relays.relaying(A, [C])
    relays.relaying(B, [C])
    relays.asked(B, {C})
    relays.designate({C: B})
    assert relays.must_restart(B)
    assert relays.wanted(A) == {C: 0}


def test_marks_are_not_recorded_while_changes_are_held_back() -> None:
    relays = RelayDeferrals()
    relays.holding = True
    relays.committed(A, 700, head=3)
    assert relays.held.at(10) == {}
    relays.holding = False
    relays.committed(A, 700, head=8)  # nothing new, but not recorded before
    assert relays.held.at(10) == {A: 700}
    assert relays.held.at(7) == {}


def test_marks_of_an_origin_go_on_only_while_its_way_here_is_sound() -> None:
    """A node whose relay for C failed takes C from every peer: it must not pass C's marks on.

    Else a puller that chose it as relay for C defers C at its other streams
    while this node takes C from that puller only: a cycle, C's writes reach neither.
    """
    relays = RelayDeferrals()
    relays.designate({C: A})
    relays.relaying(A, [C])
    relays.committed(A, None, [(C, 900)], head=5)
    assert relays.vouches(C)
    assert relays.relayed_at(5) == {C: 900}
    assert not relays.withdrawn([C])
    relays.stream_ended(A)  # the relay is gone
    assert not relays.vouches(C)
    assert relays.relayed_at(5) == {}  # held, but not passed on
    assert relays.withdrawn([C])  # a stream that passed C's marks on closes
    assert not relays.withdrawn([])
    relays.pulling(C)  # pulled directly: sound again
    assert relays.vouches(C)
