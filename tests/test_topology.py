"""The bounded regional mesh: who pulls from whom (edgekv_replication.topology)."""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from edgekv_replication.topology import chosen_relays, direct_peers, ring_offsets

REGIONS = ("eu", "us", "ap")

memberships = st.dictionaries(
    st.integers(min_value=1, max_value=2**63 - 1), st.sampled_from(REGIONS), min_size=1, max_size=80
)


def pulls(members: Mapping[int, str], limit: int, *, backbone: bool) -> dict[int, list[int]]:
    """Every member's direct peers."""
    return {
        me: direct_peers(me, members, region, limit, backbone=backbone)
        for me, region in members.items()
    }


def reached_from(source: int, graph: dict[int, list[int]]) -> set[int]:
    """Members a change of ``source`` reaches over peer streams (it flows peer -> puller)."""
    pullers: dict[int, list[int]] = {node: [] for node in graph}
    for puller, peers in graph.items():
        for peer in peers:
            pullers[peer].append(puller)
    seen, todo = {source}, deque([source])
    while todo:
        for puller in pullers[todo.popleft()]:
            if puller not in seen:
                seen.add(puller)
                todo.append(puller)
    return seen


def test_a_small_region_is_a_full_mesh() -> None:
    members = {1: "eu", 2: "eu", 3: "eu", 4: "us"}
    assert direct_peers(1, members, "eu", 16, backbone=True) == [2, 3]
    assert direct_peers(4, members, "us", 16, backbone=True) == []


def test_without_a_backbone_regions_are_ignored() -> None:
    members = {1: "eu", 2: "eu", 3: "us"}
    assert direct_peers(1, members, "eu", 16, backbone=False) == [2, 3]


def test_the_bound_and_the_ring_neighbours() -> None:
    members = dict.fromkeys(range(1, 41), "eu")
    peers = direct_peers(10, members, "eu", 4, backbone=True)
    assert len(peers) == 4
    assert {9, 11, 8, 12} == set(peers)  # distances 1, -1, 2, -2
    assert direct_peers(10, members, "eu", 0, backbone=True) == []


def test_ring_offsets() -> None:
    assert ring_offsets(1) == []
    assert ring_offsets(2) == [1, -1]
    assert ring_offsets(9) == [1, -1, 2, -2, 4, -4, 8, -8]


def test_me_need_not_be_a_member_yet() -> None:
    members = dict.fromkeys(range(1, 30), "eu")
    peers = direct_peers(100, members, "eu", 5, backbone=True)
    assert len(peers) == 5
    assert 29 in peers  # the predecessor on the ring


@settings(max_examples=150, deadline=None)
@given(members=memberships, limit=st.integers(min_value=1, max_value=20), backbone=st.booleans())
def test_bounded_in_region_and_stable(members: dict[int, str], limit: int, backbone: bool) -> None:
    for me, region in members.items():
        peers = direct_peers(me, members, region, limit, backbone=backbone)
        assert len(peers) <= limit
        assert me not in peers
        assert peers == sorted(set(peers))
        if backbone:
            assert all(members[peer] == region for peer in peers)
        eligible = [n for n in members if n != me and (not backbone or members[n] == region)]
        assert len(peers) == min(limit, len(eligible))
        # The same whatever order the member list came in.
        shuffled = dict(reversed(list(members.items())))
        assert direct_peers(me, shuffled, region, limit, backbone=backbone) == peers


@settings(max_examples=150, deadline=None)
@given(members=memberships, limit=st.integers(min_value=1, max_value=6), backbone=st.booleans())
def test_every_change_reaches_its_region_or_everyone(
    members: dict[int, str], limit: int, backbone: bool
) -> None:
    graph = pulls(members, limit, backbone=backbone)
    for source, region in members.items():
        reached = reached_from(source, graph)
        if backbone:
            assert reached == {n for n, r in members.items() if r == region}
        else:
            assert reached == set(members)


@settings(max_examples=50, deadline=None)
@given(
    size=st.integers(min_value=2, max_value=300),
    seed=st.integers(min_value=0, max_value=2**32),
    newcomer=st.integers(min_value=1, max_value=2**63 - 1),
)
def test_a_joining_member_moves_few_links(size: int, seed: int, newcomer: int) -> None:
    """A member joining moves a bounded number of links, however large the region."""
    limit = 8
    rng = random.Random(seed)
    members = {rng.getrandbits(63) + 1: "eu" for _ in range(size)}
    before = pulls(members, limit, backbone=True)
    after = pulls({**members, newcomer: "eu"}, limit, backbone=True)
    moved = sum(len(set(peers) ^ set(after[me])) for me, peers in before.items())
    # Only members within ring distance 2^k of the newcomer see their k-th neighbour
    # change: about 2 * (1 + 2 + 4 + 8) of them, one or two links each.
    assert moved <= 8 * limit


@settings(max_examples=150, deadline=None)
@given(members=memberships, limit=st.integers(min_value=1, max_value=20), backbone=st.booleans())
def test_the_chains_of_chosen_relays_end_at_the_origin(
    members: dict[int, str], limit: int, backbone: bool
) -> None:
    graph = pulls(members, limit, backbone=backbone)
    chosen = {
        me: chosen_relays(me, members, region, limit, backbone=backbone)
        for me, region in members.items()
    }
    for me, relay_of in chosen.items():
        for origin, relay in relay_of.items():
            assert relay in graph[me]
            assert origin not in graph[me]
            # Follow the chosen relays: no cycle, and the chain ends at a member
            # that pulls the origin directly or takes it from every peer.
            seen, node = {me}, relay
            while origin not in graph[node] and origin in chosen[node]:
                assert node not in seen, "a cycle of relays"
                seen.add(node)
                node = chosen[node][origin]
            assert origin in graph[node] or origin not in chosen[node]


def test_one_relay_per_origin_nearest_it_on_the_ring() -> None:
    members = dict.fromkeys(range(1, 41), "eu")
    relay_of = chosen_relays(10, members, "eu", 4, backbone=True)  # pulls 8, 9, 11, 12
    assert relay_of[14] == 12
    assert relay_of[5] == 8
    assert relay_of[30] == 8  # 20 away through 12 (18 from 30) vs through 8 (18): lower id
    assert not set(relay_of) & {8, 9, 11, 12, 10}
    assert chosen_relays(10, members, "eu", 1, backbone=True) == {}  # one peer: nothing to defer
