"""The ``edgekv kv`` commands against a real node, and serve's flag handling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from testkit.processes import NodeProcess


def edgekv(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv", *args], input=stdin, capture_output=True, timeout=60
    )


def test_kv_put_get_list_delete(shared_node: NodeProcess, ns: str) -> None:
    url = ["--url", shared_node.url]
    put = edgekv("kv", "put", *url, ns, "greeting", "hello", "--metadata", '{"lang": "en"}')
    assert put.returncode == 0, put.stderr
    assert json.loads(put.stdout)["bookmark"].startswith("b1.")
    got = edgekv("kv", "get", *url, ns, "greeting", "--metadata")
    assert got.stdout == b"hello"
    assert json.loads(got.stderr)["metadata"] == {"lang": "en"}
    assert edgekv("kv", "put", *url, ns, "blob", "--file", "-", stdin=b"\x00\xff").returncode == 0
    assert edgekv("kv", "get", *url, ns, "blob").stdout == b"\x00\xff"
    assert edgekv("kv", "list", *url, ns).stdout.decode().split() == ["blob", "greeting"]
    assert edgekv("kv", "delete", *url, ns, "greeting").returncode == 0
    missing = edgekv("kv", "get", *url, ns, "greeting")
    assert missing.returncode == 1
    assert b"not found" in missing.stderr


def test_kv_reports_errors_without_traceback(shared_node: NodeProcess) -> None:
    result = edgekv("kv", "put", "--url", shared_node.url, "bad ns", "k", "v")
    assert result.returncode == 1
    assert b"invalid_namespace" in result.stderr
    assert b"Traceback" not in result.stderr
    unreachable = edgekv("kv", "get", "--url", "http://127.0.0.1:9", "ns", "k")
    assert unreachable.returncode == 1
    assert b"Traceback" not in unreachable.stderr


def test_serve_rejects_a_bad_setting_with_usage_error(tmp_path: Path) -> None:
    result = edgekv("serve", "--data-dir", str(tmp_path), "--synchronous", "maybe")
    assert result.returncode == 2
    assert b"maybe" in result.stderr
    config_file = tmp_path / "edgekv.toml"
    config_file.write_text("prot = 1\n")
    result = edgekv("serve", "--config", str(config_file))
    assert result.returncode == 2
    assert b"unknown setting" in result.stderr
