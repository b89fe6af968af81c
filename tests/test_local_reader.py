"""LocalReader answers as HTTP GET and list do, straight from the node's SQLite file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from edgekv_client import Client, IncompatibleStore, LocalReader
from testkit.processes import NodeProcess


def test_local_reads_match_http(shared_node: NodeProcess, ns: str) -> None:
    with Client(shared_node.url) as client, LocalReader(shared_node.data_dir) as reader:
        client.put(ns, "plain", b"\x00\xffbytes")
        client.put(ns, "meta", "v", metadata={"plan": "pro"}, ttl=3600)
        client.put(ns, "gone", "v")
        client.delete(ns, "gone")
        client.put(ns, "soon", "v", expiration=int(time.time()) + 1)
        for key in ("plain", "meta", "gone", "absent"):
            assert reader.get(ns, key) == client.get(ns, key), key
        local, remote = reader.get_with_metadata(ns, "meta"), client.get_with_metadata(ns, "meta")
        assert local == remote
        assert [k["name"] for k in reader.list(ns)] == [k["name"] for k in client.list(ns)]
        deadline = time.monotonic() + 5
        while reader.get(ns, "soon") is not None:
            assert time.monotonic() < deadline, "expired entry still readable"
            time.sleep(0.05)
        assert client.get(ns, "soon") is None


def test_local_list_pages_and_prefix(shared_node: NodeProcess, ns: str) -> None:
    with Client(shared_node.url) as client, LocalReader(shared_node.data_dir) as reader:
        client.bulk(ns, [{"op": "put", "key": f"user-{i:04d}", "value": b"x"} for i in range(250)])
        client.put(ns, "other", "x")
        names = [k["name"] for k in reader.list(ns, prefix="user-", page_size=40)]
        assert names == [f"user-{i:04d}" for i in range(250)]
        assert [k["name"] for k in reader.list(ns, prefix="oth")] == ["other"]


def test_reader_refuses_a_database_without_its_view(tmp_path: Path) -> None:
    with pytest.raises(IncompatibleStore, match="no EdgeKV database"):
        LocalReader(tmp_path)
    sqlite3.connect(tmp_path / "edgekv.db").close()
    with pytest.raises(IncompatibleStore, match="kv_v1"):
        LocalReader(tmp_path)
