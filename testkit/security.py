"""Credentials a set of test nodes runs with: an admin token, a cluster secret, maybe TLS."""

from __future__ import annotations

import secrets
import ssl
from collections.abc import Callable
from pathlib import Path

import trustme

from edgekv.auth import new_token, token_toml
from testkit.processes import NodeProcess


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
