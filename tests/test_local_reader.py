"""LocalReader answers as HTTP GET and list do, straight from the node's SQLite file."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from edgekv.store.schema import migrate
from edgekv_client import Client, IncompatibleStore, LocalReader
from testkit.processes import NodeProcess
from testkit.waiting import wait_for


def test_local_reads_match_http(shared_node: NodeProcess, ns: str) -> None:
    with Client(shared_node.url) as client, LocalReader(shared_node.data_dir) as reader:
        client.put(ns, "plain", b"\x00\xffbytes")
        client.put(ns, "ünï/cödé ✓", b"utf-8 key")
        client.put(ns, "meta", "v", metadata={"plan": "pro"}, ttl=3600)
        client.put(ns, "gone", "v")
        client.delete(ns, "gone")
        client.put(ns, "soon", "v", expiration=int(time.time()) + 1)
        for key in ("plain", "ünï/cödé ✓", "meta", "gone", "absent"):
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


def test_cached_reader_sees_every_write_of_the_node(shared_node: NodeProcess, ns: str) -> None:
    with Client(shared_node.url) as client, LocalReader(shared_node.data_dir, 100) as reader:
        assert reader._header is not None, "the node's database is in WAL mode"
        assert reader.get(ns, "k") is None  # absent: cached as absent
        client.put(ns, "k", b"one")
        assert reader.get(ns, "k") == b"one"
        assert reader.get(ns, "k") == b"one"  # from the cache
        client.put(ns, "k", b"two")
        assert reader.get(ns, "k") == b"two"
        client.delete(ns, "k")
        assert reader.get(ns, "k") is None
        client.put(ns, "k", b"three", ttl=3600)
        assert reader.get(ns, "k") == b"three"
        # More keys than the cache holds: the oldest go, every answer stays right.
        client.bulk(ns, [{"op": "put", "key": f"many-{i}", "value": str(i)} for i in range(150)])
        for _ in range(2):
            assert [reader.get(ns, f"many-{i}") for i in range(150)] == [
                str(i).encode() for i in range(150)
            ]
        assert len(reader._cache[1]) <= 100


def _database(directory: Path, journal_mode: str) -> sqlite3.Connection:
    """A node's schema with no node: nothing commits unless the test does."""
    conn = sqlite3.connect(directory / "edgekv.db", isolation_level=None)
    conn.execute(f"PRAGMA journal_mode = {journal_mode}")
    migrate(conn)
    return conn


def _put(conn: sqlite3.Connection, key: str, value: bytes | None, expiration: int | None) -> None:
    conn.execute(
        "INSERT INTO kv (seq, ns, key, value, expiration, hlc, node)"
        " VALUES ((SELECT coalesce(max(seq), 0) + 1 FROM kv), 'n', ?, ?, ?, 1, 1)"
        " ON CONFLICT (ns, key) DO UPDATE SET seq = excluded.seq, value = excluded.value,"
        " expiration = excluded.expiration",
        (key.encode(), value, expiration),
    )


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_cached_entry_is_not_served_past_its_expiration(tmp_path: Path, journal_mode: str) -> None:
    conn = _database(tmp_path, journal_mode)
    expiration = int(time.time()) + 1
    _put(conn, "soon", b"v", expiration)
    with LocalReader(tmp_path, cache_size=10) as reader:
        assert (reader._header is not None) == (journal_mode == "wal")
        assert reader.get("n", "soon") == b"v"
        marker = reader._cache[0]
        wait_for(lambda: time.time() >= expiration, what="the expiration to pass")
        assert reader.get("n", "soon") is None
        assert reader._cache[0] == marker, "nothing committed: the answer came from the cache"
    conn.close()


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_cached_reader_sees_commits_of_another_connection(
    tmp_path: Path, journal_mode: str
) -> None:
    conn = _database(tmp_path, journal_mode)
    _put(conn, "k", b"one", None)
    with LocalReader(tmp_path, cache_size=10) as reader:
        assert reader.get("n", "k") == b"one"
        _put(conn, "k", b"two", None)
        assert reader.get("n", "k") == b"two"
        _put(conn, "k", None, None)  # a tombstone
        assert reader.get("n", "k") is None
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # the log restarts: new salts
        _put(conn, "k", b"three", None)
        assert reader.get("n", "k") == b"three"
    conn.close()


def test_reader_refuses_a_negative_cache_size(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="cache_size"):
        LocalReader(tmp_path, cache_size=-1)
