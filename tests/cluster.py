"""Clusters of real ``edgekv serve`` processes whose peer links run through proxies."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from jepsen_like.proxy import TcpProxy
from tests.nodeproc import NodeProcess

State = list[tuple[Any, ...]]


def edges(n: int, topology: str) -> list[tuple[int, int]]:
    """Directed pull links ``(puller, server)`` of a topology."""
    if topology == "mesh":
        return [(i, j) for i in range(n) for j in range(n) if i != j]
    if topology == "line":
        return [(i, i + 1) for i in range(n - 1)] + [(i + 1, i) for i in range(n - 1)]
    if topology == "ring":
        return [(i, (i + 1) % n) for i in range(n)] + [((i + 1) % n, i) for i in range(n)]
    raise ValueError(topology)


class Cluster:
    """N nodes; node ``i`` pulls from node ``j`` through its own proxy ``links[i, j]``.

    Peer discovery is off so that every stream goes through a proxy the test
    can cut: the topology is exactly the one asked for.
    """

    def __init__(
        self, base: Path, n: int = 3, topology: str = "mesh", args: Iterable[str] = ()
    ) -> None:
        self.links = {edge: TcpProxy() for edge in edges(n, topology)}
        self.nodes = []
        for i in range(n):
            peers = [f"--peer={p.url}" for (a, _), p in self.links.items() if a == i]
            self.nodes.append(
                NodeProcess(
                    base / f"n{i}",
                    ["--peer-discovery", "false", "--node-name", f"n{i}", *peers, *args],
                )
            )
        for node in self.nodes:
            node.start()
        for (_, j), proxy in self.links.items():
            proxy.target = self.nodes[j].port

    def close(self) -> None:
        for node in self.nodes:
            node.kill()
        for proxy in self.links.values():
            proxy.close()

    def isolate(self, k: int) -> None:
        """Cut every link to and from node ``k``."""
        for (i, j), proxy in self.links.items():
            if k in (i, j):
                proxy.cut()

    def heal(self) -> None:
        for proxy in self.links.values():
            proxy.heal()

    def put(self, i: int, ns: str, key: str, value: bytes, query: str = "") -> None:
        answer = self.nodes[i].request("PUT", f"/v1/kv/{ns}/{key}{query}", body=value)
        assert answer.status == 200, answer.body

    def delete(self, i: int, ns: str, key: str) -> None:
        assert self.nodes[i].request("DELETE", f"/v1/kv/{ns}/{key}").status == 200


def stored_state(node: NodeProcess) -> State:
    """Every row of a node's store, tombstones included, straight from SQLite."""
    uri = f"file:{node.data_dir / 'edgekv.db'}?mode=ro"
    with sqlite3.connect(uri, uri=True) as conn:
        return list(
            conn.execute(
                "SELECT ns, key, value, metadata, expiration, hlc, node FROM kv ORDER BY ns, key"
            )
        )


def wait_for(condition: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    """Poll ``condition`` until it holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what or condition}")
        time.sleep(0.02)


def wait_converged(nodes: list[NodeProcess], timeout: float = 30.0) -> State:
    """Wait until every node stores identical rows; return them."""
    states: list[State] = []

    def equal() -> bool:
        states[:] = [stored_state(node) for node in nodes]
        return all(state == states[0] for state in states)

    try:
        wait_for(equal, timeout, "convergence")
    except AssertionError:
        sizes = [len(s) for s in states]
        raise AssertionError(f"not converged; rows per node: {sizes}") from None
    return states[0]
