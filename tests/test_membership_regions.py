"""Member entries with regions, and reachability reported once per change."""

from __future__ import annotations

import time

from edgekv.peers.membership import Membership
from edgekv.store.store import Store


def _now() -> int:
    return time.time_ns() // 1_000_000


async def test_regions_are_kept_from_entries_that_carry_none(store: Store) -> None:
    members = Membership(store, store.node_id, max_ahead_ms=10_000)
    now = _now()
    changed, refused = await members.learn([(7, "http://a:1", "a", False, now, "eu")])
    assert changed
    assert refused == []
    assert members.regions() == {7: "eu"}
    # A node of a version without regions tells of the same member, later: the region stays.
    await members.learn([(7, "http://a:2", "a", False, now + 1, "")])
    assert members.regions() == {7: "eu"}
    assert members.active_urls() == {7: "http://a:2"}
    await members.introduce(7, "http://a:3", "a")
    assert members.regions() == {7: "eu"}
    # A region outside the alphabet is refused, as a peer's bad URL is.
    _, refused = await members.learn([(8, "http://b:1", "b", False, now, "e u")])
    assert [node for node, _ in refused] == [8]
    # Removal keeps the region (status shows where the removed member was).
    assert await members.remove(7)
    assert members.is_removed(7)
    assert 7 not in members.regions()


async def test_unreachable_members_are_reported_once_per_change(store: Store) -> None:
    members = Membership(store, store.node_id, max_ahead_ms=10_000)
    await members.learn([(7, "http://a:1", "a", False, _now(), "eu")])
    assert members.watch(timeout_ms=1000) == []  # never heard: joining, nothing to say
    assert members.state(7, 1000) == "joining"
    members.heard(7)
    assert members.watch(timeout_ms=1000) == []  # reachable, as assumed
    assert members.state(7, 1000) == "up"
    members.heard_ms[7] = _now() - 5000  # last heard 5 s ago
    assert members.watch(timeout_ms=1000) == [(7, False)]
    assert members.watch(timeout_ms=1000) == []  # said once
    assert members.state(7, 1000) == "down"
    members.heard(7)
    assert members.watch(timeout_ms=1000) == [(7, True)]
    assert members.state(7, 1000) == "up"


async def test_an_introduction_no_member_list_would_carry_is_not_recorded(store: Store) -> None:
    members = Membership(store, store.node_id, max_ahead_ms=10_000)
    await members.introduce(7, "http://a:1", "a", "not a region!")
    await members.introduce(8, "ftp://b", "b", "eu")
    assert members.members() == []
    await members.introduce(9, "http://c:1", "c", "eu")
    assert members.regions() == {9: "eu"}
