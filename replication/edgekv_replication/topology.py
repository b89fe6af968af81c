"""Which members a node pulls from directly: the bounded regional mesh (sans-IO).

With hundreds of PoPs a full mesh costs every node N-1 streams, and every
change arrives once from its origin and once relayed per other peer. So a
node pulls directly only from members of its own region, and from at most
``limit`` of them. Changes of other regions come over the backbone (NATS
JetStream or the PostgreSQL upstream), never over a peer stream.

**The choice within a region.** The region's members, sorted by id, form a
ring. A node first takes its ring neighbours at distances 1, -1, 2, -2, 4,
-4, 8, ... (a Chord-like set: any member reaches any other in O(log n)
hops), then, while it has room, the remaining members with the highest
rendezvous score ``hash(me, peer)``. Distance 1 comes first: every member
pulls from the member before it on the ring, so the pull graph holds a cycle
through every member, and with ``limit >= 1`` every region stays connected
whatever the members' ids; the
choice depends only on the member set, so it is stable (a member joining or
leaving moves few links) and every node computes it alone.

**Regions without a backbone.** With ``backbone=False`` nothing but peer
streams joins the regions, so the region boundary is ignored for the peer
choice: the ring and the rendezvous fill run over *every* member, still
bounded by ``limit``. The cluster stays connected (changes cross regions in a
few relayed hops) instead of splitting into islands, and a node never refuses
to start over a topology it learns only later through membership. Regions
then only label status and metrics; for the latency and fan-out benefits, run
a backbone.

Members that are not direct peers still reach this node: their changes are
relayed by the direct peers (in-region) or come over the backbone.

**One relay per origin** (:func:`chosen_relays`). A member not pulled directly would
reach this node relayed by every direct peer that has it. So each such origin
is taken through one direct peer only -- the one nearest the origin on the
ring (ties: the lower id), and only if it is nearer than this node -- and
deferred at the others (:mod:`edgekv_replication.relays`). Following the
chosen relays from any node, the ring distance to the origin shrinks at every
step, so the chain ends at a node that pulls the origin directly (or takes it
from all its peers): no cycle, as long as the nodes agree on the member set.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping, Sequence

DEFAULT_REGION = "default"
"""The region of a node whose ``region`` setting is not set."""

DEFAULT_MAX_REGION_PEERS = 16
"""Default bound on a node's direct peer streams (``max_region_peers``)."""


def rendezvous_score(me: int, peer: int) -> int:
    """A stable pseudo-random score of the pair: the same on every machine and run."""
    digest = hashlib.blake2b(
        me.to_bytes(8, "big", signed=False) + peer.to_bytes(8, "big", signed=False),
        digest_size=8,
    ).digest()
    return int.from_bytes(digest, "big")


def ring_offsets(size: int) -> list[int]:
    """Ring distances tried in order for a ring of ``size`` members: 1, -1, 2, -2, 4, -4, ..."""
    offsets: list[int] = []
    step = 1
    while step < size:
        offsets.extend((step, -step))
        step *= 2
    return offsets


def candidates(me: int, members: Mapping[int, str], my_region: str, *, backbone: bool) -> list[int]:
    """The members ``me`` may pull from directly (before the bound), sorted by id, ``me`` out.

    With a backbone: the members of ``my_region``. Without one: every member.
    """
    return sorted(
        node
        for node, region in members.items()
        if node != me and (not backbone or region == my_region)
    )


def direct_peers(
    me: int, members: Mapping[int, str], my_region: str, limit: int, *, backbone: bool
) -> list[int]:
    """The members ``me`` pulls from directly, at most ``limit`` of them, sorted by id.

    ``members`` maps node id to region; it may or may not hold ``me`` (``me``
    counts in ``my_region`` either way). A ``limit`` below 1 means no peer.
    """
    if limit < 1:
        return []
    others = candidates(me, members, my_region, backbone=backbone)
    if len(others) <= limit:
        return others
    ring = sorted([*others, me])
    position = ring.index(me)
    chosen: dict[int, None] = {}  # insertion-ordered set
    for offset in ring_offsets(len(ring)):
        if len(chosen) >= limit:
            break
        peer = ring[(position - offset) % len(ring)]
        if peer != me:
            chosen[peer] = None
    if len(chosen) < limit:
        rest = sorted(
            (node for node in others if node not in chosen),
            key=lambda node: rendezvous_score(me, node),
            reverse=True,
        )
        for node in rest[: limit - len(chosen)]:
            chosen[node] = None
    return sorted(chosen)


def chosen_relays(
    me: int, members: Mapping[int, str], my_region: str, limit: int, *, backbone: bool
) -> dict[int, int]:
    """For each member ``me`` may reach by relay only: the direct peer to take it through.

    Members missing from the answer are taken from every peer that relays them.
    """
    direct = direct_peers(me, members, my_region, limit, backbone=backbone)
    ring = sorted({*candidates(me, members, my_region, backbone=backbone), me})
    return relays_through(me, ring, direct)


def relays_through(me: int, ring: Sequence[int], direct: Collection[int]) -> dict[int, int]:
    """Origin -> the peer of ``direct`` nearest it on ``ring`` (sorted, ``me`` in it).

    Only origins of ``ring`` not in ``direct``, and only where that peer is
    strictly nearer the origin than ``me`` (the chain of relays then ends).
    """
    size = len(ring)
    position = {node: i for i, node in enumerate(ring)}
    peers = [peer for peer in sorted(direct) if peer in position]
    if me not in position or len(peers) < 2:
        return {}  # one peer or none: nothing to defer anywhere

    def distance(a: int, b: int) -> int:
        d = abs(position[a] - position[b])
        return min(d, size - d)

    chosen: dict[int, int] = {}
    for origin in ring:
        if origin == me or origin in direct:
            continue
        relay = min(peers, key=lambda peer: (distance(peer, origin), peer))
        if distance(relay, origin) < distance(me, origin):
            chosen[origin] = relay
    return chosen
