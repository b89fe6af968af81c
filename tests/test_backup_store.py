"""Backups at the store: the snapshot, its manifest, and a restore's new identity."""

from __future__ import annotations

import io
import sqlite3
import time
from pathlib import Path

import pytest

from edgekv.store.backup import (
    BackupError,
    RestoreRefused,
    check_restored,
    read_manifest,
    restore,
    snapshot,
    write_backup,
)
from edgekv.store.datadir import DataDirError
from edgekv.store.kv import Write
from edgekv.store.restored import read_mark
from edgekv.store.store import Store

DAY_MS = 86_400_000


async def _backup_file(store: Store, directory: Path) -> Path:
    scratch = directory / "snapshot.db"
    manifest = snapshot(store.path, scratch)
    out = directory / "backup"
    with out.open("wb") as handle:
        write_backup(manifest, scratch, handle)
    return out


async def test_restore_is_a_new_node_that_waits_for_every_member(
    store: Store, tmp_path: Path
) -> None:
    await store.write("ns", [Write(b"a", b"1"), Write(b"gone", None)])
    old_member, other_member = 0x1111, 0x2222
    long_ago = int(time.time() * 1000) - 30 * DAY_MS
    await store.upsert_members(
        [
            (store.node_id, "http://self", "self", False, long_ago),
            (old_member, "http://a", "a", False, long_ago),
            (other_member, "http://b", "b", False, long_ago),
        ]
    )
    await store.record_ack(old_member, 5)
    out = await _backup_file(store, tmp_path)
    with out.open("rb") as handle:
        manifest = read_manifest(handle)
    assert manifest.node_id == f"{store.node_id:016x}"
    assert manifest.seq == store.seq

    target = tmp_path / "restored"
    _, new_id = restore(out, target, tombstone_horizon=7 * 86400)
    assert new_id != store.node_id
    conn = sqlite3.connect(target / "edgekv.db")
    (node_id, incarnation) = conn.execute("SELECT node_id, incarnation FROM node_state").fetchone()
    assert node_id == new_id
    assert incarnation != store.identity.incarnation
    members = {row[0] for row in conn.execute("SELECT node FROM members")}
    assert store.node_id not in members  # the backed-up node itself is gone
    acks = dict(conn.execute("SELECT peer, cursor FROM peer_acks"))
    # Every member counts as heard now, having acknowledged nothing: collection waits.
    assert acks == {old_member: 0, other_member: 0}
    heard = [row[0] for row in conn.execute("SELECT updated_ms FROM peer_acks")]
    assert all(ms > time.time() * 1000 - 60_000 for ms in heard)
    assert conn.execute("SELECT count(*) FROM peer_cursors").fetchone() == (0,)
    assert conn.execute("SELECT value FROM kv WHERE key = x'61'").fetchone() == (b"1",)
    conn.close()
    mark = read_mark(target)
    assert mark is not None
    assert mark.backup_seq == manifest.seq


async def test_refusals(store: Store, tmp_path: Path) -> None:
    await store.write("ns", [Write(b"a", b"1")])
    out = await _backup_file(store, tmp_path)
    with out.open("rb") as handle:
        created = read_manifest(handle).created_ms
    with pytest.raises(RestoreRefused, match="older than the tombstone horizon"):
        restore(out, tmp_path / "late", 3600, now_ms=created + 3_600_000)
    assert not (tmp_path / "late" / "edgekv.db").exists()
    truncated = tmp_path / "truncated"
    truncated.write_bytes(out.read_bytes()[:-10])
    with pytest.raises(BackupError, match="manifest says"):
        restore(truncated, tmp_path / "t", 3600)
    with pytest.raises(BackupError, match="not an EdgeKV backup"):
        read_manifest(io.BytesIO(b"SQLite format 3\x00"))
    restore(out, tmp_path / "r", 3600)
    check_restored(tmp_path / "r", 3600, now_ms=created + 1000)
    with pytest.raises(DataDirError, match="has not rejoined"):
        check_restored(tmp_path / "r", 3600, now_ms=created + 3_600_000)
