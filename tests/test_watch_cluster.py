"""Watches across real PoPs: every acknowledged write reaches a watcher, and a watcher
moves to another PoP with its token when its own goes away."""

from __future__ import annotations

import json
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgekv_client import Client, WatchEvent
from edgekv_replication.versions import encode_version
from testkit.cluster import Cluster, wait_converged
from testkit.waiting import wait_for

NS = "w"
SENTINEL = "~done"


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    made = Cluster(tmp_path / "c", 3, args=("--watch-heartbeat", "0.5"))
    yield made
    made.close()


class Watcher:
    """A client watch in a thread, keeping every event until it sees the sentinel key."""

    def __init__(self, client: Client, failover: tuple[str, ...] = ()) -> None:
        self.events: list[WatchEvent] = []
        self.ready = threading.Event()
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(client, failover), daemon=True)
        self._thread.start()
        assert self.ready.wait(20), "the watch never became live"

    def _run(self, client: Client, failover: tuple[str, ...]) -> None:
        for event in client.watch(NS, failover=failover, max_backoff=0.5, read_timeout=5):
            if event.type == "ready":
                self.ready.set()
            elif event.type == "change":
                if event.key == SENTINEL:
                    self.done.set()
                    return
                self.events.append(event)

    def check(self, final: dict[str, str]) -> None:
        """Each key's last event is its final version; no state twice; no version goes back."""
        assert self.done.wait(30), "the sentinel never arrived"
        last: dict[str, str] = {}
        for event in self.events:
            assert event.version > last.get(event.key, ""), (event.key, "went back or repeated")
            last[event.key] = event.version
        assert last == final


def write_concurrently(cluster: Cluster, nodes: list[int], rounds: int, seed: int) -> None:
    """Each of ``nodes`` puts and deletes keys of a shared set, all at once."""

    def work(i: int) -> None:
        rng = random.Random(seed * 10 + i)
        node = cluster.nodes[i]
        for r in range(rounds):
            key = f"k{rng.randrange(25)}"
            if rng.random() < 0.2:
                answer = node.request("DELETE", f"/v1/kv/{NS}/{key}")
            else:
                answer = node.request("PUT", f"/v1/kv/{NS}/{key}", body=f"{i}.{r}".encode())
            assert answer.status == 200, answer.body

    threads = [threading.Thread(target=work, args=(i,)) for i in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def watch_fields(cluster: Cluster, i: int) -> tuple[int, int]:
    """Node ``i``'s watchers open, and of them those the fan-out process serves."""
    answer = cluster.nodes[i].request("GET", "/v1/cluster/status")
    watch = json.loads(answer.body)["node"]["watch"]
    return watch["watchers_open"], watch["watchers_in_fanout"]


def final_versions(nodes: list[int], cluster: Cluster) -> dict[str, str]:
    state = wait_converged([cluster.nodes[i] for i in nodes])
    return {
        key.decode(): encode_version(hlc, node)
        for ns, key, _, _, _, hlc, node in state
        if ns == NS and key.decode() != SENTINEL
    }


@pytest.mark.slow
def test_a_watcher_sees_every_write_made_at_the_other_pops(cluster: Cluster) -> None:
    watcher = Watcher(Client(cluster.nodes[0].url, token=cluster.token))
    # Tokens and the cluster secret, no TLS: the fan-out process writes its events.
    wait_for(lambda: watch_fields(cluster, 0) == (1, 1), what="the stream handed over")
    write_concurrently(cluster, [0, 1, 2], rounds=60, seed=1)
    final = final_versions([0, 1, 2], cluster)
    cluster.put(0, NS, SENTINEL, b"")  # after convergence: the last event of A's log
    watcher.check(final)


@pytest.mark.slow
def test_a_watcher_over_tls_sees_every_write_made_at_the_other_pops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A TLS stream stays with the node (the fan-out process cannot write into its
    # session): the node's own rounds, with tokens, the cluster secret and TLS.
    cluster = Cluster(tmp_path / "tls", 3, args=("--watch-heartbeat", "0.5"), tls=True)
    try:
        monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "tls" / "security" / "ca.pem"))
        watcher = Watcher(Client(cluster.nodes[0].url, token=cluster.token))
        assert watch_fields(cluster, 0) == (1, 0)
        write_concurrently(cluster, [0, 1, 2], rounds=40, seed=4)
        final = final_versions([0, 1, 2], cluster)
        cluster.put(0, NS, SENTINEL, b"")
        watcher.check(final)
    finally:
        cluster.close()


@pytest.mark.slow
def test_a_watcher_moves_to_another_pop_and_misses_nothing(cluster: Cluster) -> None:
    a, b = cluster.nodes[0], cluster.nodes[1]
    watcher = Watcher(Client(a.url, token=cluster.token), failover=(b.url,))
    write_concurrently(cluster, [0, 1, 2], rounds=30, seed=2)
    wait_converged(cluster.nodes)  # A's acknowledged writes are at B and C too
    wait_for(lambda: len(watcher.events) > 20, what="events before the PoP goes")
    writers = threading.Thread(target=write_concurrently, args=(cluster, [1, 2], 60, 3))
    writers.start()
    a.kill()  # mid-stream, while the others write
    writers.join()
    final = final_versions([1, 2], cluster)
    cluster.put(1, NS, SENTINEL, b"")
    watcher.check(final)
