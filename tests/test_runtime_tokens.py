"""Tokens at run time: created and revoked through the admin API, replicated, rate-limited."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgekv.auth import new_token, token_toml
from testkit.cluster import Cluster
from testkit.processes import NodeProcess
from testkit.security import Security
from testkit.waiting import wait_for

RESERVED = "_edgekv.tokens"


def edgekv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv", *args], capture_output=True, text=True, timeout=60
    )


def _as(node: NodeProcess, token: str, method: str, path: str) -> int:
    return node.request(method, path, headers={"Authorization": f"Bearer {token}"}).status


def test_every_route_naming_a_namespace_refuses_the_reserved_one(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    from edgekv.http import counter_routes, doc_routes, kv_routes, set_routes, watch_routes

    node = Security(tmp_path / "security").starter(start_node)("a")
    created = node.request(
        "POST", "/v1/admin/tokens", json_body={"name": "probe", "scopes": ["admin"]}
    )
    assert created.status == 200
    checked = 0
    tables = (
        kv_routes.routes,
        doc_routes.routes,
        counter_routes.routes,
        set_routes.routes,
        watch_routes.routes,
    )
    for table in tables:
        for route in table:
            path = route.path  # type: ignore[attr-defined]
            concrete = re.sub(r"\{(ns|collection)\}", RESERVED, path)
            concrete = re.sub(r"\{[^}]+\}", "x", concrete)
            body = b"{}" if route.method in ("POST", "PUT", "PATCH") else None  # type: ignore[attr-defined]
            answer = node.request(route.method, concrete, body=body)  # type: ignore[attr-defined]
            assert answer.status == 403, (route.method, path, answer.body)  # type: ignore[attr-defined]
            assert answer.json()["error"]["code"] == "forbidden"
            checked += 1
    assert checked >= 18
    # The token record is there all the same, and export leaves it out.
    assert RESERVED not in node.request("GET", "/v1/admin/export").body.decode()


def test_create_list_revoke_and_scopes(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    security = Security(tmp_path / "security")
    node = security.starter(start_node)("a")
    admin = ("--url", node.url, "--token", security.token)
    made = edgekv("token", "create", "--name", "reader", "--scope", "read:pub", *admin)
    assert made.returncode == 0, made.stderr
    secret = made.stdout.split("token: ")[1].split()[0]
    assert node.request("PUT", "/v1/kv/pub/k", body="v").status == 200
    assert _as(node, secret, "GET", "/v1/kv/pub/k") == 200
    assert _as(node, secret, "PUT", "/v1/kv/pub/k") == 403
    assert _as(node, secret, "GET", "/v1/admin/tokens") == 403
    listed = json.loads(edgekv("token", "list", "--json", *admin).stdout)["tokens"]
    assert [(t["name"], t["source"]) for t in listed] == [
        ("test-admin", "config"),
        ("reader", "runtime"),
    ]
    assert secret not in json.dumps(listed)
    revoked = edgekv("token", "revoke", "reader", *admin)
    assert revoked.returncode == 0, revoked.stderr
    assert _as(node, secret, "GET", "/v1/kv/pub/k") == 401
    assert edgekv("token", "revoke", "reader", *admin).returncode == 1
    config_one = edgekv("token", "revoke", "test-admin", *admin)
    assert "config file" in config_one.stderr
    bad = node.request("POST", "/v1/admin/tokens", json_body={"name": "x", "scopes": ["root"]})
    assert bad.status == 400


@pytest.mark.slow
def test_token_revoked_at_one_pop_is_refused_at_every_pop(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3)
    try:
        a, b, c = cluster.nodes
        made = a.request("POST", "/v1/admin/tokens", json_body={"name": "fn", "scopes": ["read:*"]})
        secret = made.json()["token"]
        assert b.request("PUT", "/v1/kv/s/k", body="v").status == 200

        def answers(node: NodeProcess, status: int) -> Callable[[], bool]:
            return lambda: _as(node, secret, "GET", "/v1/kv/s/k") == status

        for node in (a, b, c):
            wait_for(answers(node, 200), what="token")
        assert a.request("DELETE", f"/v1/admin/tokens/{made.json()['id']}").status == 200
        assert _as(a, secret, "GET", "/v1/kv/s/k") == 401
        for node in (b, c):
            wait_for(answers(node, 401), what="revoke")
        # No client token reads the tokens' namespace, even where it replicated to.
        assert c.request("GET", f"/v1/kv/{RESERVED}").status == 403
    finally:
        cluster.close()


def test_rate_limit_answers_429_with_retry_after(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    security = Security(tmp_path / "security")
    node = security.starter(start_node)("a", ["--rate-limit", "1000", "--rate-limit-burst", "1000"])
    slow = node.request(
        "POST",
        "/v1/admin/tokens",
        json_body={"name": "slow", "scopes": ["read:*"], "rate_limit": 0.01},
    ).json()["token"]
    assert _as(node, slow, "GET", "/v1/kv/x/k") == 404  # the one request of its burst
    limited = node.request("GET", "/v1/kv/x/k", headers={"Authorization": f"Bearer {slow}"})
    assert limited.status == 429
    assert limited.json()["error"]["code"] == "rate_limited"
    assert int(limited.headers["Retry-After"]) >= 90
    # Other tokens have buckets of their own (the admin's: the node's 1000/s).
    assert node.request("GET", "/v1/kv/x/k").status == 404


def test_sighup_reloads_the_config_file_tokens(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    security = Security(tmp_path / "security")
    node = security.starter(start_node)("a")
    extra = new_token()
    assert _as(node, extra, "GET", "/v1/kv/x/k") == 401
    original = security.config_file.read_text()
    security.config_file.write_text(original + token_toml("extra", extra, ["read:x"]))
    assert node.proc is not None
    node.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _as(node, extra, "GET", "/v1/kv/x/k") == 404, what="reload")
    # A file that would leave no token (protected mode) is not taken: nothing changes.
    security.config_file.write_text("")
    node.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: any("not reloaded" in line for line in node.output), what="refusal")
    assert _as(node, extra, "GET", "/v1/kv/x/k") == 404
