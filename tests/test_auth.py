"""Bearer tokens, scopes and protected mode."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from edgekv.auth import Authenticator, TokenSpec, hash_token, new_token, parse_tokens, token_toml
from edgekv.config import load_config
from testkit.processes import NodeProcess


def test_scopes_grant_by_namespace_glob() -> None:
    spec = TokenSpec("t", hash_token("x"), ("read:flags", "write:tenant-*"))
    assert spec.allows("read", "flags")
    assert not spec.allows("write", "flags")
    assert spec.allows("write", "tenant-7")
    assert not spec.allows("read", "tenant-7"), "write does not imply read"
    assert not spec.allows("admin")
    assert TokenSpec("a", hash_token("y"), ("admin",)).allows("write", "anything")


def test_authenticator_finds_the_token_by_hash() -> None:
    token = new_token()
    auth = Authenticator([TokenSpec("t", hash_token(token), ("admin",))])
    found = auth.authenticate(f"Bearer {token}")
    assert found is not None
    assert found.name == "t"
    assert auth.authenticate(f"Bearer {token}x") is None
    assert auth.authenticate(token) is None
    assert auth.authenticate(None) is None


def test_token_toml_round_trips_through_the_config(tmp_path: Path) -> None:
    token = new_token()
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text(token_toml("edge-fn", token, ["read:flags", "admin"]))
    config = load_config(config_file=config_file, env={})
    assert config.tokens == (TokenSpec("edge-fn", hash_token(token), ("read:flags", "admin")),)
    assert token not in config_file.read_text(), "only the hash is stored"


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"name": "x", "hash": "sha256:00", "scopes": ["admin"]}, "hash"),
        ({"name": "x", "hash": "sha256:" + "0" * 64, "scopes": ["root"]}, "invalid scope"),
        ({"name": "x", "hash": "sha256:" + "0" * 64, "scopes": []}, "scopes"),
        ({"hash": "sha256:" + "0" * 64, "scopes": ["admin"]}, "name"),
        ({"name": "x", "hash": "sha256:" + "0" * 64, "scopes": ["admin"], "x": 1}, "unknown"),
    ],
)
def test_bad_token_entries_are_refused(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_tokens([entry])


def test_token_create_prints_a_token_and_its_config_lines() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "edgekv", "token", "create", "--name", "fn", "--scope", "read:x"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    token = out.split("token: ")[1].split()[0]
    assert token.startswith("ekv_")
    assert hash_token(token) in out
    assert parse_tokens([{"name": "fn", "hash": hash_token(token), "scopes": ["read:x"]}])


def test_token_create_rejects_a_bad_scope() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "edgekv", "token", "create", "--name", "fn", "--scope", "sudo"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 2
    assert "invalid scope" in result.stderr


def test_node_with_tokens_enforces_scopes(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    reader, writer, admin = new_token(), new_token(), new_token()
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text(
        token_toml("reader", reader, ["read:flags"])
        + token_toml("writer", writer, ["write:flags", "read:flags"])
        + token_toml("admin", admin, ["admin"])
    )
    node = start_node(args=["--config", str(config_file)])

    def call(method: str, path: str, token: str | None) -> int:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return node.request(
            method, path, body=b"v" if method == "PUT" else None, headers=headers
        ).status

    assert call("PUT", "/v1/kv/flags/a", None) == 401
    assert call("PUT", "/v1/kv/flags/a", "ekv_wrong") == 401
    assert call("PUT", "/v1/kv/flags/a", reader) == 403
    assert call("PUT", "/v1/kv/flags/a", writer) == 200
    assert call("GET", "/v1/kv/flags/a", reader) == 200
    assert call("GET", "/v1/kv/other/a", reader) == 403
    assert call("PUT", "/v1/kv/other/a", admin) == 200
    assert call("GET", "/v1/kv/flags", reader) == 200
    unauthorized = node.request("GET", "/v1/kv/flags/a")
    assert unauthorized.error_code == "unauthorized"
    assert unauthorized.headers["WWW-Authenticate"].startswith("Bearer")
    forbidden = node.request("GET", "/v1/kv/other/a", headers={"Authorization": f"Bearer {reader}"})
    assert forbidden.error_code == "forbidden"
    # Probes stay public.
    assert call("GET", "/healthz", None) == 200


def test_protected_mode_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "edgekv",
            "serve",
            "--data-dir",
            str(tmp_path),
            "--host",
            "0.0.0.0",
            "--port",
            "0",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "loopback" in result.stderr
    assert not (tmp_path / "edgekv.db").exists(), "refused before touching the data"


def test_tokens_allow_a_public_address(tmp_path: Path) -> None:
    from edgekv.server import check_protected_mode

    config_file = tmp_path / "edgekv.toml"
    config_file.write_text(token_toml("a", new_token(), ["admin"]))
    check_protected_mode(load_config({"host": "0.0.0.0"}, env={}, config_file=config_file))
