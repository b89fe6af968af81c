"""The discrete-event simulator at a size a test can run: 60 PoPs.

The big runs (300 and 1,000 PoPs in 20 regions) are in ``python -m bench.scale``;
here the same code must converge every probe write at every PoP, within the
issue's bounds, with the peer choice of :mod:`edgekv_replication.topology`.
"""

from __future__ import annotations

import pytest

from edgekv_replication.topology import DEFAULT_MAX_REGION_PEERS
from testkit.simscale import ScaleNetwork, simulate
from testkit.wan import wan_model

BATCHING_MS = 10.0
"""Room for the per-hop delays (commit to send, backbone fetch) on top of the RTTs."""


@pytest.mark.slow
def test_sixty_pops_with_a_backbone_converge_within_the_bounds() -> None:
    # 10 regions of 6: every consumer also receives (and skips) its own region's
    # changes, 1/regions of the messages, so few large regions would pass 1.2 x N
    # on that alone (the scale is 20 regions).
    figures = simulate(60, 10, probes=10, cut_ms=5_000)
    bound = 3 * figures.largest_rtt_ms + BATCHING_MS
    assert max(figures.write_convergence_ms) <= bound
    assert figures.heal_convergence_ms is not None
    assert figures.heal_convergence_ms <= bound
    summary = figures.summary()
    assert summary["change_messages_per_write_per_pop"] <= 1.2
    assert summary["copies_per_write_per_pop"] <= 1.2
    # Bounded fan-out: pulled and served streams of the regional mesh, and the backbone.
    assert summary["connections_max"] <= 2 * DEFAULT_MAX_REGION_PEERS + 1


@pytest.mark.slow
def test_sixty_pops_without_a_backbone_converge_over_relayed_streams() -> None:
    figures = simulate(60, 4, backbone=False, probes=5)
    assert len(figures.write_convergence_ms) == 5  # every probe reached every PoP
    assert figures.heal_convergence_ms is None


def test_peer_choice_stays_in_the_region_with_a_backbone() -> None:
    network = ScaleNetwork(40, wan_model(4), max_region_peers=4)
    assert network.links
    for server, puller in network.links:
        assert network.region[server] == network.region[puller]
    pulled = [sum(1 for _, p in network.links if p == name) for name in network.replicas]
    assert max(pulled) == 4


def test_a_region_cut_from_the_backbone_gets_nothing_until_it_heals() -> None:
    network = ScaleNetwork(8, wan_model(4), max_region_peers=2)
    network.start()
    outside = next(n for n, r in sorted(network.region.items()) if r != "r00")
    inside = [n for n, r in network.region.items() if r == "r00"]
    network.cut_from_backbone("r00")
    network.write(outside, b"k", b"v")
    network.run(network.time_ms + 1_000)
    assert not set(inside) & set(network.arrivals[b"k"])
    network.heal_backbone("r00")
    network.run()
    assert set(inside) <= set(network.arrivals[b"k"])
