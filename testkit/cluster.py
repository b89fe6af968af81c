"""Clusters of real ``edgekv serve`` processes whose peer links run through proxies.

By default a cluster runs the way a multi-host deployment must: tokens in a
TOML config (every client request carries one), a cluster secret read from a
file, and optionally TLS (:class:`~testkit.security.Security`). The trusting
no-token loopback cluster is the explicit ``secure=False`` case.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from testkit.processes import NodeProcess
from testkit.proxy import TcpProxy
from testkit.security import Security
from testkit.waiting import wait_for
from testkit.wan import WanModel

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
    can cut: the topology is exactly the one asked for. ``secure`` (the
    default) starts every node with tokens and a cluster secret, ``tls`` also
    with HTTPS; :attr:`security` then holds the credentials.
    """

    def __init__(
        self,
        base: Path,
        n: int = 3,
        topology: str = "mesh",
        args: Iterable[str] = (),
        secure: bool = True,
        tls: bool = False,
        wan: WanModel | None = None,
    ) -> None:
        """``wan``: node ``i`` sits in region ``wan.regions[i * regions // n]`` and
        each link is shaped by the two regions (delay, jitter) from the latency matrix."""
        assert secure or not tls, "TLS here comes with the rest of the secure configuration"
        self.security = Security(base / "security", tls) if secure else None
        scheme = self.security.scheme if self.security else "http"
        secure_args = self.security.node_args() if self.security else []
        self.regions = [wan.regions[i * len(wan.regions) // n] if wan else "" for i in range(n)]
        self.links = {
            (i, j): TcpProxy(shape=wan.shape(self.regions[i], self.regions[j]) if wan else None)
            for i, j in edges(n, topology)
        }
        self.nodes = []
        for i in range(n):
            peers = [
                f"--peer={scheme}://127.0.0.1:{p.port}"
                for (a, _), p in self.links.items()
                if a == i
            ]
            node = NodeProcess(
                base / f"n{i}",
                ["--peer-discovery", "false", "--node-name", f"n{i}", *secure_args, *peers, *args],
            )
            self.nodes.append(self.security.apply(node) if self.security else node)
        for node in self.nodes:
            node.start()
        for (_, j), proxy in self.links.items():
            proxy.target = self.nodes[j].port

    @property
    def token(self) -> str | None:
        """The admin token clients use (None in the no-token loopback cluster)."""
        return self.security.token if self.security else None

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
