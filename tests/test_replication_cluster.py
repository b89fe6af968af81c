"""Replication between real node processes: convergence through faults."""

from __future__ import annotations

import contextlib
import http.client
import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import pytest

from testkit.cluster import Cluster, stored_state, wait_converged
from testkit.processes import NodeProcess
from testkit.waiting import wait_for


class MakeCluster(Protocol):
    """Starts a cluster in the test's directory; every one made is closed afterwards."""

    def __call__(
        self,
        n: int = 3,
        topology: str = "mesh",
        args: tuple[str, ...] = (),
        secure: bool = True,
        tls: bool = False,
    ) -> Cluster: ...


@pytest.fixture
def cluster_factory(tmp_path: Path) -> Iterator[MakeCluster]:
    made: list[Cluster] = []

    class Made(Cluster):
        def __init__(
            self,
            n: int = 3,
            topology: str = "mesh",
            args: tuple[str, ...] = (),
            secure: bool = True,
            tls: bool = False,
        ):
            super().__init__(tmp_path / f"c{len(made)}", n, topology, args, secure, tls)
            made.append(self)

    yield Made
    for cluster in made:
        cluster.close()


def concurrent_workload(cluster: Cluster, ns: str, rounds: int = 40) -> None:
    """Every node writes, overwrites, deletes and sets expirations, all at once."""

    def work(i: int) -> None:
        for r in range(rounds):
            cluster.put(i, ns, f"own-{i}-{r}", f"v{i}.{r}".encode())
            cluster.put(i, ns, f"shared-{r % 7}", f"from-{i}-{r}".encode())
            if r % 5 == 0:
                cluster.delete(i, ns, f"own-{i}-{r // 2}")
                cluster.delete(i, ns, f"shared-{(r + 3) % 7}")
            if r % 8 == 0:
                cluster.put(i, ns, f"ttl-{i}-{r}", b"x", "?ttl=3600")

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(cluster.nodes))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def visible(cluster: Cluster, i: int, ns: str) -> dict[str, bytes]:
    node = cluster.nodes[i]
    names = [k["name"] for k in node.request("GET", f"/v1/kv/{ns}").json()["keys"]]
    return {name: node.request("GET", f"/v1/kv/{ns}/{name}").body for name in names}


@pytest.mark.parametrize(
    ("topology", "security"),
    [
        pytest.param("mesh", "tls", marks=pytest.mark.slow),
        ("line", "tokens"),
        ("mesh", "open-loopback"),
    ],
)
def test_concurrent_writes_converge(
    cluster_factory: MakeCluster, topology: str, security: str
) -> None:
    """With tokens and a cluster secret (and TLS), and once as the trusting loopback cluster."""
    cluster = cluster_factory(
        3, topology, secure=security != "open-loopback", tls=security == "tls"
    )
    concurrent_workload(cluster, "conv")
    rows = wait_converged(cluster.nodes)
    assert len(rows) >= 3 * 40
    assert any(row[2] is None for row in rows), "tombstones replicate too"
    assert any(row[4] is not None for row in rows), "expirations replicate too"
    views = [visible(cluster, i, "conv") for i in range(3)]
    assert views[0] == views[1] == views[2]
    assert all(f"own-{i}-39" in views[0] for i in range(3))


def test_node_cut_off_keeps_serving_and_converges_after_heal(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(3)
    cluster.put(0, "part", "before", b"1")
    wait_converged(cluster.nodes)
    cluster.isolate(2)
    cluster.put(2, "part", "island", b"written while cut off")
    cluster.put(0, "part", "mainland", b"written meanwhile")
    cluster.delete(2, "part", "before")
    cluster.put(1, "part", "before", b"concurrent overwrite")
    assert cluster.nodes[2].request("GET", "/v1/kv/part/island").body == b"written while cut off"
    assert cluster.nodes[2].request("GET", "/v1/kv/part/mainland").status == 404
    cluster.heal()
    wait_converged(cluster.nodes)
    view = visible(cluster, 0, "part")
    assert view["island"] == b"written while cut off"
    assert view["mainland"] == b"written meanwhile"
    # The later of the concurrent delete and overwrite won, identically everywhere.
    assert view.get("before") in (None, b"concurrent overwrite")


@pytest.mark.slow
def test_sigkill_during_replication_restarts_and_converges(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(3)
    stop = threading.Event()
    written: list[str] = []

    def writer() -> None:
        i = 0
        while not stop.is_set() and i < 5000:
            cluster.put(0, "kill", f"k{i}", b"v" * 64)
            written.append(f"k{i}")
            i += 1

    thread = threading.Thread(target=writer)
    thread.start()
    wait_for(lambda: len(stored_state(cluster.nodes[1])) > 200, what="replication under way")
    cluster.nodes[1].kill()
    wait_for(lambda: len(written) > 600, what="more writes while node 1 is down")
    cluster.nodes[1].start()
    stop.set()
    thread.join()
    rows = wait_converged(cluster.nodes, timeout=60)
    assert {row[1].decode() for row in rows} == set(written)


@pytest.mark.slow
def test_wiped_node_resyncs_from_zero(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(3)
    for i in range(50):
        cluster.put(i % 3, "wipe", f"k{i}", str(i).encode())
    wait_converged(cluster.nodes)
    old_id = cluster.nodes[1].node_id
    cluster.nodes[1].stop()
    shutil.rmtree(cluster.nodes[1].data_dir)
    cluster.nodes[1].start()
    assert cluster.nodes[1].node_id != old_id, "a wiped node is a new node"
    cluster.put(1, "wipe", "after-wipe", b"new")
    rows = wait_converged(cluster.nodes)
    assert len(rows) == 51


@pytest.mark.slow
def test_expired_entry_reads_absent_on_every_node(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(3)
    expires = int(time.time()) + 2
    cluster.put(0, "exp", "short", b"x", f"?expiration={expires}")
    wait_converged(cluster.nodes)
    assert all(n.request("GET", "/v1/kv/exp/short").status == 200 for n in cluster.nodes)
    wait_for(lambda: time.time() >= expires, what="expiration time")
    assert all(n.request("GET", "/v1/kv/exp/short").status == 404 for n in cluster.nodes)


@pytest.mark.slow
def test_nodes_with_live_streams_stop_cleanly(cluster_factory: MakeCluster) -> None:
    cluster = cluster_factory(3)
    cluster.put(0, "stop", "k", b"v")
    wait_converged(cluster.nodes)
    # Every node serves and pulls streams; SIGTERM must still end it promptly and cleanly.
    for node in cluster.nodes:
        assert node.stop() == 0
        assert any("stopped" in line for line in node.output)


def wait_all_streams_up(cluster: Cluster) -> None:
    wait_for(
        lambda: all(
            [m["state"] for m in n.request("GET", "/v1/cluster/status").json()["members"]]
            == ["up"] * (len(cluster.nodes) - 1)
            for n in cluster.nodes
        ),
        what="every stream up",
    )


def relayed_by(node: NodeProcess, peer: str) -> float:
    """Changes ``node`` received from the member named ``peer`` (its metrics)."""
    peer_id = next(
        m["node_id"]
        for m in node.request("GET", "/v1/cluster/status").json()["members"]
        if m["name"] == peer
    )
    text = node.request("GET", "/metrics").body.decode()
    pattern = rf'^edgekv_repl_changes_received_total\{{peer="{peer_id}"\}} (\S+)$'
    found = re.search(pattern, text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_mesh_sends_each_write_once_and_relays_around_a_cut_link(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(3, "mesh")
    _, b, c = cluster.nodes

    def a_write_reaches_c_from_a_only(i: int) -> bool:
        before = relayed_by(c, "n1"), relayed_by(b, "n2")
        cluster.put(0, "warm", f"up-{i}", b"1")
        wait_converged(cluster.nodes)
        return (relayed_by(c, "n1"), relayed_by(b, "n2")) == before

    wait_all_streams_up(cluster)
    # Deferral starts once the direct streams carry marks (within a heartbeat).
    wait_for(lambda: a_write_reaches_c_from_a_only(time.monotonic_ns()), what="deferral")
    relayed_to_c, relayed_to_b = relayed_by(c, "n1"), relayed_by(b, "n2")
    for i in range(20):
        cluster.put(0, "relay", f"direct-{i}", b"v")
    wait_converged(cluster.nodes)
    # b defers a's writes for c (and c for b): each reached the others once, from a.
    assert relayed_by(c, "n1") == relayed_to_c
    assert relayed_by(b, "n2") == relayed_to_b
    # Now only the link a -> c breaks: c must get a's writes through b.
    cluster.links[2, 0].cut()
    for i in range(20):
        cluster.put(0, "relay", f"around-{i}", b"v")
    wait_converged(cluster.nodes)
    assert relayed_by(c, "n1") >= relayed_to_c + 20


def test_a_healed_node_gets_what_it_missed_from_the_origin_not_relayed(
    cluster_factory: MakeCluster,
) -> None:
    cluster = cluster_factory(3, "mesh")
    a, b, c = cluster.nodes
    keys = 20_000
    wait_all_streams_up(cluster)
    cluster.isolate(2)
    for start in range(0, keys, 5_000):
        operations = [
            {"op": "put", "key": f"k{i:06d}", "value": "dg=="} for i in range(start, start + 5_000)
        ]
        answer = a.request("POST", "/v1/kv/missed/_bulk", json_body={"operations": operations})
        assert answer.status == 200
    wait_converged([a, b])  # b holds them too and could relay every one
    relayed_before = relayed_by(c, "n1")
    cluster.heal()
    wait_converged(cluster.nodes)
    # Both of c's streams open at the heal. b's starts with a small window and
    # is asked to defer a's writes as soon as a's own stream delivers: without
    # both, b sent a whole window (32 pages, 16,000 of these keys) first.
    assert relayed_by(c, "n1") - relayed_before < keys / 2


@pytest.mark.slow
def test_tls_cluster_with_tokens_loses_no_acknowledged_write_to_a_partition_and_a_sigkill(
    cluster_factory: MakeCluster,
) -> None:
    """Three nodes as a multi-host deployment runs them (tokens, cluster secret, TLS):
    concurrent writers at every node, node 2 cut off, node 1 SIGKILLed and restarted,
    the partition healed; every acknowledged write is stored everywhere, identically."""
    cluster = cluster_factory(3, "mesh", tls=True)
    assert all(node.url.startswith("https://") for node in cluster.nodes)
    wait_all_streams_up(cluster)
    stop = threading.Event()
    acked: list[dict[bytes, bytes]] = [{}, {}, {}]

    def writer(i: int) -> None:
        r = 0
        while not stop.is_set():
            key, value = f"w{i}-{r:05d}", f"{i}.{r}".encode()
            r += 1
            try:
                answer = cluster.nodes[i].request("PUT", f"/v1/kv/chaos/{key}", body=value)
            except (OSError, http.client.HTTPException):
                continue  # node down: not acknowledged, so nothing is promised
            if answer.status == 200:
                acked[i][key.encode()] = value
            # Contended keys too: their winner must be the same everywhere.
            with contextlib.suppress(OSError, http.client.HTTPException):
                cluster.nodes[i].request("PUT", f"/v1/kv/chaos/shared-{r % 5}", body=value)

    def more_acked(i: int, count: int) -> None:
        target = len(acked[i]) + count
        wait_for(lambda: len(acked[i]) >= target, what=f"{count} more writes at node {i}")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(3)]
    for thread in threads:
        thread.start()
    try:
        for i in range(3):
            more_acked(i, 30)
        cluster.isolate(2)
        more_acked(2, 30)
        more_acked(0, 30)
        cluster.nodes[1].kill()
        more_acked(0, 30)
        more_acked(2, 30)
        cluster.nodes[1].start()
        cluster.heal()
        more_acked(1, 30)
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    rows = wait_converged(cluster.nodes, timeout=60)
    stored = {key: value for ns, key, value, *_ in rows if ns == "chaos"}
    for i in range(3):
        missing = {k for k, v in acked[i].items() if stored.get(k) != v}
        assert not missing, f"acknowledged writes at node {i} lost: {sorted(missing)[:5]}"
    wait_all_streams_up(cluster)
