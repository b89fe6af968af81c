"""Rotating the cluster secret with cluster_secret_accept: replication never pauses."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import pytest

from edgekv.config import ConfigError, load_config
from testkit.cluster import wait_converged
from testkit.processes import NodeProcess
from testkit.security import Security
from testkit.waiting import wait_for


def _secret_file(path: Path, secret: str) -> str:
    path.write_text(secret + "\n")
    path.chmod(0o600)
    return str(path)


@pytest.mark.slow
def test_nodes_halfway_through_a_rotation_replicate_both_ways(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    security = Security(tmp_path / "security")  # its secret is the old one
    new = _secret_file(tmp_path / "new-secret", secrets.token_urlsafe(24))
    old = str(security.secret_file)
    config = ["--config", str(security.config_file)]

    def start(name: str, secret: str, accept: str, peers: list[str]) -> NodeProcess:
        args = [*config, "--cluster-secret-file", secret, "--cluster-secret-accept-file", accept]
        node = start_node(name, [*args, *(f"--peer={p}" for p in peers)])
        return security.apply(node)

    # Step 2 of the rotation, half done: a sends the new secret, b still the old one.
    a = start("a", new, old, [])
    b = start("b", old, new, [a.url])
    assert a.request("PUT", "/v1/kv/r/from-a", body="1").status == 200
    assert b.request("PUT", "/v1/kv/r/from-b", body="2").status == 200
    state = wait_converged([a, b])
    assert {row[1] for row in state} == {b"from-a", b"from-b"}
    # A node that accepts only the old secret refuses a's pulls (the link says so).
    c = security.apply(start_node("c", [*config, "--cluster-secret-file", old, f"--peer={a.url}"]))
    wait_for(
        lambda: any(
            "401" in (m["last_error"] or "") or "unauthorized" in (m["last_error"] or "")
            for m in a.request("GET", "/v1/cluster/status").json()["members"]
            if m["url"] == c.url
        ),
        what="a's pulls from c refused",
    )


def test_accept_needs_a_secret_and_is_not_empty(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="goes with a cluster_secret"):
        load_config(env={"EDGEKV_CLUSTER_SECRET_ACCEPT": "x"})
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(ConfigError, match=r"cluster_secret_accept_file .* is empty"):
        load_config(
            env={"EDGEKV_CLUSTER_SECRET": "s", "EDGEKV_CLUSTER_SECRET_ACCEPT_FILE": str(empty)}
        )
