"""The SQLite store: LWW rows, the change log, group commit, reads beside writes."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgekv.store.kv import Write, prefix_upper_bound
from edgekv.store.schema import SCHEMA_VERSION, SchemaError
from edgekv.store.store import Store
from edgekv.store.writer import Txn, WriterClosed


def change_log(store: Store) -> list[tuple[int, bytes]]:
    with sqlite3.connect(store.path) as conn:
        return list(conn.execute("SELECT seq, key FROM kv ORDER BY seq"))


async def test_overwritten_row_moves_to_a_newer_seq(store: Store) -> None:
    first = await store.write("ns", [Write(b"a", b"1")])
    await store.write("ns", [Write(b"b", b"1")])
    again = await store.write("ns", [Write(b"a", b"2")])
    assert (first.seq, again.seq) == (1, 3)
    assert change_log(store) == [(2, b"b"), (3, b"a")]
    assert store.seq == 3


async def test_delete_leaves_a_tombstone_that_reads_as_absent(store: Store) -> None:
    await store.write("ns", [Write(b"a", b"1")])
    deleted = await store.write("ns", [Write(b"a", None)])
    assert store.get("ns", b"a") is None
    assert store.list_keys("ns") == []
    with sqlite3.connect(store.path) as conn:
        row = conn.execute("SELECT value, hlc, seq FROM kv WHERE key = x'61'").fetchone()
    assert row == (None, deleted.hlc, deleted.seq)


async def test_expired_entry_reads_as_absent_at_its_expiration(store: Store) -> None:
    await store.write("ns", [Write(b"a", b"1", expiration=1000)])
    assert store.get("ns", b"a", now=999.9) is not None
    assert store.get("ns", b"a", now=1000) is None
    assert [k.key for k in store.list_keys("ns", now=999)] == [b"a"]
    assert store.list_keys("ns", now=1000) == []


async def test_concurrent_writes_share_commits(store: Store) -> None:
    commits_before = store.writer.commits
    results = await asyncio.gather(
        *(store.write("ns", [Write(f"k{i}".encode(), b"v")]) for i in range(500))
    )
    assert sorted(r.seq for r in results) == list(range(1, 501))
    assert store.writer.commits - commits_before < 500
    assert len(store.list_keys("ns", limit=1000)) == 500


async def test_a_failing_op_does_not_affect_the_others_in_its_commit(store: Store) -> None:
    def failing(txn: Txn) -> None:
        txn.conn.execute(
            "INSERT INTO kv (seq, ns, key, hlc, node) VALUES (?, 'ns', x'7a', 1, 1)",
            (txn.take_seq(),),
        )
        raise RuntimeError("boom")

    good = store.write("ns", [Write(b"a", b"1")])
    bad = store.writer.submit(failing)
    also_good = store.write("ns", [Write(b"b", b"1")])
    results = await asyncio.gather(good, bad, also_good, return_exceptions=True)
    assert isinstance(results[1], RuntimeError)
    assert store.get("ns", b"z") is None
    assert [k.key for k in store.list_keys("ns")] == [b"a", b"b"]
    assert [seq for seq, _ in change_log(store)] == [1, 2], "no seq gap from the failed op"


async def test_reads_do_not_wait_for_an_open_write_transaction(store: Store) -> None:
    await store.write("ns", [Write(b"a", b"1")])
    blocker = sqlite3.connect(store.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    blocker.execute("UPDATE kv SET value = x'00'")
    try:
        entry = store.get("ns", b"a")
        assert entry is not None
        assert entry.value == b"1"
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()


async def test_listing_is_in_byte_order_with_prefix_and_resume(store: Store) -> None:
    keys = [b"a", b"ab", b"ab\xff", b"abc", b"b", "é".encode(), b"\xf0\x9d\x84\x9e"]
    await store.write("ns", [Write(k, b"") for k in reversed(keys)])
    assert [k.key for k in store.list_keys("ns")] == sorted(keys)
    assert [k.key for k in store.list_keys("ns", prefix=b"ab")] == [b"ab", b"abc", b"ab\xff"]
    assert [k.key for k in store.list_keys("ns", prefix=b"ab", after=b"ab")] == [
        b"abc",
        b"ab\xff",
    ]
    assert [k.key for k in store.list_keys("ns", after=b"ab\xff", limit=2)] == [
        b"b",
        "é".encode(),
    ]


async def test_value_size_matches_what_get_reads(store: Store) -> None:
    """Sized without reading the value: from the cache or SQLite's length(); None when
    absent, deleted or expired, as get() would answer."""
    big, small = b"b" * (200 * 1024), b"s" * 10  # over and under the cache's value limit
    await store.write("ns", [Write(b"big", big), Write(b"small", small)])
    await store.write("ns", [Write(b"gone", b"x"), Write(b"old", b"y", expiration=1000)])
    await store.write("ns", [Write(b"gone", None)])
    store.get("ns", b"small")  # cached from here on
    sizes = {key: store.value_size("ns", key, now=999) for key in (b"big", b"small", b"gone")}
    assert sizes == {b"big": len(big), b"small": len(small), b"gone": None}
    assert store.value_size("ns", b"old", now=999) == 1
    assert store.value_size("ns", b"old", now=1000) is None
    assert store.value_size("ns", b"never") is None


def test_prefix_upper_bound() -> None:
    assert prefix_upper_bound(b"ab") == b"ac"
    assert prefix_upper_bound(b"a\xff") == b"b"
    assert prefix_upper_bound(b"") > b"\xff" * 600


async def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    store = Store(tmp_path)
    store.close()
    with pytest.raises(WriterClosed):
        store.write("ns", [Write(b"a", b"1")])


async def test_close_commits_queued_writes(tmp_path: Path) -> None:
    store = Store(tmp_path)
    pending = [store.write("ns", [Write(f"k{i}".encode(), b"v")]) for i in range(100)]
    store.close()  # before the queued writes had a turn of the loop
    await asyncio.gather(*pending)
    reopened = Store(tmp_path)
    try:
        assert len(reopened.list_keys("ns")) == 100
        assert reopened.seq == 100
    finally:
        reopened.close()


def test_identity_is_made_once_and_kept(tmp_path: Path) -> None:
    first = Store(tmp_path)
    identity = first.identity
    first.close()
    second = Store(tmp_path)
    try:
        assert second.identity == identity
        assert 0 < identity.node_id < 2**63
    finally:
        second.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    Store(tmp_path).close()
    with sqlite3.connect(tmp_path / "edgekv.db") as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaError, match="newer"):
        Store(tmp_path)


def test_database_runs_in_wal_mode(store: Store) -> None:
    with sqlite3.connect(store.path) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def crash_after_a_write(data_dir: Path, synchronous: str) -> None:
    """Open a store in a child process, write, and die without closing it."""
    script = (
        "import asyncio, os, sys\n"
        "from edgekv.store.kv import Write\n"
        "from edgekv.store.store import Store\n"
        "async def main():\n"
        "    store = Store(sys.argv[1], synchronous=sys.argv[2])\n"
        "    await store.write('ns', [Write(b'k', b'v')])\n"
        "    os._exit(0)\n"
        "asyncio.run(main())\n"
    )
    subprocess.run([sys.executable, "-c", script, str(data_dir), synchronous], check=True)


def test_unclean_stop_under_normal_sync_starts_a_new_incarnation(tmp_path: Path) -> None:
    # A log that may have lost its last commits must not be resumed by peers.
    first = Store(tmp_path, synchronous="normal")
    identity = first.identity
    first.close()
    crash_after_a_write(tmp_path, "normal")
    reopened = Store(tmp_path, synchronous="normal")
    try:
        assert reopened.identity.node_id == identity.node_id
        assert reopened.identity.incarnation != identity.incarnation
        assert reopened.clock.last >= (time.time_ns() // 1_000_000 + 500) << 16
    finally:
        reopened.close()
    again = Store(tmp_path, synchronous="normal")
    try:
        assert again.identity == reopened.identity, "a clean stop keeps the incarnation"
    finally:
        again.close()


def test_unclean_stop_under_full_sync_keeps_the_incarnation(tmp_path: Path) -> None:
    first = Store(tmp_path)
    identity = first.identity
    first.close()
    crash_after_a_write(tmp_path, "full")
    reopened = Store(tmp_path)
    try:
        assert reopened.identity == identity, "full sync loses no commit"
        assert reopened.get("ns", b"k") is not None
    finally:
        reopened.close()


async def test_reads_never_see_older_than_an_acknowledged_write(store: Store) -> None:
    """The read cache is invalidated before a write is acknowledged."""
    keys = [f"k{i}".encode() for i in range(20)]
    await store.write("ns", [Write(k, b"0") for k in keys])
    for k in keys:
        assert store.get("ns", k) is not None  # fill the cache

    async def writer(k: bytes) -> None:
        for version in range(1, 30):
            await store.write("ns", [Write(k, str(version).encode())])
            entry = store.get("ns", k)
            assert entry is not None
            assert int(entry.value) >= version

    await asyncio.gather(*(writer(k) for k in keys))
    assert all(store.get("ns", k).value == b"29" for k in keys)  # type: ignore[union-attr]


async def test_cache_follows_deletes_and_expiry(store: Store) -> None:
    await store.write("ns", [Write(b"a", b"1", expiration=1000)])
    assert store.get("ns", b"a", now=999) is not None
    assert store.get("ns", b"a", now=1000) is None, "expiry is checked on cached entries"
    await store.write("ns", [Write(b"a", None)])
    assert store.get("ns", b"a", now=0) is None
    await store.write("ns", [Write(b"a", b"2")])
    assert store.get("ns", b"a").value == b"2"  # type: ignore[union-attr]


def test_a_fill_that_raced_a_commit_is_refused(store: Store) -> None:
    generation = store.cache.generation
    store.cache.invalidate([("ns", b"k")])  # a commit lands between read and fill
    store.cache.fill(("ns", b"k"), None, generation)
    assert store.cache.lookup(("ns", b"k")) is not None  # MISS, not the stale None
    assert len(store.cache) == 0
