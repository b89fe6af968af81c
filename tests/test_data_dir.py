"""The data directory at start-up and under storage faults, with real node processes.

One node per directory (the lock), an emptied database, a damaged page, a
full disk (a real tmpfs filled up: the tests run as root, as CI does).
"""

from __future__ import annotations

import base64
import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgekv_client import Client, LocalReader, StorageFull
from testkit.processes import NodeProcess
from testkit.responses import assert_error
from testkit.waiting import wait_for

PAGE = 4096
FILLER = base64.b64encode(b"x" * 1500).decode()


def refused_start(data_dir: Path, args: list[str] | None = None) -> str:
    """Start a node that must refuse: return its output once it exited non-zero."""
    node = NodeProcess(data_dir, args or [])
    try:
        node.start()
    except RuntimeError:
        pass
    else:
        node.kill()
        raise AssertionError("the node started; it should have refused")
    assert node.proc is not None
    assert node.proc.wait(10) != 0
    return "".join(node.output)


def test_second_node_on_the_same_data_directory_refuses_to_start(
    start_node: Callable[..., NodeProcess],
) -> None:
    first = start_node()
    assert first.request("PUT", "/v1/kv/ns/k", body=b"v").status == 200
    output = refused_start(first.data_dir)
    assert "in use by another EdgeKV node" in output, output
    assert f"pid {first.proc.pid}" in output, output  # type: ignore[union-attr]
    assert "Traceback" not in output
    # The first node is untouched, and read-only tools keep working beside it.
    assert first.request("GET", "/v1/kv/ns/k").body == b"v"
    with LocalReader(first.data_dir) as reader:
        assert reader.get("ns", "k") == b"v"
    # The lock dies with its process, even a SIGKILLed one.
    first.kill()
    first.start()
    assert first.request("GET", "/v1/kv/ns/k").body == b"v"


def test_empty_database_refuses_to_start_unless_a_new_node_is_asked_for(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    (data_dir / "edgekv.db").write_bytes(b"")
    output = refused_start(data_dir)
    assert f"{data_dir / 'edgekv.db'} is empty" in output, output
    assert "--allow-new-node true" in output
    assert (data_dir / "edgekv.db").stat().st_size == 0, "refused before touching it"
    node = NodeProcess(data_dir, ["--allow-new-node", "true"]).start()
    try:
        assert node.request("PUT", "/v1/kv/ns/k", body=b"v").status == 200
    finally:
        node.stop()
    # Once it holds a node, the flag is not needed again.
    node = NodeProcess(data_dir).start()
    try:
        assert node.request("GET", "/v1/kv/ns/k").body == b"v"
    finally:
        node.stop()


def stopped_node_with_data(data_dir: Path) -> None:
    """Start a node, write keys spread over many pages, stop it cleanly (WAL checkpointed)."""
    node = NodeProcess(data_dir).start()
    try:
        for i in range(100):
            bulk = [{"op": "put", "key": f"k{i:03d}-{j}", "value": FILLER} for j in range(5)]
            answer = node.request("POST", "/v1/kv/ns/_bulk", json_body={"operations": bulk})
            assert answer.status == 200, answer.body
    finally:
        assert node.stop() == 0


def overwrite_page(db: Path, page: int) -> None:
    with db.open("r+b") as handle:
        handle.seek(page * PAGE)
        handle.write(os.urandom(PAGE))


def test_damaged_page_makes_the_node_report_unhealthy(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stopped_node_with_data(data_dir)
    db = data_dir / "edgekv.db"
    overwrite_page(db, db.stat().st_size // PAGE // 2)
    node = NodeProcess(data_dir).start()
    try:
        # The background check finds the damage and the node stops calling itself healthy.
        wait_for(lambda: node.request("GET", "/healthz").status != 200, 20, "unhealthy")
        health = node.request("GET", "/healthz")
        assert_error(health, "storage_corrupt")
        assert str(db) in health.json()["error"]["message"]
        assert any("damaged" in line and str(db) in line for line in node.output)
        # Reading the damaged keys answers the same code, never a bare 500.
        for i in range(0, 100, 7):
            answer = node.request("GET", f"/v1/kv/ns?prefix=k{i:03d}")
            if answer.status != 200:
                assert_error(answer, "storage_corrupt")
    finally:
        node.stop()


def test_damaged_header_refuses_to_start_naming_the_file(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    stopped_node_with_data(data_dir)
    overwrite_page(data_dir / "edgekv.db", 0)
    output = refused_start(data_dir)
    assert f"the database file {data_dir / 'edgekv.db'} is damaged" in output, output
    assert "Traceback" not in output


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 8 MiB filesystem (tmpfs), unmounted afterwards."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount_point)], check=True)
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=True)


def test_full_disk_refuses_writes_with_507_keeps_reads_and_recovers(small_disk: Path) -> None:
    # Ballast to delete later: the way an operator frees space.
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (2 * 1024 * 1024))
    node = NodeProcess(small_disk / "data").start()
    try:
        acknowledged: dict[str, bytes] = {}
        refused = None
        for i in range(200):
            value = os.urandom(64 * 1024)
            answer = node.request("PUT", f"/v1/kv/ns/k{i}", body=value)
            if answer.status != 200:
                refused = answer
                break
            acknowledged[f"k{i}"] = value
        assert refused is not None, "the disk never filled"
        assert_error(refused, "storage_full")
        assert len(acknowledged) > 10
        # Every kind of write is refused the same way while the disk is full.
        assert_error(
            node.request("PUT", "/v1/docs/c/d", json_body={"a": "x" * 9000}), "storage_full"
        )
        bulk = [{"op": "put", "key": f"b{j}", "value": FILLER * 6} for j in range(20)]
        answer = node.request("POST", "/v1/kv/ns/_bulk", json_body={"operations": bulk})
        assert_error(answer, "storage_full")
        with Client(node.url) as client, pytest.raises(StorageFull):
            client.put("ns", "client", os.urandom(64 * 1024))
        # Reads go on.
        for key, value in acknowledged.items():
            assert node.request("GET", f"/v1/kv/ns/{key}").body == value
        assert node.request("GET", "/healthz").status == 200
        # Freeing space is all it takes: no restart.
        ballast.unlink()
        wait_for(
            lambda: node.request("PUT", "/v1/kv/ns/after", body=b"back").status == 200,
            10,
            "writes to succeed again",
        )
        acknowledged["after"] = b"back"
    finally:
        node.stop()
    node.start()
    try:
        for key, value in acknowledged.items():
            assert node.request("GET", f"/v1/kv/ns/{key}").body == value, key
    finally:
        node.stop()
