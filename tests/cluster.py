"""Clusters of real ``edgekv serve`` processes whose peer links run through proxies.

By default a cluster runs the way a multi-host deployment must: tokens in a
TOML config (every client request carries one), a cluster secret read from a
file, and optionally TLS. The trusting no-token loopback cluster is the
explicit ``secure=False`` case.
"""

from __future__ import annotations

import secrets
import sqlite3
import ssl
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import trustme

from edgekv.auth import new_token, token_toml
from jepsen_like.proxy import TcpProxy
from tests.nodeproc import NodeProcess


class Security:
    """Credentials for a set of nodes: an admin token, a cluster secret, maybe TLS.

    Files live in ``directory``; :meth:`node_args` are the ``edgekv serve``
    arguments that use them and :meth:`apply` makes a node's test requests
    carry the token (and trust the CA).
    """

    def __init__(self, directory: Path, tls: bool = False) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.token = new_token()
        self.secret = secrets.token_urlsafe(24)
        self.config_file = directory / "edgekv.toml"
        self.config_file.write_text(token_toml("test-admin", self.token, ["admin"]))
        self.secret_file = directory / "cluster-secret"
        self.secret_file.write_text(self.secret + "\n")
        self.secret_file.chmod(0o600)
        self.tls = tls
        self.ssl_context: ssl.SSLContext | None = None
        self._tls_args: list[str] = []
        if tls:
            ca = trustme.CA()
            ca_file, cert_file = directory / "ca.pem", directory / "node.pem"
            ca.cert_pem.write_to_path(str(ca_file))
            ca.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(str(cert_file))
            self._tls_args = [
                *("--tls-cert", str(cert_file), "--tls-key", str(cert_file)),
                *("--tls-ca", str(ca_file)),
            ]
            self.ssl_context = ssl.create_default_context(cafile=str(ca_file))

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def node_args(self) -> list[str]:
        """Arguments that start a node with the tokens, the secret and TLS."""
        return [
            *("--config", str(self.config_file)),
            *("--cluster-secret-file", str(self.secret_file)),
            *self._tls_args,
        ]

    def apply(self, node: NodeProcess) -> NodeProcess:
        """Make ``node``'s test requests carry the token and trust the CA."""
        node.token = self.token
        node.ssl_context = self.ssl_context
        return node

    def starter(self, start_node: Callable[..., NodeProcess]) -> Callable[..., NodeProcess]:
        """Wrap the ``start_node`` fixture: every node it starts runs with these credentials."""

        def start(
            name: str = "node", args: list[str] | None = None, env: dict[str, str] | None = None
        ) -> NodeProcess:
            return self.apply(start_node(name, [*self.node_args(), *(args or [])], env))

        return start


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
    ) -> None:
        assert secure or not tls, "TLS here comes with the rest of the secure configuration"
        self.security = Security(base / "security", tls) if secure else None
        scheme = self.security.scheme if self.security else "http"
        secure_args = self.security.node_args() if self.security else []
        self.links = {edge: TcpProxy() for edge in edges(n, topology)}
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
