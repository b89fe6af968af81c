"""``edgekv backup`` and ``edgekv restore`` against real nodes and a real cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from testkit.cluster import Cluster, stored_state, wait_converged
from testkit.processes import NodeProcess
from testkit.security import Security
from testkit.waiting import wait_for


def edgekv(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "edgekv", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_backup_under_load_holds_every_write_acknowledged_before_it(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    security = Security(tmp_path / "security")
    node = security.starter(start_node)("a")
    acknowledged: list[str] = []
    stop = threading.Event()

    def load() -> None:
        n = 0
        while not stop.is_set():
            key = f"k{n}"
            if node.request("PUT", f"/v1/kv/load/{key}", body=f"v{n}").status == 200:
                acknowledged.append(key)
            n += 1

    writer = threading.Thread(target=load)
    writer.start()
    try:
        wait_for(lambda: len(acknowledged) > 200, what="writes before the backup")
        before = list(acknowledged)  # acknowledged before the backup started
        out = tmp_path / "a.ekvbackup"
        done = edgekv("backup", "--url", node.url, "--token", security.token, "--out", str(out))
        assert done.returncode == 0, done.stderr
        during = len(acknowledged) - len(before)
    finally:
        stop.set()
        writer.join()
    assert during > 0, "the node served no write while it was backed up"
    with out.open("rb") as backup_file:
        manifest = json.loads(backup_file.readline())
    assert json.loads(done.stdout)["sha256"] == manifest["sha256"]

    restored = edgekv("restore", str(out), "--data-dir", str(tmp_path / "r"))
    assert restored.returncode == 0, restored.stderr
    new_id = json.loads(restored.stdout.splitlines()[0])["node_id"]
    assert new_id != node.node_id
    copy = security.starter(start_node)("r")
    assert copy.node_id == new_id
    rows = {row[1].decode(): row[2] for row in stored_state(copy) if row[0] == "load"}
    missing = [key for key in before if rows.get(key) != f"v{key[1:]}".encode()]
    assert not missing, f"{len(missing)} acknowledged writes missing, such as {missing[:3]}"


def test_damaged_backup_is_refused(tmp_path: Path, start_node: Callable[..., NodeProcess]) -> None:
    node = start_node("a")
    assert node.request("PUT", "/v1/kv/x/k", body="v").status == 200
    out = tmp_path / "b"
    assert edgekv("backup", "--url", node.url, "--out", str(out)).returncode == 0
    data = bytearray(out.read_bytes())
    data[-100] ^= 0xFF
    out.write_bytes(bytes(data))
    refused = edgekv("restore", str(out), "--data-dir", str(tmp_path / "r"))
    assert refused.returncode == 1
    assert "checksum mismatch" in refused.stderr
    assert not (tmp_path / "r" / "edgekv.db").exists()


def test_stopped_node_backup_and_horizon_refusals(
    tmp_path: Path, start_node: Callable[..., NodeProcess]
) -> None:
    node = start_node("a")
    assert node.request("PUT", "/v1/kv/x/k", body="v").status == 200
    in_use = edgekv("backup", "--data-dir", str(node.data_dir), "--out", str(tmp_path / "b"))
    assert in_use.returncode == 1
    assert "in use" in in_use.stderr
    node.stop()
    out = tmp_path / "b"
    done = edgekv("backup", "--data-dir", str(node.data_dir), "--out", str(out))
    assert done.returncode == 0, done.stderr
    old = edgekv(
        "restore", str(out), "--data-dir", str(tmp_path / "r0"), "--tombstone-horizon", "0"
    )
    assert old.returncode == 1
    assert "older than the tombstone horizon" in old.stderr
    assert edgekv("restore", str(out), "--data-dir", str(tmp_path / "r")).returncode == 0
    again = edgekv("restore", str(out), "--data-dir", str(tmp_path / "r"))
    assert again.returncode == 1
    assert "exists" in again.stderr
    # Restored but not rejoined: a start past the horizon is refused too.
    late = NodeProcess(tmp_path / "r", ["--tombstone-horizon", "0"])
    with pytest.raises(RuntimeError, match="has not rejoined"):
        late.start()
    copy = start_node("r")
    assert copy.request("GET", "/v1/kv/x/k").body == b"v"


@pytest.mark.slow
def test_restored_node_rejoins_without_resurrecting_deletes(tmp_path: Path) -> None:
    cluster = Cluster(tmp_path, 3, args=["--tombstone-gc-interval", "0.2"], tls=True)
    # The CLI verifies the nodes' certificates against the test CA, as an operator's would.
    tls_env = {**os.environ, "SSL_CERT_FILE": str(tmp_path / "security" / "ca.pem")}
    try:
        a, b, c = cluster.nodes
        for i in range(20):
            cluster.put(0, "t", f"k{i}", f"v{i}".encode())
        wait_converged(cluster.nodes)
        token = cluster.token
        assert token is not None
        out = tmp_path / "a.ekvbackup"
        done = edgekv("backup", "--url", a.url, "--token", token, "--out", str(out), env=tls_env)
        assert done.returncode == 0, done.stderr
        assert a.url.startswith("https://")
        # After the backup: deletes (at another PoP and at a itself), overwrites, new keys.
        for i in range(5):
            cluster.delete(1, "t", f"k{i}")
        cluster.delete(0, "t", "k5")
        cluster.put(2, "t", "k6", b"newer")
        cluster.put(0, "t", "late", b"after the backup")
        wait_converged(cluster.nodes)
        old_id = a.node_id
        a.stop()
        shutil.move(a.data_dir, tmp_path / "lost-disk")
        restored = edgekv("restore", str(out), "--data-dir", str(a.data_dir))
        assert restored.returncode == 0, restored.stderr
        a.start()
        assert a.node_id != old_id
        state = wait_converged(cluster.nodes)
        live = {row[1].decode(): row[2] for row in state if row[0] == "t" and row[2] is not None}
        assert not {f"k{i}" for i in range(6)} & set(live), "a deleted key came back"
        assert live["k6"] == b"newer"
        assert live["late"] == b"after the backup"
        assert live["k10"] == b"v10"
        for node in (b, c):
            answer = node.request("GET", "/v1/kv/t/k0")
            assert answer.status == 404
        # Rejoined every member: the restore mark goes, so later starts are ordinary.
        wait_for(lambda: not (a.data_dir / "edgekv.restored").exists(), what="rejoin")
        # The operator removes the old identity; the restored node, at its URL, stays pulled.
        assert b.request("DELETE", f"/v1/cluster/members/{old_id}").status == 200
        cluster.put(0, "t", "after-removal", b"a")
        cluster.put(1, "t", "after-removal-b", b"b")
        state = wait_converged(cluster.nodes)
        keys = {row[1] for row in state if row[2] is not None}
        assert {b"after-removal", b"after-removal-b"} <= keys
    finally:
        cluster.close()
