"""Peer routes take the cluster secret, never a client token (real processes)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import aiohttp
import pytest

from edgekv.config import ConfigError, load_config
from edgekv.http import cluster_routes, doc_routes, kv_routes
from edgekv.peers.wire import SECRET_HEADER, STREAM_PATH
from edgekv_replication.envelope import Welcome, decode
from testkit.processes import NodeProcess
from testkit.responses import assert_error
from testkit.security import Security
from testkit.waiting import wait_for

StartNode = Callable[..., NodeProcess]


def member_states(node: NodeProcess) -> list[str]:
    return [m["state"] for m in node.request("GET", "/v1/cluster/status").json()["members"]]


def test_nodes_with_tokens_and_a_cluster_secret_replicate(
    tmp_path: Path, start_node: StartNode
) -> None:
    """The issue's set-up: [[tokens]] in a TOML file, --cluster-secret, B --peer A."""
    security = Security(tmp_path / "security")
    args = ["--config", str(security.config_file), "--cluster-secret", security.secret]
    a = security.apply(start_node("a", args))
    b = security.apply(start_node("b", [*args, "--peer", a.url]))
    assert a.request("PUT", "/v1/kv/app/k", body=b"from a").status == 200
    wait_for(lambda: b.request("GET", "/v1/kv/app/k").status == 200, what="write reaches b")
    assert b.request("GET", "/v1/kv/app/k").body == b"from a"
    wait_for(lambda: member_states(b) == ["up"], what="b sees a up")
    assert not any("refused peer request" in line for line in a.output)


async def test_a_client_token_never_opens_a_peer_stream_and_the_secret_needs_none(
    tmp_path: Path, start_node: StartNode
) -> None:
    security = Security(tmp_path / "security")
    secret_env = {"EDGEKV_CLUSTER_SECRET": security.secret}
    a = security.apply(start_node("a", ["--config", str(security.config_file)], env=secret_env))
    admin = {"Authorization": f"Bearer {security.token}"}
    # An admin token alone, or with a wrong secret: refused, whatever its scopes.
    for headers in (admin, {**admin, SECRET_HEADER: "wrong"}):
        assert_error(a.request("GET", "/v1/peer/stream", headers=headers), "unauthorized")
    wait_for(lambda: any("refused peer request" in line for line in a.output), what="log line")
    # The secret alone, without any token, opens the stream.
    async with (
        aiohttp.ClientSession() as session,
        session.ws_connect(
            a.url + "/v1/peer/stream", headers={SECRET_HEADER: security.secret}
        ) as ws,
    ):
        assert isinstance(decode(await ws.receive_bytes(timeout=10)), Welcome)
    # And the secret opens no client route.
    answer = a.request(
        "GET", "/v1/kv/app/k", headers={"Authorization": "", SECRET_HEADER: security.secret}
    )
    assert_error(answer, "unauthorized")


def test_tokens_without_a_cluster_secret_refuse_every_peer_request(
    tmp_path: Path, start_node: StartNode
) -> None:
    security = Security(tmp_path / "security")
    a = security.apply(start_node("a", ["--config", str(security.config_file)]))
    assert any("no cluster_secret" in line for line in a.output), "said at start"
    for headers in ({}, {SECRET_HEADER: ""}, {"Authorization": f"Bearer {security.token}"}):
        assert_error(a.request("GET", "/v1/peer/stream", headers=headers), "unauthorized")


def test_the_secret_from_a_file_or_the_environment_stays_out_of_ps(
    tmp_path: Path, start_node: StartNode
) -> None:
    security = Security(tmp_path / "security")
    tokens = ["--config", str(security.config_file)]
    a = security.apply(
        start_node("a", [*tokens, "--cluster-secret-file", str(security.secret_file)])
    )
    b = security.apply(
        start_node("b", [*tokens, "--peer", a.url], env={"EDGEKV_CLUSTER_SECRET": security.secret})
    )
    assert a.request("PUT", "/v1/kv/app/k", body=b"v").status == 200
    wait_for(lambda: b.request("GET", "/v1/kv/app/k").status == 200, what="write reaches b")
    for node in (a, b):
        assert node.proc is not None
        cmdline = Path(f"/proc/{node.proc.pid}/cmdline").read_bytes()
        assert security.secret.encode() not in cmdline


def test_cluster_secret_file_is_read_and_checked(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("  s3cret\n")
    config = load_config({"cluster_secret_file": str(secret_file)}, env={})
    assert config.cluster_secret == "s3cret"
    from_env = load_config({}, env={"EDGEKV_CLUSTER_SECRET": "env-secret"})
    assert from_env.cluster_secret == "env-secret"
    with pytest.raises(ConfigError, match="not both"):
        load_config({"cluster_secret_file": str(secret_file)}, env={"EDGEKV_CLUSTER_SECRET": "x"})
    secret_file.write_text("\n")
    with pytest.raises(ConfigError, match="empty"):
        load_config({"cluster_secret_file": str(secret_file)}, env={})
    with pytest.raises(ConfigError, match="cannot read"):
        load_config({"cluster_secret_file": str(tmp_path / "missing")}, env={})
    toml = tmp_path / "edgekv.toml"
    toml.write_text('cluster_secret = ""\n')
    with pytest.raises(ConfigError, match="must not be empty"):
        load_config({}, env={}, config_file=toml)


def test_peer_paths_are_registered_only_as_peer_routes() -> None:
    """The class, closed: a route under /v1/peer/ is authenticated by the secret alone."""
    peer_paths = {route.path for route in cluster_routes.peer_routes}  # type: ignore[attr-defined]
    assert peer_paths == {STREAM_PATH}
    client_tables = (kv_routes.routes, doc_routes.routes, cluster_routes.routes)
    client_paths = [route.path for table in client_tables for route in table]  # type: ignore[attr-defined]
    assert client_paths
    assert not [path for path in client_paths if path.startswith("/v1/peer/")]
