"""What an idle cluster costs a node: its streams' heartbeats write nothing.

Every stream's puller acknowledges with each heartbeat (once a second).
Written each time, that was one transaction per second per puller -- in a
full mesh of N PoPs, N - 1 a second on every node, its largest idle cost.
An acknowledgement that did not move is written at most every
ACK_REFRESH_MS (its time is kept in memory for tombstone collection).
"""

from __future__ import annotations

from collections.abc import Callable

from edgekv.peers.replicator import ACK_REFRESH_MS
from testkit.processes import NodeProcess
from testkit.waiting import wait_for

HEARTBEATS = 3


def _commits(node: NodeProcess) -> float:
    for line in node.request("GET", "/metrics").body.decode().splitlines():
        if line.startswith("edgekv_store_commits "):
            return float(line.split()[1])
    raise AssertionError("no edgekv_store_commits in /metrics")


def _contact_ms(puller: NodeProcess, server: NodeProcess) -> int:
    """When ``puller`` last heard from ``server`` (0 while its stream is not up)."""
    for member in puller.request("GET", "/v1/cluster/status").json()["members"]:
        if member["node_id"] == server.node_id and member["state"] == "up":
            return int(member["last_contact_ms"] or 0)
    return 0


def test_heartbeats_of_an_idle_mesh_commit_nothing(
    start_node: Callable[..., NodeProcess],
) -> None:
    a = start_node("a")
    pullers = [start_node(name, ["--peer", a.url]) for name in ("b", "c")]
    assert a.request("PUT", "/v1/kv/ns/k", body=b"v").status == 200
    for puller in pullers:

        def has_k(puller: NodeProcess = puller) -> bool:
            return puller.request("GET", "/v1/kv/ns/k").status == 200

        wait_for(has_k, what="k replicated")
        # Its stream from a is up, and has sent a heartbeat since the write.
        since = _contact_ms(puller, a)

        def heard(puller: NodeProcess = puller, since: int = since) -> bool:
            return _contact_ms(puller, a) > since

        wait_for(heard, what="a heartbeat")
    before = _commits(a)
    start = _contact_ms(pullers[0], a)
    wait_for(
        lambda: _contact_ms(pullers[0], a) >= start + HEARTBEATS * 1000,
        timeout=HEARTBEATS * 5,
        what=f"{HEARTBEATS} heartbeats",
    )
    assert HEARTBEATS * 1000 < ACK_REFRESH_MS
    # Before: a transaction per heartbeat and puller (6 here). Now none; one
    # is allowed for an acknowledgement of the write still on its way.
    assert _commits(a) - before <= 1
